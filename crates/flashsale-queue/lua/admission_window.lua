-- admission_window: when was a ticket admitted, and until when may it reserve?
--
-- KEYS[1] serving counter   KEYS[2] steps-by-ticket zset   KEYS[3] step info hash
-- ARGV[1] ticket (>= 1)
--
-- Returns {'waiting'} (not admitted yet), {'admitted', step, admitted_at_ms, expires_at_ms}, or
-- {'expired'} (admitted, but the step's window passed and was swept: the turn is lost). Reads
-- only.

if #KEYS ~= 3 or #ARGV ~= 1 then
  return redis.error_reply('ERR admission_window expects 3 keys and 1 argument')
end
local ticket = tonumber(ARGV[1])
if not ticket or ticket < 1 then
  return redis.error_reply('ERR admission_window: bad ticket')
end
if ticket > tonumber(redis.call('GET', KEYS[1]) or '0') then
  return {'waiting'}
end
local found = redis.call('ZRANGEBYSCORE', KEYS[2], ticket, '+inf', 'LIMIT', 0, 1)
if #found == 0 then
  return {'expired'}
end
-- The first remaining step ending at or after the ticket admitted it only if the ticket is within
-- its range (last - n, last]; otherwise the ticket's own step was swept.
local step = found[1]
local f = redis.call('HMGET', KEYS[3], step .. ':at', step .. ':exp', step .. ':n')
if not f[1] or ticket <= tonumber(step) - tonumber(f[3]) then
  return {'expired'}
end
return {'admitted', tonumber(step), tonumber(f[1]), tonumber(f[2])}
