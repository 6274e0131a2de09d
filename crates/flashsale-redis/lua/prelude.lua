-- prelude: written once, put in front of every flashsale script (flashsale_redis::script), so
-- what several scripts must do alike is done alike.
--
-- Every script answers {tag, ...}: a name saying what happened, then its values (each script's
-- contract lists them). An argument error is raised with redis.error_reply before any write.
--
-- now_ms()                       Redis's clock (TIME) in Unix ms: one clock for every instance,
--                                whatever their own clocks say.
-- seal_prequeue(pre, sealed, tail)
--                                At the first join or admission after the opening, fixes the
--                                pre-queue's cohort size P (`sealed`) and moves the tail past
--                                tickets 1..P, which the cohort holds in drawn order. Nothing
--                                once sealed. `tail` nil: the tail already counts the cohort (a
--                                rebuild restores it from its mark).
-- reservation_record(units, deadline_ms, ticket, user) / read_reservation(record)
--                                An open reservation as kept in the reservations hash:
--                                'units deadline_ms ticket user'. read_reservation returns units
--                                and deadline as numbers, ticket as text, and user.
-- spent_ticket(ticket, user)     The used-tickets member 'ticket:user': a used ticket is bound
--                                to its buyer, so one buyer's order can never spend another's
--                                turn.
--
-- The priority codes' allotment. A ledger may hold units back for code holders: `allotment` (the
-- units set aside; 0: none, or released), `allotted` (those of them free), `code_units` (units
-- pending or paid through codes, wherever they came from) and `allotment_until_ms` (when what is
-- left goes to everyone). available + allotted + reserved + sold = total. Code holders reserve
-- from `allotted` while there is an allotment; everyone else, and code holders once it is
-- released, from `available`. `allotted` is kept at max(0, allotment - code_units) as far as the
-- stock allows.
-- is_priority_ticket(ticket)     A redeemed code's ticket (PRIORITY_TICKETS_FROM and above, the
--                                same number as Rust's Ticket::FIRST_PRIORITY), never a place in
--                                the line.
-- release_allotment_if_due(ledger, ticker, now)
--                                At `allotment_until_ms`, moves the free allotment to `available`
--                                and ends the allotment; lifts the queue's reach if it was set
--                                (units came back to everyone), counting a reopen. Returns the
--                                units released.
-- units_back(ledger, holdings, user, qty, ticket)
--                                A reservation's units come back (release, abort, expiry): out
--                                of `reserved` and the buyer's holdings; a code's units top the
--                                allotment back up first, the rest go to `available`.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function seal_prequeue(pre, sealed, tail)
  if redis.call('EXISTS', sealed) == 1 then return end
  local cohort = redis.call('ZCARD', pre)
  redis.call('SET', sealed, cohort)
  if tail then redis.call('INCRBY', tail, cohort) end
end

local function reservation_record(units, deadline_ms, ticket, user)
  return units .. ' ' .. deadline_ms .. ' ' .. ticket .. ' ' .. user
end

local function read_reservation(record)
  local units, deadline_ms, ticket, user = string.match(record, '^(%d+) (%d+) (%d+) (.*)$')
  return tonumber(units), tonumber(deadline_ms), ticket, user
end

local function spent_ticket(ticket, user)
  return ticket .. ':' .. user
end

local PRIORITY_TICKETS_FROM = 4503599627370496

local function is_priority_ticket(ticket)
  return tonumber(ticket) >= PRIORITY_TICKETS_FROM
end

local function release_allotment_if_due(ledger, ticker, now)
  local a = redis.call('HMGET', ledger, 'allotment', 'allotted', 'allotment_until_ms')
  if tonumber(a[1] or '0') <= 0 or now < tonumber(a[3] or '0') then return 0 end
  local free = tonumber(a[2] or '0')
  redis.call('HINCRBY', ledger, 'available', free)
  redis.call('HSET', ledger, 'allotment', 0, 'allotted', 0)
  if free > 0 and redis.call('HEXISTS', ticker, 'reach') == 1 then
    redis.call('HDEL', ticker, 'reach', 'reach_total')
    redis.call('HINCRBY', ticker, 'reopens', 1)
  end
  return free
end

local function units_back(ledger, holdings, user, qty, ticket)
  redis.call('HINCRBY', ledger, 'reserved', -qty)
  redis.call('HINCRBY', holdings, user, -qty)
  local to_allotment = 0
  if is_priority_ticket(ticket) then
    local code_units = redis.call('HINCRBY', ledger, 'code_units', -qty)
    if code_units < 0 then
      -- Never below zero (a ledger from before allotments counted none).
      code_units = 0
      redis.call('HSET', ledger, 'code_units', 0)
    end
    local a = redis.call('HMGET', ledger, 'allotment', 'allotted')
    local room = tonumber(a[1] or '0') - code_units - tonumber(a[2] or '0')
    to_allotment = math.max(0, math.min(qty, room))
    if to_allotment > 0 then redis.call('HINCRBY', ledger, 'allotted', to_allotment) end
  end
  redis.call('HINCRBY', ledger, 'available', qty - to_allotment)
end

