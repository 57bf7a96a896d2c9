-- KEYS: meta, shared, usage, user media set, refs, orphans; ARGV: id, owner, now
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return 0 end
if owner ~= ARGV[2] then return -1 end
local fields = redis.call('HMGET', KEYS[1], 'size', 'digest', 'thumb_small', 'thumb_large', 'voice')
redis.call('DECRBY', KEYS[3], tonumber(fields[1]))
redis.call('SREM', KEYS[4], ARGV[1])
for i = 2, #fields do
  local digest = fields[i]
  if digest then
    if redis.call('HINCRBY', KEYS[5], digest, -1) <= 0 then
      redis.call('HDEL', KEYS[5], digest)
      redis.call('ZADD', KEYS[6], ARGV[3], digest)
    end
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
