-- KEYS: upload record, owner's upload reservations, owner's usage, store's upload index
-- ARGV: upload id, owner, length, name, expires, quota, max open uploads
-- Mirrors media_store.quota.reservation_error; returns {created, used, reserved, open}.
-- Runs after reserved.lua (the sum of an owner's upload reservations).
local open = redis.call('HLEN', KEYS[2])
local held = reserved(KEYS[2])
local used = tonumber(redis.call('GET', KEYS[3]) or '0')
local quota = tonumber(ARGV[6])
if open >= tonumber(ARGV[7]) or (quota > 0 and used + held + tonumber(ARGV[3]) > quota) then
  return {0, used, held, open}
end
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'length', ARGV[3], 'offset', 0,
           'name', ARGV[4], 'expires', ARGV[5])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
return {1, used, held, open}
