-- On a cluster: sends per user in one second (each counter's key names the user and the
-- second), shared by every node: a node adds the sends it let through (chat.send_limit) and
-- learns the totals (one Redis: rate_hash.lua).
-- KEYS: counters, of one slot. ARGV[i]: sends to add to KEYS[i]
-- Returns each counter after adding to it.
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCRBY', key, ARGV[i])
  if n == tonumber(ARGV[i]) then redis.call('PEXPIRE', key, 2000) end
  out[i] = n
end
return out
