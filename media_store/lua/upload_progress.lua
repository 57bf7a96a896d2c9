-- KEYS: upload record, store's upload index; ARGV: upload id, offset, expires
-- Records where the upload's file stands. Progress puts its expiry back to the full
-- delay: an upload expires when it has been idle that long, not when it is slow.
-- An upload released meanwhile (terminated, expired) is not brought back.
local before = redis.call('HGET', KEYS[1], 'offset')
if not before then return 0 end
redis.call('HSET', KEYS[1], 'offset', ARGV[2])
if tonumber(ARGV[2]) > tonumber(before) then
  redis.call('HSET', KEYS[1], 'expires', ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
return 1
