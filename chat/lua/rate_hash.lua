-- On one Redis: sends per user in one second, all users' counters of that second in one hash
-- (field: user), shared by every node; a node adds the sends it let through
-- (chat.send_limit) and learns the totals. The send script adds to the same hash.
-- KEYS: the hashes (one per second). ARGV: triples (index of the hash in KEYS, user, sends);
-- [last]: the hashes' life in ms.
-- Returns each counter after adding to it.
local out = {}
local life = ARGV[#ARGV]
for i = 1, #ARGV - 1, 3 do
  out[#out + 1] = redis.call('HINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
end
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, life) end
return out
