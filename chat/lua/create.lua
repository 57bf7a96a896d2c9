-- Create a group or channel with its first (system) message.
-- KEYS[1]: meta, [2]: members, [3]: msgs, [4]: events, [5]: joined (user -> ts)
-- ARGV[1]: kind, [2]: name, [3]: creator, [4]: ts, [5]: channel, [6]: maxlen,
-- [7]: msg_tpl, [8]: ev_tpl, [9]: the role of the others, [10..]: the other members
-- Returns {'ok', ev} or {'exists'}. Runs after epoch.lua and log.lua.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local n = #ARGV - 9
redis.call('HSET', KEYS[1], 'kind', ARGV[1], 'name', ARGV[2], 'creator', ARGV[3],
  'created', ARGV[4], 'last_seq', 0, 'last_ev', 0, 'count', n + 1, 'silenced', 0)
redis.call('HSET', KEYS[2], ARGV[3], 'owner')
redis.call('HSET', KEYS[5], ARGV[3], ARGV[4])
for i = 10, #ARGV do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[9])
  redis.call('HSET', KEYS[5], ARGV[i], ARGV[4])
end
local seq, ev = append_message(KEYS[1], KEYS[3], KEYS[4], ARGV[5], ARGV[6], ARGV[4],
  ARGV[7], ARGV[8])
return {'ok', ev}
