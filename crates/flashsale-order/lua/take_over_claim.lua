-- take_over_claim: replace an idempotency claim left by a request that died, unless someone
-- else replaced it first (compare and set).
--
-- KEYS[1] the claim (string 'fingerprint claimed_at_ms'; BatchKeys::idempotency)
-- ARGV[1] the claim as the caller read it (stale: no answer in PostgreSQL, claimed long ago)
-- ARGV[2] the new claim   ARGV[3] how long it is kept, ms
--
-- Returns {'taken'} when the caller now holds the claim, {'changed'} when the claim changed since it was read
-- (another retry took it over, or it expired): the caller answers in_progress and the client
-- retries. Claims themselves are made with one command, SET NX GET, not a script.

if #KEYS ~= 1 or #ARGV ~= 3 then
  return redis.error_reply('ERR take_over_claim expects 1 key and 3 arguments')
end
local ttl = tonumber(ARGV[3])
if not ttl or ttl < 1 then
  return redis.error_reply('ERR take_over_claim: bad ttl')
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'changed'} end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
return {'taken'}
