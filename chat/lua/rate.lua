-- Sends per user in one second (the counter's key names the second), shared by every node:
-- a node adds the sends it let through (chat.send_limit) and learns the total.
-- KEYS[1]: counter. ARGV[1]: sends to add
-- Returns the counter after adding them.
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], 2000) end
return n
