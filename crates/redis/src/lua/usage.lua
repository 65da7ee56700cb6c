-- USAGE (read only). KEYS: calls, reservations, charges, state, running-time state.
-- ARGV: as ACQUIRE (the ticket unused). Returns {now, blocked, rblocked, reserved, in flight, ncalls,
-- ncalls x (max, per, used, next free), nruntime, nruntime x (budget, per, charged),
-- the widest margin a window uses now, nclients, nclients x (name, calls)}: the calls in the
-- longest window by the client name their ticket carries after '/' (tickets without one are
-- not listed). Windows are widened as ACQUIRE widens them.
local now = clock(ARGV[1])
local margin, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local blocked, rblocked, learned, margins = read_state(KEYS[4], now, wait_cap(ARGV[8]), false)
-- The running-time block lives in KEYS[5]: the tenant's hash, or the app's state itself.
if KEYS[5] ~= KEYS[4] then
  local _, rb = read_state(KEYS[5], now, wait_cap(ARGV[8]), false)
  rblocked = rb
end
local wins, a = call_windows(9, tonumber(ARGV[6]), learned)
local rts = runtime_windows(a, tonumber(ARGV[7]))
local out = { now, blocked, rblocked, 0, 0, #wins }
local longest, widest = 0, margin
for _, w in ipairs(wins) do
  local span = w[2] + margin_for(w[2], margin, margins, now)
  if span - w[2] > widest then widest = span - w[2] end
  if span > longest then longest = span end
  local lo = '(' .. s(now - span)
  local live = redis.call('ZCOUNT', KEYS[1], lo, '+inf')
  local free = now
  if live >= w[1] then
    local e = redis.call('ZRANGEBYSCORE', KEYS[1], lo, '+inf', 'WITHSCORES', 'LIMIT', live - w[1], 1)
    free = tonumber(e[2]) + span
  end
  out[#out + 1] = w[1]
  out[#out + 1] = w[2]
  out[#out + 1] = live
  out[#out + 1] = free
end
local rs = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. s(now - lease), '+inf')
for _, m in ipairs(rs) do out[4] = out[4] + amount(m) end
out[5] = #rs
out[#out + 1] = #rts
for _, r in ipairs(rts) do
  local rm = margin_for(r[2], margin, margins, now)
  if rm > widest then widest = rm end
  local cs = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. s(now - (r[2] + rm)), '+inf')
  local charged = 0
  for _, m in ipairs(cs) do charged = charged + amount(m) end
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
  out[#out + 1] = charged
end
out[#out + 1] = widest
local names, order = {}, {}
if longest > 0 then
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. s(now - longest), '+inf')) do
    local name = string.match(m, '^[%x.]+/(.+)$')
    if name then
      if names[name] == nil then
        names[name] = 0
        order[#order + 1] = name
      end
      names[name] = names[name] + 1
    end
  end
end
out[#out + 1] = #order
for _, name in ipairs(order) do
  out[#out + 1] = name
  out[#out + 1] = names[name]
end
return out
