-- retire_batch: give every key of a finished batch an end of life.
--
-- KEYS every key of the batch (ledger, queue, reservations, ...; BatchKeys::all)
-- ARGV[1] grace, ms (>= 1): how long the keys stay readable
--
-- Returns {'retired', n}: n keys existed and now expire. Run only once the batch is finished and
-- nothing of it is reserved any more (PostgreSQL holds its final numbers by then). A key that
-- already expires sooner keeps its sooner expiry. Idempotent.

if #KEYS < 1 or #ARGV ~= 1 then
  return redis.error_reply('ERR retire_batch expects keys and 1 argument')
end
local grace = tonumber(ARGV[1])
if not grace or grace < 1 then
  return redis.error_reply('ERR retire_batch: bad grace')
end
local n = 0
for _, key in ipairs(KEYS) do
  local ttl = redis.call('PTTL', key)
  if ttl == -1 or ttl > grace then
    n = n + redis.call('PEXPIRE', key, grace)
  end
end
return {'retired', n}
