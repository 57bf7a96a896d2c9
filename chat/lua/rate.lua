-- Sends per user in one second (the counter's key names the second), shared by every node.
-- KEYS[1]: counter. ARGV[1]: limit
-- Returns 1 when allowed, else 0.
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], 2000) end
if n > tonumber(ARGV[1]) then return 0 end
return 1
