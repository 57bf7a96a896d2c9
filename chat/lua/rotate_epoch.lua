-- A node saw a log go back in time (Redis restored from an older snapshot): its numbers
-- will be handed out again, so its epoch is replaced unless another node did it already.
-- KEYS[1]: the log's hash
-- ARGV[1]: epoch field, [2]: the epoch the node knew ('' for none), [3]: counter field
-- Returns the epoch now ('' when the log is gone: its next event makes one).
-- Runs after epoch.lua.
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if cur ~= ARGV[2] then return cur end
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 0 then return '' end
redis.call('HDEL', KEYS[1], ARGV[1])
return log_epoch(KEYS[1], ARGV[1])
