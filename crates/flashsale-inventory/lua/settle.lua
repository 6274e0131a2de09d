-- settle: commit (paid) or release (expired, cancelled, order not written) one reservation,
-- exactly once however often and from however many instances it is called.
--
-- KEYS[1] ledger hash   KEYS[2] holdings hash   KEYS[3] open reservations hash
-- KEYS[4] deadlines zset   KEYS[5] settled hash (id -> 'committed' | 'released')
-- KEYS[6] used admission tickets (set)
-- ARGV[1] reservation id   ARGV[2] 'commit' | 'release' | 'abort'
--
-- Returns {'done', units} when this call settled it; {'already', how} when it was settled before
-- ('committed' or 'released': a commit after a release is refused this way, the units may be
-- someone else's by now); {'unknown'} for an id never reserved. Commit moves the units
-- reserved -> sold (the buyer keeps them in their holdings); release moves them back to available
-- and out of the buyer's holdings. Abort is a release that also gives the admission ticket back:
-- the order could not be written (the database failed), so the buyer may retry with the same
-- token while it is valid. available + reserved + sold = total throughout.

if #KEYS ~= 6 or #ARGV ~= 2 then
  return redis.error_reply('ERR settle expects 6 keys and 2 arguments')
end
local ledger, holdings, reservations, deadlines, settled, used = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local id, how = ARGV[1], ARGV[2]
if how ~= 'commit' and how ~= 'release' and how ~= 'abort' then
  return redis.error_reply('ERR settle: unknown settlement ' .. how)
end
local open = redis.call('HGET', reservations, id)
if not open then
  local before = redis.call('HGET', settled, id)
  if before then return {'already', before} end
  return {'unknown'}
end
local qty, ticket, user = string.match(open, '^(%d+) %d+ (%d+) (.*)$')
qty = tonumber(qty)
redis.call('HINCRBY', ledger, 'reserved', -qty)
if how == 'commit' then
  redis.call('HINCRBY', ledger, 'sold', qty)
  redis.call('HSET', settled, id, 'committed')
else
  redis.call('HINCRBY', ledger, 'available', qty)
  redis.call('HINCRBY', holdings, user, -qty)
  redis.call('HSET', settled, id, 'released')
  if how == 'abort' then redis.call('SREM', used, ticket) end
end
redis.call('HDEL', reservations, id)
redis.call('ZREM', deadlines, id)
return {'done', qty}
