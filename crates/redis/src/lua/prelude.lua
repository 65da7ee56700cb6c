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

-- The state hash: b = calls blocked until, rb = running time blocked until,
-- l<per µs> = a learned limit (max calls per that period).
local function read_state(key)
  local st = redis.call('HGETALL', key)
  local blocked, rblocked, learned = 0, 0, {}
  for i = 1, #st, 2 do
    local f = st[i]
    if f == 'b' then blocked = tonumber(st[i + 1])
    elseif f == 'rb' then rblocked = tonumber(st[i + 1])
    elseif string.sub(f, 1, 1) == 'l' then
      learned[#learned + 1] = { tonumber(st[i + 1]), tonumber(string.sub(f, 2)) }
    end
  end
  table.sort(learned, function(x, y) return x[2] < y[2] end)
  return blocked, rblocked, learned
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
