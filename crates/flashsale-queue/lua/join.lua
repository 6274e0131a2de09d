-- join: put a buyer in a batch's queue, or return the place they already have.
--
-- KEYS[1]  ledger hash (total, sold, closed)          KEYS[4]  tail counter (tickets handed out)
-- KEYS[2]  pre-queue sorted set (user -> rank)        KEYS[5]  sealed: pre-queue cohort size
-- KEYS[3]  members hash (user -> ticket, after open) KEYS[6]  ticker hash (reach: see admit.lua)
-- KEYS[7]  arrivals sorted set (pre-queue user -> when they joined, Unix ms)
-- KEYS[8]  spent proof-of-work challenges (nonce -> expiry, Unix ms)
-- ARGV[1]  user id
-- ARGV[2]  the user's pre-queue rank (integer < 2^52, from the batch's secret seed)
-- ARGV[3]  pre-queue opening, Unix ms       ARGV[4]  opening, Unix ms
-- ARGV[5]  end of the window, Unix ms (0 = none)
-- ARGV[6]  the nonce of the proof-of-work challenge this join spends ('' = none asked)
-- ARGV[7]  that challenge's expiry, Unix ms
--
-- Returns {outcome, ticket, new}: outcome 'pre' (joined the pre-queue; ticket 0 until the draw),
-- 'ticket' (place `ticket`, 1-based), 'not_open', 'closed', 'sold_out' (every unit sold, or every
-- unit in a cart and the line already as long as the units that may come back can serve) or
-- 'missing' (no ledger: Redis lost the batch and it is being rebuilt; nothing written),
-- 'pow_reused' (the challenge was spent on an earlier join; nothing else written) (ticket
-- 0); new = 1 when
-- this call created the place, 0 when it already existed. Time is Redis's own clock (TIME), one
-- clock for every instance. Joining twice, from any number of tabs at once, yields one place.
--
-- At the first join or admission after the opening the pre-queue is sealed: its size P is fixed,
-- pre-queue buyers hold tickets 1..P in rank order, and later joiners get P+1, P+2, ... in
-- arrival order.

if #KEYS ~= 8 or #ARGV ~= 7 then
  return redis.error_reply('ERR join expects 8 keys and 7 arguments')
end
local ledger, pre, members, tail, sealed, ticker = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local arrivals, spent = KEYS[7], KEYS[8]
local nonce, nonce_expiry = ARGV[6], tonumber(ARGV[7])
local user, rank = ARGV[1], ARGV[2]
local prequeue_ms, opens_ms, closes_ms = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()

local state = redis.call('HMGET', ledger, 'total', 'sold', 'closed')
if not state[1] then
  return {'missing', 0, 0}
end
-- One join per challenge (the server checked the proof itself before calling).
if nonce ~= '' then
  redis.call('ZREMRANGEBYSCORE', spent, '-inf', now)
  if redis.call('ZADD', spent, 'NX', nonce_expiry, nonce) == 0 then
    return {'pow_reused', 0, 0}
  end
end
if state[3] == '1' or (closes_ms > 0 and now >= closes_ms) then
  return {'closed', 0, 0}
end
if now < prequeue_ms then
  return {'not_open', 0, 0}
end

if now < opens_ms then
  local added = redis.call('ZADD', pre, 'NX', rank, user)
  if added == 1 then redis.call('ZADD', arrivals, 'NX', now, user) end
  return {'pre', 0, added}
end

-- After the opening. A buyer who is already in keeps their place, sold out or not.
local ranked = redis.call('ZRANK', pre, user)
if ranked then
  seal_prequeue(pre, sealed, tail)
  return {'ticket', ranked + 1, 0}
end
local ticket = redis.call('HGET', members, user)
if ticket then
  return {'ticket', tonumber(ticket), 0}
end
if tonumber(state[2]) >= tonumber(state[1]) then
  return {'sold_out', 0, 0}
end
seal_prequeue(pre, sealed, tail)
-- Beyond the reach no ticket is ever admitted (until it is lifted): say so now, not after a wait.
local reach = tonumber(redis.call('HGET', ticker, 'reach') or '')
if reach and tonumber(redis.call('GET', tail) or '0') >= reach then
  return {'sold_out', 0, 0}
end
ticket = redis.call('INCR', tail)
redis.call('HSET', members, user, ticket)
return {'ticket', ticket, 1}
