-- rebuild_batch: recreate a batch's hot state from PostgreSQL's orders after Redis lost it
-- (a restart without persistence, a failover to a stale replica, a flushed database).
--
-- KEYS[1] ledger hash   KEYS[2] holdings hash   KEYS[3] open reservations hash
-- KEYS[4] deadlines zset   KEYS[5] settled hash   KEYS[6] used admission tickets (set)
-- KEYS[7] queue tail counter   KEYS[8] queue serving counter
-- KEYS[9] unconfirmed reservations (zset)   KEYS[10] their info (hash): emptied, every order
--         read from PostgreSQL is confirmed
-- ARGV[1] total   ARGV[2] per-user limit   ARGV[3] opening (Unix ms)   ARGV[4] end (Unix ms, 0 = none)
-- ARGV[5] paused (0/1)   ARGV[6] closed (0/1)
-- ARGV[7] epoch: the batch's new epoch, bumped in PostgreSQL by the caller before it read the
--         orders; reservations report it, and an order is written only with the current epoch,
--         so a reservation made in the lost state can never become an order
-- ARGV[8] the largest reservation id any order uses (new ids continue after it)
-- ARGV[9] n: the number of open reservations (pending orders) that follow
-- then n groups of 5: reservation id, units, deadline (Unix ms), ticket, user
-- then groups of 5 for settled reservations: reservation id, units, 'committed' | 'released',
--      ticket, user
--
-- Returns {1, available, reserved, sold} when rebuilt; {0} when the ledger exists (another
-- instance rebuilt it first, or it was never lost): nothing is written then. Before writing,
-- whatever is left of the old state under these keys is deleted; the ledger is written last, so
-- reservations keep answering 'missing' (503 rebuilding) until the whole state is back.
-- Arguments are checked before any write: all or nothing.

if #KEYS ~= 10 or #ARGV < 9 then
  return redis.error_reply('ERR rebuild_batch expects 10 keys and at least 9 arguments')
end
local ledger, holdings, reservations, deadlines, settled, used, tail, serving =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local total, n = tonumber(ARGV[1]), tonumber(ARGV[9])
if not total or total < 1 or not n or n < 0 or (#ARGV - 9) % 5 ~= 0 or 9 + 5 * n > #ARGV then
  return redis.error_reply('ERR rebuild_batch: bad total or reservation list')
end
if redis.call('EXISTS', ledger) == 1 then return {0} end

local reserved, sold, max_ticket = 0, 0, 0
local held = {}
for i = 10, #ARGV, 5 do
  local qty, ticket, user = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 3]), ARGV[i + 4]
  if not qty or qty < 1 or not ticket then
    return redis.error_reply('ERR rebuild_batch: bad reservation at argument ' .. i)
  end
  local open = i < 10 + 5 * n
  if open then
    reserved = reserved + qty
    held[user] = (held[user] or 0) + qty
  elseif ARGV[i + 2] == 'committed' then
    sold = sold + qty
    held[user] = (held[user] or 0) + qty
  elseif ARGV[i + 2] ~= 'released' then
    return redis.error_reply('ERR rebuild_batch: bad settlement at argument ' .. i)
  end
  if ticket > max_ticket then max_ticket = ticket end
end
local available = total - reserved - sold
if available < 0 then
  return redis.error_reply('ERR rebuild_batch: orders hold more than the stock')
end

redis.call('DEL', holdings, reservations, deadlines, settled, used, KEYS[9], KEYS[10])
for i = 10, #ARGV, 5 do
  local id, qty, third, ticket, user = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if i < 10 + 5 * n then
    redis.call('HSET', reservations, id, qty .. ' ' .. third .. ' ' .. ticket .. ' ' .. user)
    redis.call('ZADD', deadlines, third, id)
  else
    redis.call('HSET', settled, id, third)
  end
  redis.call('SADD', used, ticket)
end
for user, units in pairs(held) do
  redis.call('HSET', holdings, user, units)
end
-- Tickets already admitted and used stay used; the queue continues after them.
for _, counter in ipairs({tail, serving}) do
  if tonumber(redis.call('GET', counter) or '0') < max_ticket then
    redis.call('SET', counter, max_ticket)
  end
end
redis.call('HSET', ledger,
  'total', total, 'available', available, 'reserved', reserved, 'sold', sold,
  'per_user_limit', ARGV[2], 'opens_at_ms', ARGV[3], 'closes_at_ms', ARGV[4],
  'paused', ARGV[5], 'closed', ARGV[6], 'epoch', ARGV[7], 'seq', ARGV[8])
return {1, available, reserved, sold}
