-- set_batch_status: pause, resume or close a batch.
--
-- KEYS[1]  the batch's ledger hash
-- ARGV[1]  'pause' | 'resume' | 'close'
--
-- Returns {'ok'} (applied, or already so), {'closed'} (pause or resume refused: closing is final)
-- or {'missing'} (no ledger). Nothing is written unless 'ok' is returned.

if #KEYS ~= 1 or #ARGV ~= 1 then
  return redis.error_reply('ERR set_batch_status expects 1 key and 1 argument')
end
local change = ARGV[1]
if change ~= 'pause' and change ~= 'resume' and change ~= 'close' then
  return redis.error_reply('ERR set_batch_status: unknown change ' .. change)
end
local closed = redis.call('HGET', KEYS[1], 'closed')
if not closed then
  return {'missing'}
end
if change == 'close' then
  redis.call('HSET', KEYS[1], 'closed', 1)
  return {'ok'}
end
if closed == '1' then
  return {'closed'}
end
redis.call('HSET', KEYS[1], 'paused', change == 'pause' and 1 or 0)
return {'ok'}
