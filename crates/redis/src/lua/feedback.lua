-- FEEDBACK. KEYS: state. ARGV: now override, retry after ('' = none), field ('b' calls or
-- 'rb' running time), learned max, learned per ('' = none).
-- blocked until = max(existing, now + retry after); a learned limit is kept when it is
-- new for its period or tighter, for a day after the latest feedback (or two of its
-- periods if longer). Returns now.
local now = clock(ARGV[1])
local ttl = 0
if ARGV[2] ~= '' then
  local untl = now + tonumber(ARGV[2])
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[3]) or '0')
  if untl > cur then
    redis.call('HSET', KEYS[1], ARGV[3], s(untl))
    cur = untl
  end
  ttl = cur - now
end
if ARGV[5] ~= '' then
  local max, per = tonumber(ARGV[4]), tonumber(ARGV[5])
  if max > 0 and per > 0 then
    local f = 'l' .. ARGV[5]
    local cur = redis.call('HGET', KEYS[1], f)
    if (not cur) or max < tonumber(cur) then redis.call('HSET', KEYS[1], f, ARGV[4]) end
    ttl = math.max(ttl, 2 * per, 86400000000)
  end
end
if ttl > 0 then
  local ms = math.ceil(ttl / 1000) + 1
  -- PTTL is -1 without an expiry: every key of this store gets one.
  if redis.call('PTTL', KEYS[1]) < ms then redis.call('PEXPIRE', KEYS[1], ms) end
end
return now
