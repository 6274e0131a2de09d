-- configure_batch: change a live batch's stock, per-user limit and window.
--
-- KEYS[1]  the batch's ledger hash   KEYS[2]  the queue's ticker hash (its reach is lifted when
--          units held for codes go to everyone)
-- ARGV[1]  new total units (integer >= 1)
-- ARGV[2]  new per-user limit (integer >= 1)
-- ARGV[3]  opening, Unix milliseconds
-- ARGV[4]  end of the window, Unix milliseconds; 0 = none
-- ARGV[5]  units held back for priority codes (0: none; see the prelude)
-- ARGV[6]  when what is left of them goes to everyone, Unix milliseconds (past: nothing is held)
--
-- Returns one of
--   {'ok', available}             applied; available = total - reserved - sold - allotted. With
--                                 the allotment's settings unchanged, allotted stays as it was (as
--                                 far as the free units go): units promised to the queue's buyers
--                                 are not moved to codes by an unrelated change. Changed, it is
--                                 max(0, allotment - units codes hold), as far as the free units
--                                 go. An allotment released at its end stays released.
--   {'below_committed', held}     refused: total < reserved + sold (= held), nothing changed
--   {'closed'}                    refused: the batch is closed, nothing changed
--   {'missing'}                   refused: no ledger (never opened, or Redis lost it)
-- The check and the write happen in one step, so a reservation racing the change can never leave
-- available below zero.

if #KEYS ~= 2 or #ARGV ~= 6 then
  return redis.error_reply('ERR configure_batch expects 2 keys and 6 arguments')
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
local state = redis.call('HMGET', KEYS[1], 'reserved', 'sold', 'closed', 'code_units', 'allotment', 'allotted',
  'allotment_until_ms')
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
local now = now_ms()
local was_until = tonumber(state[7] or '0')
if now >= allotment_until or (was_until > 0 and now >= was_until) then allotment = 0 end
local free = total - held
local was_allotted = tonumber(state[6] or '0')
local allotted
if allotment == tonumber(state[5] or '0') and allotment_until == was_until then
  allotted = math.min(free, was_allotted)
else
  allotted = math.max(0, math.min(free, allotment - tonumber(state[4] or '0')))
end
if allotted < was_allotted and redis.call('HEXISTS', KEYS[2], 'reach') == 1 then
  -- Units held for codes went to everyone: buyers told sold_out may be in line again.
  redis.call('HDEL', KEYS[2], 'reach', 'reach_total')
  redis.call('HINCRBY', KEYS[2], 'reopens', 1)
end
redis.call('HSET', KEYS[1], 'total', total, 'available', free - allotted, 'per_user_limit', limit,
  'opens_at_ms', ARGV[3], 'closes_at_ms', ARGV[4],
  'allotment', allotment, 'allotted', allotted, 'allotment_until_ms', allotment_until)
return {'ok', free - allotted}
