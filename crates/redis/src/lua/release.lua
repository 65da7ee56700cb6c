-- RELEASE. KEYS: calls, reservations. ARGV: ticket, reserved.
-- Returns how many entries were removed (0 when the ticket's entries already left).
local n = redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] ~= '0' then n = n + redis.call('ZREM', KEYS[2], ARGV[1] .. ':' .. ARGV[2]) end
return n
