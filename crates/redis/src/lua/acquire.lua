-- ACQUIRE. KEYS: calls, reservations, charges, state, running-time state.
-- ARGV: now override ('' = TIME), ticket (unique, made by the client), margin, lease,
--       estimate, ncalls, nruntime, the cap on server waits ('' = a day),
--       ncalls x (max, per), nruntime x (budget, per).
-- Each window is widened by this process's margin, or by a wider one another process of
-- the app published while its calls may still lie in that window (`margin_for`); an
-- admitted call publishes this process's margin (`publish_margin`).
-- Returns {1, now, reserved, ttl ms} or {0, retry at, now, reason, a, b} with reason
-- 1 call window (a max, b per), 2 retry-after, 3 running-time window (a budget, b per),
-- 4 running time exhausted, 5 reservations in flight (a budget, b per).
local now = clock(ARGV[1])
local ticket = ARGV[2]
local margin, lease, estimate = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local blocked, rblocked, learned, margins = read_state(KEYS[4], now, wait_cap(ARGV[8]), true)
-- The running-time block lives in KEYS[5]: the tenant's hash, or the app's state itself.
if KEYS[5] ~= KEYS[4] then
  local _, rb = read_state(KEYS[5], now, wait_cap(ARGV[8]), true)
  rblocked = rb
end
local wins, a = call_windows(9, tonumber(ARGV[6]), learned)
local rts = runtime_windows(a, tonumber(ARGV[7]))

local worst, why, wa, wb = nil, 0, 0, 0
local longest, tightest, hold = 0, nil, 0
for _, w in ipairs(wins) do
  w[3] = w[2] + margin_for(w[2], margin, margins, now)
  if w[3] > longest then longest = w[3] end
  if w[2] > hold then hold = w[2] end
  if tightest == nil or w[1] < tightest then tightest = w[1] end
end
for _, r in ipairs(rts) do
  r[3] = r[2] + margin_for(r[2], margin, margins, now)
  if r[2] > hold then hold = r[2] end
end
if longest > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', s(now - longest))
  -- After the trim every call left lies in the longest window: when fewer than the
  -- smallest max remain, every window has room and none needs counting.
  local all = redis.call('ZCARD', KEYS[1])
  if all >= tightest then
    for _, w in ipairs(wins) do
      local span = w[3]
      local lo = '(' .. s(now - span)
      local live = all
      if span < longest then live = redis.call('ZCOUNT', KEYS[1], lo, '+inf') end
      if live >= w[1] then
        -- Admitted once the (live - max + 1)-th oldest live call leaves the window.
        local e = redis.call('ZRANGEBYSCORE', KEYS[1], lo, '+inf', 'WITHSCORES', 'LIMIT', live - w[1], 1)
        local free = tonumber(e[2]) + span
        if worst == nil or free > worst then worst, why, wa, wb = free, 1, w[1], w[2] end
      end
    end
  end
end
if blocked > now and (worst == nil or blocked > worst) then worst, why, wa, wb = blocked, 2, 0, 0 end

local rlongest = 0
if #rts > 0 then
  for _, r in ipairs(rts) do
    if r[3] > rlongest then rlongest = r[3] end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', s(now - rlongest))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', s(now - lease))
  local reserved, resv = 0, {}
  local rs = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  for i = 1, #rs, 2 do
    local amt = amount(rs[i])
    reserved = reserved + amt
    resv[#resv + 1] = { tonumber(rs[i + 1]) + lease, amt, true }
  end
  for _, r in ipairs(rts) do
    local span = r[3]
    local cs = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. s(now - span), '+inf', 'WITHSCORES')
    local used, ev = reserved, {}
    for i = 1, #cs, 2 do
      local amt = amount(cs[i])
      used = used + amt
      ev[#ev + 1] = { tonumber(cs[i + 1]) + span, amt, false }
    end
    if used >= r[1] then
      -- Walk what leaves the window (charges) or lapses (reservations), earliest first.
      for _, v in ipairs(resv) do ev[#ev + 1] = v end
      table.sort(ev, function(x, y)
        if x[1] ~= y[1] then return x[1] < y[1] end
        return (not x[3]) and y[3]
      end)
      for _, v in ipairs(ev) do
        used = used - v[2]
        if used < r[1] then
          if worst == nil or v[1] > worst then
            worst, wa, wb = v[1], r[1], r[2]
            if v[3] then why = 5 else why = 3 end
          end
          break
        end
      end
    end
  end
end
if rblocked > now and (worst == nil or rblocked > worst) then worst, why, wa, wb = rblocked, 4, 0, 0 end

if worst ~= nil then return { 0, worst, now, why, wa, wb } end

local reserved = 0
local ttl = math.max(longest, rlongest)
for _, l in ipairs(learned) do ttl = math.max(ttl, l[2] + margin_for(l[2], margin, margins, now)) end
if #rts > 0 and estimate > 0 then ttl = math.max(ttl, lease) end
local ms = math.ceil(ttl / 1000) + 1
if #wins > 0 then
  redis.call('ZADD', KEYS[1], s(now), ticket)
  redis.call('PEXPIRE', KEYS[1], ms)
end
if #rts > 0 and estimate > 0 then
  redis.call('ZADD', KEYS[2], s(now), ticket .. ':' .. s(estimate))
  redis.call('PEXPIRE', KEYS[2], ms)
  reserved = estimate
end
if hold > 0 then publish_margin(KEYS[4], ticket, margin, margins, now, hold) end
return { 1, now, reserved, ms }
