-- reserve: turn an admission into held units, or say why not. All checks and writes in one step.
--
-- KEYS[1] ledger hash          KEYS[4] open reservations' deadlines (zset)
-- KEYS[2] holdings hash        KEYS[5] used admission tickets (set of 'ticket:user')
-- KEYS[3] open reservations (id -> 'units deadline_ms ticket user')    KEYS[6] queue step info hash     KEYS[7] queue ticker hash
-- ARGV[1] user id   ARGV[2] units (>= 1)   ARGV[3] admission ticket (the token's unique id)
-- ARGV[4] admission step   ARGV[5] payment window, ms (the reservation's lifetime)
-- KEYS[8] unconfirmed reservations (zset: id -> made at, ms)   KEYS[9] their info (id -> 'step claim')
-- Optionally the request's idempotency claim, made in the same step (one round trip per order):
-- KEYS[10] the claim key   ARGV[6] the claim   ARGV[7] its lifetime, ms
--
-- Returns {'reserved', id, deadline_ms, epoch} (epoch: the ledger's, see rebuild_batch.lua) or one of {'missing'}, {'not_open'}, {'paused'},
-- {'closed'}, {'token_used'}, {'limit_reached', held}, {'sold_out', available}, or, with a claim
-- that is already held, {'claimed', held claim}. Nothing is written unless 'reserved' is
-- returned, except the claim: written with every answer but 'missing' and 'claimed' (the caller
-- stores the answer under it), and a refusal that leaves the buyer nothing to buy: 'sold_out'
-- with nothing available, or 'limit_reached' with the buyer's whole limit held. That refusal
-- ends the turn as a reservation would (ticket consumed, the step learns the buyer is done, one
-- fewer in flight), so admission can offer the next unit that comes back to the next buyer in
-- line at once instead of when this buyer's window runs out. A refusal that leaves something
-- (fewer units than asked are free, or fewer than asked are left within the limit) keeps the
-- turn: the buyer may ask again for less. On success the ticket is consumed (a replayed token
-- reserves nothing), the buyer's holdings grow, available -> reserved, the reservation is recorded
-- with its deadline (Redis's clock), and the admission step learns one of its buyers reserved (so
-- the queue stops counting them as in flight). The reservation is also noted as unconfirmed until
-- upkeep finds its order in PostgreSQL (or releases it as an orphan).
-- A priority code's ticket (see the prelude) reserves from the codes' allotment while the ledger
-- has one (`sold_out` then counts the allotment's free units), and from `available` otherwise;
-- everyone else only ever from `available`. An allotment whose time is up is released first
-- (whoever reserves: admit.lua does it too, every tick). A code holder's `sold_out` never ends
-- their turn: the code stays theirs to try again.

if not ((#KEYS == 9 and #ARGV == 5) or (#KEYS == 10 and #ARGV == 7)) then
  return redis.error_reply('ERR reserve expects 9 keys and 5 arguments, or 10 and 7 with a claim')
end
local unconfirmed, unconfirmed_info, claim = KEYS[8], KEYS[9], KEYS[10]
local ledger, holdings, reservations, deadlines, used, step_info, ticker = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local user, qty, ticket, step, window = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
if not qty or qty < 1 or qty % 1 ~= 0 or not window or window < 1 then
  return redis.error_reply('ERR reserve: bad units or window')
end
local now = now_ms()

local l = redis.call('HMGET', ledger, 'available', 'per_user_limit', 'paused', 'closed', 'opens_at_ms', 'closes_at_ms', 'epoch',
  'allotment', 'allotted', 'allotment_until_ms')
if not l[1] then return {'missing'} end
if claim then
  local held = redis.call('GET', claim)
  if held then return {'claimed', held} end
  redis.call('SET', claim, ARGV[6], 'PX', ARGV[7])
end
local closes = tonumber(l[6])
if l[4] == '1' or (closes > 0 and now >= closes) then return {'closed'} end
if now < tonumber(l[5]) then return {'not_open'} end
if l[3] == '1' then return {'paused'} end
-- A used ticket is remembered with its buyer: one buyer's order can never spend another's turn,
-- even if a Redis loss ever made two buyers hold the same number.
local spent = spent_ticket(ticket, user)
if redis.call('SISMEMBER', used, spent) == 1 then return {'token_used'} end

-- The buyer is done with this turn: the ticket is spent and the step stops counting them.
local function finish_turn()
  redis.call('SADD', used, spent)
  if redis.call('HEXISTS', step_info, step .. ':n') == 1 then
    redis.call('HINCRBY', step_info, step .. ':r', 1)
    -- Never below zero, whatever an earlier bug or a partial restore left (a negative count would
    -- let admission run past the stock).
    if redis.call('HINCRBY', ticker, 'inflight', -1) < 0 then redis.call('HSET', ticker, 'inflight', 0) end
  end
end

local held = tonumber(redis.call('HGET', holdings, user) or '0')
local limit = tonumber(l[2])
if held + qty > limit then
  if held >= limit then finish_turn() end
  return {'limit_reached', held}
end
local code = is_priority_ticket(ticket)
local pool, free = 'available', tonumber(l[1])
local allotment = tonumber(l[8] or '0')
if allotment > 0 and now >= tonumber(l[10] or '0') then
  free = free + release_allotment_if_due(ledger, ticker, now)
elseif code and allotment > 0 then
  pool, free = 'allotted', tonumber(l[9] or '0')
end
if free < qty then
  -- A code holder keeps the code: a unit may come back to the allotment, or the hold end.
  if free <= 0 and not code then finish_turn() end
  return {'sold_out', free}
end

finish_turn()
redis.call('HINCRBY', holdings, user, qty)
redis.call('HINCRBY', ledger, pool, -qty)
redis.call('HINCRBY', ledger, 'reserved', qty)
if code then redis.call('HINCRBY', ledger, 'code_units', qty) end
local id = redis.call('HINCRBY', ledger, 'seq', 1)
local deadline = now + window
redis.call('HSET', reservations, id, reservation_record(qty, deadline, ticket, user))
redis.call('ZADD', deadlines, deadline, id)
redis.call('ZADD', unconfirmed, now, id)
redis.call('HSET', unconfirmed_info, id, step .. ' ' .. (claim or ''))
return {'reserved', id, deadline, tonumber(l[7] or '1')}
