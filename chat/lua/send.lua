-- chat.send: append one message (or thread reply) to a conversation, once per client_id.
-- KEYS[1]: meta, [2]: members (user -> role), [3]: msgs, [4]: cids (sender\nclient_id ->
-- seq), [5]: events, [6]: reads, [7]: silenced, [8]: threads, [9]: blocks (a direct
-- conversation's copy of its users' blocks: the users who blocked the other one; meta's
-- "blocks" field says the copy is made, see direct_blocks.lua)
-- (search terms are indexed by the history store, which applies the event)
-- ARGV[1]: sender, [2]: client_id, [3]: ts, [4]: msg_tpl, [5]: ev_tpl, [6]: channel,
-- [7]: maxlen, [8]: the seq replied to (0 for none), [9]: 1 to refuse a sender the other
-- user of a direct conversation blocked, [10]: the conversation's key prefix (thread:ROOT)
-- A reply's thread root (the message replied to, or its own root) goes into both templates
-- at their "reply_to":-3 marker.
-- Returns {'ok', seq, ev}, {'duplicate', seq}, {'silenced', until}, {'blocks_unknown'} (the
-- copy of the blocks is to be made first), {'unknown_message', seq} (not in Redis: it may
-- have left the hot window) or {refusal code}.
-- Runs after epoch.lua and log.lua.
local sender = ARGV[1]
local role = redis.call('HGET', KEYS[2], sender)
if not role then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_conversation'} end
  return {'not_member'}
end
-- In the order docs/protocol.md gives for chat.send: blocks, the message replied to, then a
-- follower's and a silenced member's refusals, then the client_id.
local info = redis.call('HMGET', KEYS[1], 'kind', 'blocks')
if info[1] == 'direct' and ARGV[9] == '1' then
  if not info[2] then return {'blocks_unknown'} end
  -- Only two users: a blocker other than the sender is the one the message is for.
  local blockers = redis.call('SCARD', KEYS[9])
  if blockers > 1 or (blockers == 1 and redis.call('SISMEMBER', KEYS[9], sender) == 0) then
    return {'blocked'}
  end
end
local msg_tpl, ev_tpl = ARGV[4], ARGV[5]
local root = tonumber(ARGV[8])
if root > 0 then
  local r = redis.call('HGET', KEYS[3], root)
  if not r then return {'unknown_message', root} end
  -- A reply to a reply joins its thread. Inside a JSON string every quote is escaped, so
  -- the key is found only as the message's own field.
  local parent = string.match(r, '"reply_to":(%d+)')
  if parent then
    root = tonumber(parent)
    if redis.call('HEXISTS', KEYS[3], root) == 0 then return {'unknown_message', root} end
  end
  local at = '"reply_to":' .. root
  msg_tpl = string.gsub(msg_tpl, '"reply_to":%-3', at, 1)
  ev_tpl = string.gsub(ev_tpl, '"reply_to":%-3', at, 1)
end
if role ~= 'owner' and role ~= 'admin' and info[1] == 'channel' then return {'forbidden'} end
local ts = tonumber(ARGV[3])
local silenced = redis.call('HGET', KEYS[7], sender)
if silenced and tonumber(silenced) > ts then return {'silenced', silenced} end
local cid = sender .. '\n' .. ARGV[2]
local prev = redis.call('HGET', KEYS[4], cid)
if prev then return {'duplicate', prev} end
local seq, ev = append_message(KEYS[1], KEYS[3], KEYS[5], ARGV[6], ARGV[7], ts, msg_tpl, ev_tpl)
redis.call('HSET', KEYS[4], cid, seq)
local read = tonumber(redis.call('HGET', KEYS[6], sender) or '0')
if seq > read then redis.call('HSET', KEYS[6], sender, seq) end
if root > 0 then
  redis.call('ZADD', ARGV[10] .. 'thread:' .. root, seq, seq)
  redis.call('HINCRBY', KEYS[8], root .. ':n', 1)
  redis.call('HSET', KEYS[8], root .. ':last', seq)
end
return {'ok', seq, ev}
