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

