-- COMPLETE. KEYS: reservations, charges. ARGV: now override, ticket, reserved, actual, ttl ms.
-- Releases the reservation and charges the actual running time now. Returns now.
if ARGV[3] ~= '0' then redis.call('ZREM', KEYS[1], ARGV[2] .. ':' .. ARGV[3]) end
local actual = tonumber(ARGV[4])
if actual <= 0 then return 0 end
local now = clock(ARGV[1])
redis.call('ZADD', KEYS[2], s(now), ARGV[2] .. ':' .. ARGV[4])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[5]) then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
return now
