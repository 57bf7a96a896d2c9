-- KEYS: upload record, owner's upload reservations, store's upload index, upload lock
-- ARGV: upload id, now
-- Forgets an unfinished upload and releases its reservation. With now > 0 only if it
-- has expired by then and no request is writing it (that request records progress).
if tonumber(ARGV[2]) > 0 then
  local expires = redis.call('HGET', KEYS[1], 'expires')
  if expires and tonumber(expires) > tonumber(ARGV[2]) then return 0 end
  if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
