-- open_batch: create a batch's stock ledger, unless it already exists.
--
-- KEYS[1]  the batch's ledger hash ({sale:ID} tagged)
-- ARGV[1]  total units the batch releases (integer >= 1)
-- ARGV[2]  per-user limit (integer >= 1)
-- ARGV[3]  opening, Unix milliseconds
-- ARGV[4]  end of the window, Unix milliseconds; 0 = none
-- ARGV[5]  paused: 0 or 1
-- ARGV[6]  closed: 0 or 1
-- ARGV[7]  epoch: the batch's epoch in PostgreSQL (reported by every reservation, see
--          rebuild_batch.lua)
-- ARGV[8]  units held back for priority codes (0: none; see the prelude)
-- ARGV[9]  when what is left of them goes to everyone, Unix milliseconds
--
-- Returns {'opened'} when the ledger was created (available + allotted = total, nothing reserved
-- or sold),
-- {'exists'} when it already existed; an existing ledger is left exactly as it was, so calling this again (another
-- instance, a retry after a timeout) can never reset stock that buyers already hold.
-- All or nothing: argument errors are raised before any write.

if #KEYS ~= 1 or #ARGV ~= 9 then
  return redis.error_reply('ERR open_batch expects 1 key and 9 arguments')
end
local total = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local allotment, allotment_until = tonumber(ARGV[8]), tonumber(ARGV[9])
if not total or total < 1 or total % 1 ~= 0 or not limit or limit < 1 or limit % 1 ~= 0 then
  return redis.error_reply('ERR open_batch: total and limit must be positive integers')
end
if not allotment or allotment < 0 or allotment % 1 ~= 0 or not allotment_until then
  return redis.error_reply('ERR open_batch: bad allotment')
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists'}
end
if now_ms() >= allotment_until then allotment = 0 end
local allotted = math.min(allotment, total)
redis.call('HSET', KEYS[1],
  'total', total, 'available', total - allotted, 'reserved', 0, 'sold', 0,
  'allotment', allotment, 'allotted', allotted, 'code_units', 0, 'allotment_until_ms', allotment_until,
  'per_user_limit', limit, 'opens_at_ms', ARGV[3], 'closes_at_ms', ARGV[4],
  'paused', ARGV[5], 'closed', ARGV[6], 'epoch', ARGV[7])
return {'opened'}
