-- Compare-and-set of one stored message (edit, recall) with its event. An edit keeps the
-- old version (keep 1); a recall (keep 0) deletes every earlier version. (Search terms live
-- in the history store, which applies the event.)
-- KEYS[1]: meta, [2]: msgs, [3]: events, [4]: the message's edits list
-- ARGV[1]: seq, [2]: old (stored) message, [3]: new message, [4]: ev_tpl, [5]: channel,
-- [6]: maxlen, [7]: keep
-- Returns {'ok', ev} or {'conflict'}. Runs after epoch.lua and log.lua.
local seq = ARGV[1]
if redis.call('HGET', KEYS[2], seq) ~= ARGV[2] then return {'conflict'} end
redis.call('HSET', KEYS[2], seq, ARGV[3])
if ARGV[7] == '1' then redis.call('RPUSH', KEYS[4], ARGV[2]) else redis.call('DEL', KEYS[4]) end
if redis.call('HGET', KEYS[1], 'last_seq') == seq then
  redis.call('HSET', KEYS[1], 'last', ARGV[3])
end
return {'ok', log_event(KEYS[1], KEYS[3], ARGV[5], ARGV[6], ARGV[4])}
