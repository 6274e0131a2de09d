-- expire: release every reservation whose deadline passed more than a grace period ago (Redis's
-- clock), up to a batch.
--
-- KEYS[1] ledger hash   KEYS[2] holdings hash   KEYS[3] open reservations hash
-- KEYS[4] deadlines zset   KEYS[5] settled hash
-- ARGV[1] at most this many reservations per call
-- ARGV[2] grace, ms: the order's own expiry (in PostgreSQL, where a payment racing the deadline
--         is decided) goes first; this sweep is the safety net for reservations whose order was
--         never written
--
-- Returns {'expired', released, units}: reservations released by this call and their units, or
-- {'missing'} when the batch has no ledger (being rebuilt: nothing written). Safe to run on
-- every instance at once: each reservation leaves the deadlines set in the same step that
-- releases it, so it is released exactly once.

if #KEYS ~= 5 or #ARGV ~= 2 then
  return redis.error_reply('ERR expire expects 5 keys and 2 arguments')
end
local ledger, holdings, reservations, deadlines, settled = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local limit, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
if not limit or limit < 1 or not grace or grace < 0 then
  return redis.error_reply('ERR expire: bad limit or grace')
end
-- No ledger: the batch is being rebuilt; writing would leave a partial ledger behind.
if redis.call('EXISTS', ledger) == 0 then return {'missing'} end
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now - grace, 'LIMIT', 0, limit)
local units = 0
for _, id in ipairs(due) do
  local open = redis.call('HGET', reservations, id)
  if open then
    local qty, _, ticket, user = read_reservation(open)
    units_back(ledger, holdings, user, qty, ticket)
    redis.call('HSET', settled, id, 'released')
    redis.call('HDEL', reservations, id)
    units = units + qty
  end
  redis.call('ZREM', deadlines, id)
end
return {'expired', #due, units}
