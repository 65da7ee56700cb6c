-- Shared helpers, prepended to every script. Times and durations are integer
-- microseconds; Lua 5.1 numbers are doubles, exact up to 2^53 (year 2255 in µs).
local function s(x) return string.format('%d', x) end

-- The store's clock: Redis TIME, or the test-only override in `o` when not empty.
local function clock(o)
  if o ~= '' then return tonumber(o) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Members of the reservation and charge sets end in ':<amount in µs>'.
local function amount(m) return tonumber(string.match(m, ':(%d+)$')) end

-- The longest wait the server may impose, in µs: the caller's cap (StoreConfig::
-- max_server_wait), or a day when the argument is missing or not a positive number, so
-- a direct call without it cannot write a longer block either.
local DAY = 86400000000
local function wait_cap(o)
  local c = tonumber(o)
  if c == nil or c <= 0 then return DAY end
  return c
end

-- The state hash: b = calls blocked until, rb = running time blocked until,
-- l<per µs> = a learned limit (max calls per that period), m<holder> = the margin a
-- process (the part of its tickets before the dot) enforced at its latest admitted
-- call, as '<margin µs>:<admitted at µs>' (see `margin_for`).
-- What a process with an older script or a longer cap wrote is read through this
-- process's cap: a block ends at most `cap` from now, and a learned limit whose period
-- is longer than `cap` is ignored. With `heal`, such values are also rewritten (the
-- block to now + cap, so it ends within `cap` of the first time it is seen; the learned
-- limit deleted) and the hash's expiry shortened to what the rest needs.
local function read_state(key, now, cap, heal)
  local st = redis.call('HGETALL', key)
  local blocked, rblocked, learned, margins = 0, 0, {}, {}
  local fixes, drops = {}, {}
  for i = 1, #st, 2 do
    local f, v = st[i], tonumber(st[i + 1]) or 0
    if f == 'b' or f == 'rb' then
      if v > now + cap then
        v = now + cap
        fixes[#fixes + 1] = f
        fixes[#fixes + 1] = s(v)
      end
      if f == 'b' then blocked = v else rblocked = v end
    elseif string.sub(f, 1, 1) == 'l' then
      local per = tonumber(string.sub(f, 2))
      if per ~= nil and per > 0 and per <= cap and v > 0 then
        learned[#learned + 1] = { v, per }
      else
        drops[#drops + 1] = f
      end
    elseif string.sub(f, 1, 1) == 'm' then
      local m, seen = string.match(st[i + 1], '^(%d+):(%d+)$')
      if m ~= nil then
        margins[#margins + 1] = { string.sub(f, 2), tonumber(m), tonumber(seen) }
      else
        drops[#drops + 1] = f
      end
    end
  end
  if heal and (#fixes > 0 or #drops > 0) then
    if #fixes > 0 then redis.call('HSET', key, unpack(fixes)) end
    if #drops > 0 then redis.call('HDEL', key, unpack(drops)) end
    -- What is left lasts at most: a block of cap, a learned limit two of its periods
    -- (at most cap each) or a day.
    local ms = math.ceil(math.max(2 * cap, DAY) / 1000) + 1
    local pttl = redis.call('PTTL', key)
    if pttl < 0 or pttl > ms then redis.call('PEXPIRE', key, ms) end
  end
  table.sort(learned, function(x, y) return x[2] < y[2] end)
  return blocked, rblocked, learned, margins
end

-- The margin a window of `per` µs needs: `own` (the asking process's), or a wider one
-- another process published while its calls may still lie in such a window (its latest
-- admitted call less than `per` plus its margin ago). So one process on a bad link
-- widens every process's windows for as long as its calls count in them.
local function margin_for(per, own, margins, now)
  local m = own
  for _, x in ipairs(margins) do
    if x[2] > m and now - x[3] <= per + x[2] then m = x[2] end
  end
  return m
end

-- Publishes the margin of the process that made `ticket` at an admitted call (in the
-- state hash `key`), and forgets what processes published longer than `hold` µs ago
-- (the longest window and its margin: their calls count in no window any more).
local function publish_margin(key, ticket, margin, margins, now, hold)
  local holder = string.match(ticket, '^([^.]+)%.')
  local gone = {}
  for _, x in ipairs(margins) do
    if x[1] ~= holder and now - x[3] > hold + x[2] then gone[#gone + 1] = 'm' .. x[1] end
  end
  if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
  if holder == nil then return end
  redis.call('HSET', key, 'm' .. holder, s(margin) .. ':' .. s(now))
  local ms = math.ceil((hold + margin) / 1000) + 1
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end

-- Call windows from ARGV[a..] (n pairs of max, per), then the learned limits:
-- a learned limit lowers the window of the same period, or adds a window.
local function call_windows(a, n, learned)
  local wins = {}
  for _ = 1, n do
    local max, per = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    a = a + 2
    if max > 0 and per > 0 then wins[#wins + 1] = { max, per } end
  end
  for _, l in ipairs(learned) do
    local found = false
    for _, w in ipairs(wins) do
      if w[2] == l[2] then
        found = true
        if l[1] < w[1] then w[1] = l[1] end
      end
    end
    if not found then wins[#wins + 1] = { l[1], l[2] } end
  end
  return wins, a
end

-- Running-time windows from ARGV[a..] (n pairs of budget, per).
local function runtime_windows(a, n)
  local rts = {}
  for _ = 1, n do
    local budget, per = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
    a = a + 2
    if budget > 0 and per > 0 then rts[#rts + 1] = { budget, per } end
  end
  return rts, a
end
