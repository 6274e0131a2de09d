-- unconfirmed: reservations made at least a given age ago whose order is not yet known to be in
-- PostgreSQL (upkeep then looks for their orders). Reads only.
--
-- KEYS[1] unconfirmed reservations (zset: id -> made at, ms)   KEYS[2] their info (id -> 'step claim')
-- ARGV[1] age, ms (>= 0)   ARGV[2] at most this many (>= 1)
--
-- Returns {'unconfirmed', id, info, id, info, ...}, oldest first; the age is measured on Redis's
-- clock, the one that stamped them. An id without info reads as '0 ' (no step, no claim).

if #KEYS ~= 2 or #ARGV ~= 2 then
  return redis.error_reply('ERR unconfirmed expects 2 keys and 2 arguments')
end
local age, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if not age or age < 0 or not limit or limit < 1 then
  return redis.error_reply('ERR unconfirmed: bad age or limit')
end
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - age, 'LIMIT', 0, limit)
local out = {'unconfirmed'}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or '0 '
end
return out
