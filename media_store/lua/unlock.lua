-- Releases a lock only if it is still the caller's (it may have timed out and been taken).
-- KEYS[1]: the lock; ARGV[1]: the caller's token
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
