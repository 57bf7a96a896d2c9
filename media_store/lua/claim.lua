-- KEYS: refs, orphans, deleting; ARGV: digest, ...
-- Marks unreferenced digests as being collected; a commit of the same digest waits.
local out = {}
for i = 1, #ARGV do
  redis.call('ZREM', KEYS[2], ARGV[i])
  local referenced = redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1
  if not referenced and redis.call('HEXISTS', KEYS[3], ARGV[i]) == 0 then
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i])
    out[#out + 1] = ARGV[i]
  end
end
return out
