-- configure_batch: change a live batch's stock, per-user limit and window.
--
-- KEYS[1]  the batch's ledger hash
-- ARGV[1]  new total units (integer >= 1)
-- ARGV[2]  new per-user limit (integer >= 1)
-- ARGV[3]  opening, Unix milliseconds
-- ARGV[4]  end of the window, Unix milliseconds; 0 = none
-- ARGV[5]  units held back for priority codes (0: none; see the prelude)
-- ARGV[6]  when what is left of them goes to everyone, Unix milliseconds (past: nothing is held)
--
-- Returns one of
--   {'ok', available}             applied; available = total - reserved - sold - allotted, where
--                                 allotted = max(0, allotment - units codes hold), as far as the
--                                 free units go
--   {'below_committed', held}     refused: total < reserved + sold (= held), nothing changed
--   {'closed'}                    refused: the batch is closed, nothing changed
--   {'missing'}                   refused: no ledger (never opened, or Redis lost it)
-- The check and the write happen in one step, so a reservation racing the change can never leave
-- available below zero.

if #KEYS ~= 1 or #ARGV ~= 6 then
  return redis.error_reply('ERR configure_batch expects 1 key and 6 arguments')
end
local total = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local allotment, allotment_until = tonumber(ARGV[5]), tonumber(ARGV[6])
if not total or total < 1 or total % 1 ~= 0 or not limit or limit < 1 or limit % 1 ~= 0 then
  return redis.error_reply('ERR configure_batch: total and limit must be positive integers')
end
if not allotment or allotment < 0 or allotment % 1 ~= 0 or not allotment_until then
  return redis.error_reply('ERR configure_batch: bad allotment')
end
local state = redis.call('HMGET', KEYS[1], 'reserved', 'sold', 'closed', 'code_units')
if not state[1] then
  return {'missing'}
end
if state[3] == '1' then
  return {'closed'}
end
local held = tonumber(state[1]) + tonumber(state[2])
if total < held then
  return {'below_committed', held}
end
if now_ms() >= allotment_until then allotment = 0 end
local free = total - held
local allotted = math.max(0, math.min(free, allotment - tonumber(state[4] or '0')))
redis.call('HSET', KEYS[1], 'total', total, 'available', free - allotted, 'per_user_limit', limit,
  'opens_at_ms', ARGV[3], 'closes_at_ms', ARGV[4],
  'allotment', allotment, 'allotted', allotted, 'allotment_until_ms', allotment_until)
return {'ok', free - allotted}
