-- confirm: reservations whose fate PostgreSQL has decided (their order is written, or they were
-- released as orphans) leave the unconfirmed set.
--
-- KEYS[1] unconfirmed reservations (zset)   KEYS[2] their info (hash)
-- ARGV reservation ids (at least one)
--
-- Returns {'confirmed', n}: n of them were still unconfirmed. Idempotent.

if #KEYS ~= 2 or #ARGV < 1 then
  return redis.error_reply('ERR confirm expects 2 keys and at least 1 argument')
end
local n = redis.call('ZREM', KEYS[1], unpack(ARGV))
redis.call('HDEL', KEYS[2], unpack(ARGV))
return {'confirmed', n}
