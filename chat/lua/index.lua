-- Search index of one conversation (chat.indexer): add the terms of the messages after
-- "ix_seq" of META (none: 0), up to ARGV[3], as read by the indexer while META's "ix_rev" was
-- ARGV[2]; an edit or recall of a message not indexed yet bumps "ix_rev" (rewrite.lua), so
-- terms read from a message's earlier text are never added.
-- KEYS[1]: meta, [2..]: term sets (sorted sets, score and member the seq)
-- ARGV[1]: ix_seq read, [2]: ix_rev read, [3]: new ix_seq, then for each term set in order:
-- how many seqs join it, and those seqs
-- Returns 1, or 0 when the messages changed meanwhile (read them again).
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
local ix = redis.call('HGET', KEYS[1], 'ix_seq') or '0'
if ix ~= ARGV[1] or (redis.call('HGET', KEYS[1], 'ix_rev') or '0') ~= ARGV[2] then
  return 0
end
local a = 4
for i = 2, #KEYS do
  local n = tonumber(ARGV[a])
  for j = a + 1, a + n do redis.call('ZADD', KEYS[i], ARGV[j], ARGV[j]) end
  a = a + n + 1
end
redis.call('HSET', KEYS[1], 'ix_seq', ARGV[3])
return 1
