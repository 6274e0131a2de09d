-- rebuild_batch: recreate a batch's hot state from PostgreSQL's orders after Redis lost it
-- (a restart without persistence, a failover to a stale replica, a flushed database), or after
-- the batch was fenced because its state was wrong.
--
-- KEYS[1] ledger hash   KEYS[2] holdings hash   KEYS[3] open reservations hash
-- KEYS[4] deadlines zset   KEYS[5] settled hash   KEYS[6] used admission tickets (set)
-- KEYS[7] queue tail counter   KEYS[8] queue serving counter
-- KEYS[9] unconfirmed reservations (zset)   KEYS[10] their info (hash): emptied, every order
--         read from PostgreSQL is confirmed
-- KEYS[11] queue steps (zset by expiry)   KEYS[12] steps by ticket (zset)   KEYS[13] step info
-- KEYS[14] queue ticker hash   KEYS[15] pre-queue (zset)   KEYS[16] sealed cohort size
-- ARGV[1] total   ARGV[2] per-user limit   ARGV[3] opening (Unix ms)   ARGV[4] end (Unix ms, 0 = none)
-- ARGV[5] paused (0/1)   ARGV[6] closed (0/1)
-- ARGV[7] epoch: the batch's new epoch, bumped in PostgreSQL by the caller before it read the
--         orders; reservations report it, and an order is written only with the current epoch,
--         so a reservation made in the lost state can never become an order
-- ARGV[8] units held back for priority codes   ARGV[9] until when, Unix ms (see the prelude):
--         the allotment's free part is max(0, allotment - units codes hold), as far as the stock
--         left goes, and nothing once its time is up
-- ARGV[10] the largest reservation id any order uses (new ids continue after it)
-- The queue's marks in PostgreSQL (written every second; see batch_queue_marks):
-- ARGV[11] tail high-water mark   ARGV[12] margin: tickets that may have been handed out since
-- ARGV[13] serving high-water mark   ARGV[14] first ticket whose admission window may still run
--          (0: none)   ARGV[15] admission window, ms
-- ARGV[16] n: the number of open reservations (pending orders) that follow
-- then n groups of 5: reservation id, units, deadline (Unix ms), ticket, user
-- then groups of 5 for settled reservations: reservation id, units, 'committed' | 'released',
--      ticket, user
--
-- The queue: when its tail is behind the mark (Redis lost or went back on it), new tickets
-- continue after the mark plus the margin, so no new joiner ever gets a number a waiting buyer
-- holds; serving goes back to where it was; one admission step opens again for the tickets whose
-- window may have been running (those that already reserved count as done), so a buyer admitted
-- just before the loss keeps the turn. A queue at or past the mark is left as it is. Priority
-- codes' tickets (see the prelude) are no place in the line: they stay spent, and count for
-- nothing in the queue's counters.
--
-- Returns {'rebuilt', available, reserved, sold} (available: to everyone, the allotment apart) when rebuilt; {'exists'} when the ledger exists (another
-- instance rebuilt it first, or it was never lost): nothing is written then. Before writing,
-- whatever is left of the old state under these keys is deleted; the ledger is written last, so
-- reservations keep answering 'missing' (503 rebuilding) until the whole state is back.
-- Arguments are checked before any write: all or nothing.

local FIRST = 17
if #KEYS ~= 16 or #ARGV < FIRST - 1 then
  return redis.error_reply('ERR rebuild_batch expects 16 keys and at least 16 arguments')
end
local ledger, holdings, reservations, deadlines, settled, used, tail, serving =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local steps, by_ticket, step_info, ticker, pre, sealed = KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15], KEYS[16]
local total, n = tonumber(ARGV[1]), tonumber(ARGV[FIRST - 1])
local allotment, allotment_until = tonumber(ARGV[8]), tonumber(ARGV[9])
local tail_hwm, margin, serving_hwm = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local window_from, window_ms = tonumber(ARGV[14]), tonumber(ARGV[15])
if not total or total < 1 or not n or n < 0 or (#ARGV - FIRST + 1) % 5 ~= 0 or FIRST - 1 + 5 * n > #ARGV then
  return redis.error_reply('ERR rebuild_batch: bad total or reservation list')
end
if not tail_hwm or not margin or not serving_hwm or not window_from or not window_ms or window_ms < 1 then
  return redis.error_reply('ERR rebuild_batch: bad queue marks')
end
if not allotment or allotment < 0 or not allotment_until then
  return redis.error_reply('ERR rebuild_batch: bad allotment')
end
if redis.call('EXISTS', ledger) == 1 then return {'exists'} end

local reserved, sold, max_ticket, code_units = 0, 0, 0, 0
local held = {}
for i = FIRST, #ARGV, 5 do
  local qty, ticket, user = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 3]), ARGV[i + 4]
  if not qty or qty < 1 or not ticket then
    return redis.error_reply('ERR rebuild_batch: bad reservation at argument ' .. i)
  end
  local open = i < FIRST + 5 * n
  local code = is_priority_ticket(ticket)
  if open or ARGV[i + 2] == 'committed' then
    if open then reserved = reserved + qty else sold = sold + qty end
    held[user] = (held[user] or 0) + qty
    if code then code_units = code_units + qty end
  elseif ARGV[i + 2] ~= 'released' then
    return redis.error_reply('ERR rebuild_batch: bad settlement at argument ' .. i)
  end
  if not code and ticket > max_ticket then max_ticket = ticket end
end
local free = total - reserved - sold
if free < 0 then
  return redis.error_reply('ERR rebuild_batch: orders hold more than the stock')
end

redis.call('DEL', holdings, reservations, deadlines, settled, used, KEYS[9], KEYS[10])
-- Tickets already used stay used, each bound to its buyer (`ticket:user`).
local used_from_window = 0
for i = FIRST, #ARGV, 5 do
  local id, qty, third, ticket, user = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if i < FIRST + 5 * n then
    redis.call('HSET', reservations, id, reservation_record(qty, third, ticket, user))
    redis.call('ZADD', deadlines, third, id)
  else
    redis.call('HSET', settled, id, third)
  end
  if redis.call('SADD', used, spent_ticket(ticket, user)) == 1 and window_from > 0 and tonumber(ticket) >= window_from
      and not is_priority_ticket(ticket) then
    used_from_window = used_from_window + 1
  end
end
for user, units in pairs(held) do
  redis.call('HSET', holdings, user, units)
end

local now = now_ms()
local tail_now = tonumber(redis.call('GET', tail) or '0')
if tail_now < tail_hwm then
  -- The queue is older than its last mark: lost, or gone back to an older copy.
  redis.call('SET', tail, math.max(tail_hwm + margin, max_ticket))
  local s = math.max(tonumber(redis.call('GET', serving) or '0'), serving_hwm, max_ticket)
  redis.call('SET', serving, s)
  -- After the opening the cohort was sealed (its tickets are inside the mark): never seal again.
  if now >= tonumber(ARGV[3]) then seal_prequeue(pre, sealed, nil) end
  if window_from > 0 and s >= window_from then
    local count = s - window_from + 1
    local step = tostring(s)
    redis.call('ZADD', steps, now + window_ms, step)
    redis.call('ZADD', by_ticket, s, step)
    redis.call('HSET', step_info, step .. ':n', count, step .. ':r', math.min(used_from_window, count),
      step .. ':at', now, step .. ':exp', now + window_ms)
    redis.call('HSET', ticker, 'inflight', math.max(0, count - used_from_window))
  end
else
  -- The queue is current; only make sure it is past every ticket an order used.
  for _, counter in ipairs({tail, serving}) do
    if tonumber(redis.call('GET', counter) or '0') < max_ticket then
      redis.call('SET', counter, max_ticket)
    end
  end
end
if now >= allotment_until then allotment = 0 end
local allotted = math.max(0, math.min(free, allotment - code_units))
local available = free - allotted
redis.call('HSET', ledger,
  'total', total, 'available', available, 'reserved', reserved, 'sold', sold,
  'allotment', allotment, 'allotted', allotted, 'code_units', code_units, 'allotment_until_ms', allotment_until,
  'per_user_limit', ARGV[2], 'opens_at_ms', ARGV[3], 'closes_at_ms', ARGV[4],
  'paused', ARGV[5], 'closed', ARGV[6], 'epoch', ARGV[7], 'seq', ARGV[10])
return {'rebuilt', available, reserved, sold}
