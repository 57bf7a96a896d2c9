-- chat.send: append one message (or thread reply) to a conversation, once per client_id.
-- KEYS[1]: meta, [2]: members (user -> role), [3]: msgs, [4]: cids (sender\nclient_id ->
-- seq), [5]: events, [6]: reads, [7]: silenced, [8]: threads, [9]: the thread's set
-- (search terms are indexed by the history store, which applies the event)
-- ARGV[1]: sender, [2]: client_id, [3]: ts, [4]: msg_tpl, [5]: ev_tpl, [6]: channel,
-- [7]: maxlen, [8]: thread root seq (0 for none)
-- Returns {'ok', seq, ev}, {'duplicate', seq}, {'silenced', until} or {refusal code}.
-- Runs after epoch.lua and log.lua.
local sender = ARGV[1]
local role = redis.call('HGET', KEYS[2], sender)
if not role then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_conversation'} end
  return {'not_member'}
end
if role ~= 'owner' and role ~= 'admin' and redis.call('HGET', KEYS[1], 'kind') == 'channel' then
  return {'forbidden'}
end
local ts = tonumber(ARGV[3])
local silenced = redis.call('HGET', KEYS[7], sender)
if silenced and tonumber(silenced) > ts then return {'silenced', silenced} end
local cid = sender .. '\n' .. ARGV[2]
local prev = redis.call('HGET', KEYS[4], cid)
if prev then return {'duplicate', prev} end
local root = tonumber(ARGV[8])
if root > 0 then
  local r = redis.call('HGET', KEYS[3], root)
  if not r then return {'unknown_message'} end
  if string.find(r, '"reply_to":', 1, true) then return {'conflict'} end
end
local seq, ev = append_message(KEYS[1], KEYS[3], KEYS[5], ARGV[6], ARGV[7], ts, ARGV[4], ARGV[5])
redis.call('HSET', KEYS[4], cid, seq)
local read = tonumber(redis.call('HGET', KEYS[6], sender) or '0')
if seq > read then redis.call('HSET', KEYS[6], sender, seq) end
if root > 0 then
  redis.call('ZADD', KEYS[9], seq, seq)
  redis.call('HINCRBY', KEYS[8], root .. ':n', 1)
  redis.call('HSET', KEYS[8], root .. ':last', seq)
end
return {'ok', seq, ev}
