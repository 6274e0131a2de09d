-- admit: move a batch's "now serving" counter forward, at most at the admission rate and only as
-- far as the stock left can serve the buyers admitted and not yet finished.
--
-- KEYS[1] ledger hash        KEYS[4] sealed           KEYS[7] step info hash
-- KEYS[2] pre-queue zset     KEYS[5] serving counter  KEYS[8] ticker hash (last_ms, allowance,
-- KEYS[3] tail counter       KEYS[6] steps zset         inflight)
--                                    (score: expiry)  KEYS[9] steps-by-ticket zset
-- ARGV[1] admission rate, buyers per second (>= 1)
-- ARGV[2] oversubscription factor (1.0 - 1.5): buyers in flight per unit available
-- ARGV[3] admission TTL, ms     ARGV[4] opening, Unix ms
-- ARGV[5] hold: '1' when the calling instance holds admission (its database is unreachable, so
--         admitted buyers could not order), '0' otherwise
-- ARGV[6] reach margin: buyers kept within reach beyond the units that may come back (>= 0)
--
-- Returns {'stepped', admitted, serving, tail, inflight, lapsed, epoch}: buyers admitted by this call, the counter
-- after it, tickets handed out, buyers admitted whose turn is still running and who have not
-- reserved, buyers whose turn this call found lapsed unused, and the ledger's epoch (0 without a
-- ledger): a rebuild puts the serving counter back to its mark under a new epoch, so a step
-- admitting tickets again is out of order only within one epoch. Any number of instances may call
-- it as often as they like: the allowance is a token
-- bucket kept here, refilled from Redis's clock, so together they never admit faster than the
-- rate. Each call that admits records a step (its last ticket, time, expiry, count); steps past
-- their expiry are swept, and their buyers who did not reserve stop counting as in flight.
--
-- The reach. Once every unit is in a cart (nothing available, some reserved), only the buyers a
-- returned unit could go to may still be admitted: the ticker hash's `reach` is the last ticket
-- that may be, serving + ceil((reserved + available - inflight) * factor) + margin. A unit
-- serves one buyer unless that buyer passes, cancels or lets the payment lapse; then it goes to
-- the next one, so the factor and the margin are room for those. It only ever moves back
-- (payments shrink it), so a buyer behind it, told `sold_out`, is told the truth, and join.lua
-- turns new joiners away once the line reaches it. Two things lift it:
-- more stock (the ledger's total above `reach_total`, the total it was set under), and the line
-- running dry (everyone within reach admitted, none in flight, units free again because the
-- last of them passed): the reach is dropped and `reopens` counted, so no unit is stranded. (A
-- priority codes' allotment ending lifts it too: see the prelude.) `available` is what the queue's
-- buyers can have: units held back for code holders are not in it.
--
-- Frozen turns. While the batch is paused (the ledger's `paused`), its ledger is missing (a
-- fence or a rebuild), or any instance holds admission (a lease, `hold_until`, renewed by each
-- of its steps), nobody is admitted and no turn lapses: the ticker hash records `frozen_at`. The first call
-- after the freeze moves every running step's expiry on by the time it lasted, so admitted
-- buyers get back the part of their turn the pause or the outage took (the admission tokens
-- they hold are honoured until the new expiry; see admission_window.lua). A gap of more than
-- two seconds since any instance's last step (Redis unreachable, every instance down) is given
-- back the same way. Only turns still running when the freeze or the silence began are extended.

if #KEYS ~= 9 or #ARGV ~= 6 then
  return redis.error_reply('ERR admit expects 9 keys and 6 arguments')
end
local ledger, pre, tail, sealed, serving = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local steps, info, ticker, by_ticket = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local rate, factor = tonumber(ARGV[1]), tonumber(ARGV[2])
local ttl, opens_ms, hold, margin = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1', tonumber(ARGV[6])
if not rate or rate < 1 or not factor or factor < 1 or not ttl or ttl < 1 or not margin or margin < 0 then
  return redis.error_reply('ERR admit: bad rate, factor, ttl or margin')
end
-- A pause between two steps longer than this is an outage, not the ticker's rhythm (100 ms).
local GAP_MS = 2000
-- How long one step's hold keeps the batch frozen for every instance (holders step every 100 ms).
local HOLD_LEASE_MS = 1000
local now = now_ms()

local function counters(admitted)
  local inflight = math.max(0, tonumber(redis.call('HGET', ticker, 'inflight') or '0'))
  return {'stepped', admitted, tonumber(redis.call('GET', serving) or '0'), tonumber(redis.call('GET', tail) or '0'), inflight, 0,
    tonumber(redis.call('HGET', ledger, 'epoch') or '0')}
end
if now < opens_ms then
  return counters(0)
end

-- Seal the pre-queue cohort, so its tickets 1..P exist even if nobody joins after the opening.
seal_prequeue(pre, sealed, tail)
-- The priority codes' allotment ends on time whether or not any code holder reserves (it lifts
-- the reach: its units are everyone's now). Before the freeze below: a paused batch's allotment
-- ends on time too.
release_allotment_if_due(ledger, ticker, now)

local state = redis.call('HMGET', ledger, 'available', 'paused', 'closed', 'reserved', 'total')
local f = redis.call('HMGET', ticker, 'frozen_at', 'last_ms', 'hold_until')
local frozen_at, last_step, hold_until = tonumber(f[1] or ''), tonumber(f[2] or ''), tonumber(f[3] or '0')
-- Steps stopped for longer than the ticker's rhythm: the outage began at the last step.
local silent_since = (last_step and now - last_step > GAP_MS) and last_step or nil
-- A hold is a lease every instance honours, renewed by each step of an instance that holds:
-- instances that disagree (one cannot reach its database) do not freeze and thaw in turn.
if hold then
  hold_until = now + HOLD_LEASE_MS
  redis.call('HSET', ticker, 'hold_until', hold_until)
end
-- Frozen: paused, held, or the ledger missing (fenced, being rebuilt: nobody can reserve).
if not state[1] or state[2] == '1' or hold_until > now then
  if not frozen_at then redis.call('HSET', ticker, 'frozen_at', silent_since or now) end
  -- The bucket does not fill while frozen: the resume starts at the rate, not with a burst.
  redis.call('HSET', ticker, 'last_ms', now)
  return counters(0)
end
-- Moves on by `shift` ms the expiry of every step still running at `since` (one that had
-- already ended then lost nothing to what followed).
local function extend_turns(shift, since)
  local running = redis.call('ZRANGEBYSCORE', steps, '(' .. since, '+inf', 'WITHSCORES')
  for i = 1, #running, 2 do
    local step = running[i]
    redis.call('ZADD', steps, tonumber(running[i + 1]) + shift, step)
    redis.call('HINCRBY', info, step .. ':exp', shift)
  end
end
if frozen_at then
  extend_turns(math.max(0, now - frozen_at), frozen_at)
  redis.call('HDEL', ticker, 'frozen_at', 'hold_until')
elseif silent_since then
  -- Every instance ticks every 100 ms. A longer gap since the last step means none could reach
  -- Redis (an outage, a restart, every instance down): nobody could order meanwhile either, so
  -- the turns running when it began get the gap back, as after a freeze.
  extend_turns(now - silent_since, silent_since)
end

-- Sweep expired steps (a bounded number per call keeps the script short).
local inflight = tonumber(redis.call('HGET', ticker, 'inflight') or '0')
local lapsed = 0
local expired = redis.call('ZRANGEBYSCORE', steps, '-inf', now, 'LIMIT', 0, 256)
for _, step in ipairs(expired) do
  local f = redis.call('HMGET', info, step .. ':n', step .. ':r')
  local unused = tonumber(f[1] or '0') - tonumber(f[2] or '0')
  lapsed = lapsed + unused
  inflight = inflight - unused
  redis.call('HDEL', info, step .. ':n', step .. ':r', step .. ':at', step .. ':exp')
  redis.call('ZREM', steps, step)
  redis.call('ZREM', by_ticket, step)
end
if inflight < 0 then inflight = 0 end

-- Refill the token bucket: `rate` per second, at most one second's worth banked.
local last = last_step or now
local allowance = tonumber(redis.call('HGET', ticker, 'allowance') or '0')
allowance = math.min(rate, allowance + (now - last) * rate / 1000)

local admitted = 0
local current = tonumber(redis.call('GET', serving) or '0')
local available, reserved, total = tonumber(state[1]), tonumber(state[4] or '0'), tonumber(state[5] or '0')
local r = redis.call('HMGET', ticker, 'reach', 'reach_total')
local reach, reach_total = tonumber(r[1] or ''), tonumber(r[2] or '')
if reach and (total > (reach_total or total) or (current >= reach and inflight == 0 and available > 0)) then
  reach, reach_total = nil, nil
  redis.call('HDEL', ticker, 'reach', 'reach_total')
  redis.call('HINCRBY', ticker, 'reopens', 1)
end
if reach or (available == 0 and reserved > 0) then
  local within = current + math.ceil(math.max(0, reserved + available - inflight) * factor) + margin
  if not reach or within < reach then
    reach = within
    redis.call('HSET', ticker, 'reach', reach, 'reach_total', reach_total or total)
  end
end
if state[3] ~= '1' then
  local capacity = math.floor(available * factor) - inflight
  local waiting = math.min(tonumber(redis.call('GET', tail) or '0'), reach or math.huge) - current
  admitted = math.max(0, math.min(math.floor(allowance), capacity, waiting))
end

if admitted > 0 then
  current = redis.call('INCRBY', serving, admitted)
  allowance = allowance - admitted
  inflight = inflight + admitted
  local step = tostring(current)
  redis.call('ZADD', steps, now + ttl, step)
  redis.call('ZADD', by_ticket, current, step)
  redis.call('HSET', info, step .. ':n', admitted, step .. ':r', 0, step .. ':at', now, step .. ':exp', now + ttl)
end
redis.call('HSET', ticker, 'last_ms', now, 'allowance', tostring(allowance), 'inflight', inflight)
return {'stepped', admitted, current, tonumber(redis.call('GET', tail) or '0'), inflight, lapsed,
  tonumber(redis.call('HGET', ledger, 'epoch') or '0')}
