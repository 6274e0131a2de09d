-- configure_batch: change a live batch's stock, per-user limit and window.
--
-- KEYS[1]  the batch's ledger hash
-- ARGV[1]  new total units (integer >= 1)
-- ARGV[2]  new per-user limit (integer >= 1)
-- ARGV[3]  opening, Unix milliseconds
-- ARGV[4]  end of the window, Unix milliseconds; 0 = none
--
-- Returns one of
--   {'ok', available}             applied; available = total - reserved - sold
--   {'below_committed', held}     refused: total < reserved + sold (= held), nothing changed
--   {'closed'}                    refused: the batch is closed, nothing changed
--   {'missing'}                   refused: no ledger (never opened, or Redis lost it)
-- The check and the write happen in one step, so a reservation racing the change can never leave
-- available below zero.

if #KEYS ~= 1 or #ARGV ~= 4 then
  return redis.error_reply('ERR configure_batch expects 1 key and 4 arguments')
end
local total = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if not total or total < 1 or total % 1 ~= 0 or not limit or limit < 1 or limit % 1 ~= 0 then
  return redis.error_reply('ERR configure_batch: total and limit must be positive integers')
end
local state = redis.call('HMGET', KEYS[1], 'reserved', 'sold', 'closed')
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
redis.call('HSET', KEYS[1], 'total', total, 'available', total - held, 'per_user_limit', limit,
  'opens_at_ms', ARGV[3], 'closes_at_ms', ARGV[4])
return {'ok', total - held}
