-- settle: commit (paid) or release (expired, cancelled, order not written) one reservation,
-- exactly once however often and from however many instances it is called.
--
-- KEYS[1] ledger hash   KEYS[2] holdings hash   KEYS[3] open reservations hash
-- KEYS[4] deadlines zset   KEYS[5] settled hash (id -> 'committed' | 'released')
-- KEYS[6] used admission tickets (set)   KEYS[7] queue step info hash   KEYS[8] queue ticker hash
-- ARGV[1] reservation id   ARGV[2] 'commit' | 'release' | 'abort'
-- ARGV[3] the admission step the reservation was made in (abort only; 0 otherwise)
--
-- Returns {'done', units} when this call settled it; {'already', how} when it was settled before
-- ('committed' or 'released': a commit after a release is refused this way, the units may be
-- someone else's by now); {'unknown'} for an id never reserved; {'missing'} when the batch has
-- no ledger (being rebuilt: nothing written, the caller tries again later). Commit moves the units
-- reserved -> sold (the buyer keeps them in their holdings); release moves them back to available
-- (a priority code's to the codes' allotment first, see the prelude's units_back) and out of the
-- buyer's holdings. Abort is a release that also gives the admission ticket back:
-- the order could not be written (the database failed), so the buyer may retry with the same
-- token while it is valid. An abort also undoes what the reservation told the admission step
-- (`:r` + 1, the ticker's `inflight` - 1), if the step is still running: the buyer is in flight
-- again, and a retry with the same token must count once, not twice (a retry counted twice took
-- `inflight` below zero, which stopped admission for every sale). available + allotted +
-- reserved + sold = total throughout.

if #KEYS ~= 8 or #ARGV ~= 3 then
  return redis.error_reply('ERR settle expects 8 keys and 3 arguments')
end
local ledger, holdings, reservations, deadlines, settled, used = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local step_info, ticker = KEYS[7], KEYS[8]
local id, how, step = ARGV[1], ARGV[2], ARGV[3]
if how ~= 'commit' and how ~= 'release' and how ~= 'abort' then
  return redis.error_reply('ERR settle: unknown settlement ' .. how)
end
-- No ledger: the batch was fenced or lost and is being rebuilt from PostgreSQL, whose orders
-- already say how this reservation ended. Writing here would leave a partial ledger behind.
if redis.call('EXISTS', ledger) == 0 then return {'missing'} end
local open = redis.call('HGET', reservations, id)
if not open then
  local before = redis.call('HGET', settled, id)
  if before then return {'already', before} end
  return {'unknown'}
end
local qty, _, ticket, user = read_reservation(open)
if how == 'commit' then
  redis.call('HINCRBY', ledger, 'reserved', -qty)
  redis.call('HINCRBY', ledger, 'sold', qty)
  redis.call('HSET', settled, id, 'committed')
else
  units_back(ledger, holdings, user, qty, ticket)
  redis.call('HSET', settled, id, 'released')
  if how == 'abort' then
    redis.call('SREM', used, spent_ticket(ticket, user))
    if redis.call('HEXISTS', step_info, step .. ':n') == 1
        and tonumber(redis.call('HGET', step_info, step .. ':r') or '0') > 0 then
      redis.call('HINCRBY', step_info, step .. ':r', -1)
      redis.call('HINCRBY', ticker, 'inflight', 1)
    end
  end
end
redis.call('HDEL', reservations, id)
redis.call('ZREM', deadlines, id)
return {'done', qty}
