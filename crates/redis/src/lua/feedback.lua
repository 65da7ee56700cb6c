-- FEEDBACK. KEYS: state (learned limits), the hash of the block (the state itself for
-- calls; the running-time state for running time, the tenant's by default).
-- ARGV: now override, retry after ('' = none), field ('b' calls or
-- 'rb' running time), learned max, learned per ('' = none), the cap on server waits
-- ('' = a day).
-- blocked until = max(existing, now + min(retry after, cap)), an existing block longer
-- than the cap being read as now + cap; a learned limit is kept when its period is at
-- most the cap and it is new for its period or tighter, for a day after the latest
-- feedback (or two of its periods if longer). Whatever a 429 says, no block lasts
-- longer than the cap. Returns now.
local now = clock(ARGV[1])
local cap = wait_cap(ARGV[6])
-- PTTL is -1 without an expiry: every key of this store gets one.
local function keep(key, ttl)
  local ms = math.ceil(ttl / 1000) + 1
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
if ARGV[2] ~= '' then
  local untl = now + math.min(tonumber(ARGV[2]), cap)
  local stored = tonumber(redis.call('HGET', KEYS[2], ARGV[3]) or '0') or 0
  local cur = math.min(stored, now + cap)
  if untl > cur then cur = untl end
  if cur ~= stored then redis.call('HSET', KEYS[2], ARGV[3], s(cur)) end
  if cur > now then keep(KEYS[2], cur - now) end
end
if ARGV[5] ~= '' then
  local max, per = tonumber(ARGV[4]), tonumber(ARGV[5])
  if max > 0 and per > 0 and per <= cap then
    local f = 'l' .. ARGV[5]
    local cur = redis.call('HGET', KEYS[1], f)
    if (not cur) or max < tonumber(cur) then redis.call('HSET', KEYS[1], f, ARGV[4]) end
    keep(KEYS[1], math.max(2 * per, DAY))
  end
end
return now
