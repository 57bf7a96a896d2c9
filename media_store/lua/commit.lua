-- KEYS: meta, usage, user media set, refs, orphans, deleting,
--       owner's upload reservations, upload record, store's upload expiry index
-- ARGV: id, size, quota, n_fields, field, value, ..., digest, ...
-- A file that was a resumable upload (same id) gives back its reservation as it is
-- charged: the quota is checked without it, and it is released exactly once.
-- Runs after reserved.lua (the sum of an owner's upload reservations).
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
local n = tonumber(ARGV[4])
local first_digest = 5 + 2 * n
for i = first_digest, #ARGV do
  if redis.call('HEXISTS', KEYS[6], ARGV[i]) == 1 then return {-2} end
end
local size = tonumber(ARGV[2])
local quota = tonumber(ARGV[3])
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
local others = reserved(KEYS[7]) - tonumber(redis.call('HGET', KEYS[7], ARGV[1]) or '0')
if quota > 0 and used + others + size > quota then return {-3, used + others} end
redis.call('HDEL', KEYS[7], ARGV[1])
redis.call('DEL', KEYS[8])
redis.call('ZREM', KEYS[9], ARGV[1])
redis.call('INCRBY', KEYS[2], size)
redis.call('SADD', KEYS[3], ARGV[1])
local fields = {}
for i = 5, first_digest - 1 do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local previous = {0}
for i = first_digest, #ARGV do
  previous[#previous + 1] = redis.call('HINCRBY', KEYS[4], ARGV[i], 1) - 1
  redis.call('ZREM', KEYS[5], ARGV[i])
end
return previous
