-- A message that left the hot window (trim.lua), copied back from the history store for a
-- write to it (an edit, recall, reaction or thread reply: their scripts read it from MSGS);
-- it leaves again with the next trim once the store has the write.
-- KEYS[1]: meta, [2]: msgs, [3]: reactions, [4]: warm (set of seqs)
-- ARGV[1]: seq, [2]: the message as stored, [3]: its reactions (JSON, '' for none)
-- Returns 1 when copied, 0 when Redis has it (or it is not below the window).
local seq = ARGV[1]
if tonumber(seq) > tonumber(redis.call('HGET', KEYS[1], 'cold_seq') or '0') then return 0 end
if redis.call('HSETNX', KEYS[2], seq, ARGV[2]) == 0 then return 0 end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[3], seq, ARGV[3]) end
redis.call('SADD', KEYS[4], seq)
return 1
