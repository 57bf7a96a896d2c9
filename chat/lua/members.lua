-- Membership and settings of one conversation (follow, unfollow, add, remove, leave, role,
-- rename, silence). The caller read the state first and encoded the system message for it;
-- when the state it relied on changed since, this is a conflict.
-- KEYS[1]: meta, [2]: members, [3]: msgs, [4]: events, [5]: silenced, [6]: joined,
-- [7]: reads (a user added or following starts with what came before read: history, not
-- unread; the message saying they were added is unread)
-- ARGV[1]: op, [2]: actor, [3]: ts, [4]: channel, [5]: maxlen, [6]: msg_tpl, [7]: ev_tpl,
-- [8]: max_members, [9..]: the op's arguments (users; or new owner; or user, role / until)
-- Returns {'ok', ev or 0} (follow: the log's last event number) or {refusal code}.
-- Runs after epoch.lua and log.lua.
local op, actor, ts = ARGV[1], ARGV[2], ARGV[3]
local kind = redis.call('HGET', KEYS[1], 'kind')
if not kind then return {'unknown_conversation'} end
local role = redis.call('HGET', KEYS[2], actor)
local function admin(r) return r == 'owner' or r == 'admin' end
local function log_system()
  local seq, ev = append_message(KEYS[1], KEYS[3], KEYS[4], ARGV[4], ARGV[5], ts, ARGV[6], ARGV[7])
  return ev, seq
end
-- Meta's "silenced": how many entries silenced holds (send.lua skips the key at 0).
local function count_silenced() redis.call('HSET', KEYS[1], 'silenced', redis.call('HLEN', KEYS[5])) end
local users = {}
for i = 9, #ARGV do users[#users + 1] = ARGV[i] end
if op == 'follow' then
  if kind ~= 'channel' then return {'forbidden'} end
  if role then return {'ok', 0} end
  redis.call('HSET', KEYS[2], actor, 'follower')
  redis.call('HSET', KEYS[7], actor, tonumber(redis.call('HGET', KEYS[1], 'last_seq') or 0))
  redis.call('HINCRBY', KEYS[1], 'count', 1)
  return {'ok', tonumber(redis.call('HGET', KEYS[1], 'last_ev'))}
end
if not role then return {'not_member'} end
if op == 'unfollow' then
  if role ~= 'follower' then return {'forbidden'} end
  redis.call('HDEL', KEYS[2], actor)
  redis.call('HINCRBY', KEYS[1], 'count', -1)
  return {'ok', 0}
end
if kind == 'direct' then return {'forbidden'} end
if op == 'add' then
  if kind ~= 'group' or not admin(role) then return {'forbidden'} end
  for _, u in ipairs(users) do
    if redis.call('HEXISTS', KEYS[2], u) == 1 then return {'conflict'} end
  end
  local count = tonumber(redis.call('HGET', KEYS[1], 'count'))
  if count + #users > tonumber(ARGV[8]) then return {'conversation_full'} end
  for _, u in ipairs(users) do
    redis.call('HSET', KEYS[2], u, 'member')
    redis.call('HSET', KEYS[6], u, ts)
  end
  redis.call('HINCRBY', KEYS[1], 'count', #users)
  local ev, seq = log_system()
  for _, u in ipairs(users) do redis.call('HSET', KEYS[7], u, seq - 1) end
  return {'ok', ev}
end
if op == 'remove' then
  if not admin(role) then return {'forbidden'} end
  for _, u in ipairs(users) do
    local r = redis.call('HGET', KEYS[2], u)
    if not r then return {'conflict'} end
    if r == 'owner' or (r == 'admin' and role ~= 'owner') then return {'forbidden'} end
  end
  for _, u in ipairs(users) do
    redis.call('HDEL', KEYS[2], u)
    redis.call('HDEL', KEYS[5], u)
    redis.call('HDEL', KEYS[6], u)
  end
  count_silenced()
  redis.call('HINCRBY', KEYS[1], 'count', -#users)
  return {'ok', log_system()}
end
if op == 'leave' then
  -- users[1]: who becomes owner when the owner leaves ('' when nobody is left)
  if role == 'owner' and users[1] ~= '' then
    if not redis.call('HGET', KEYS[2], users[1]) then return {'conflict'} end
    redis.call('HSET', KEYS[2], users[1], 'owner')
  end
  redis.call('HDEL', KEYS[2], actor)
  redis.call('HDEL', KEYS[6], actor)
  redis.call('HINCRBY', KEYS[1], 'count', -1)
  return {'ok', log_system()}
end
if op == 'role' then
  if role ~= 'owner' then return {'forbidden'} end
  local r = redis.call('HGET', KEYS[2], users[1])
  if not r then return {'not_member'} end
  if r == 'owner' then return {'forbidden'} end
  redis.call('HSET', KEYS[2], users[1], users[2])
  return {'ok', log_system()}
end
if op == 'rename' then
  if not admin(role) then return {'forbidden'} end
  redis.call('HSET', KEYS[1], 'name', users[1])
  return {'ok', log_system()}
end
if op == 'silence' then
  if not admin(role) then return {'forbidden'} end
  local r = redis.call('HGET', KEYS[2], users[1])
  if not r then return {'not_member'} end
  if r == 'owner' or (r == 'admin' and role ~= 'owner') then return {'forbidden'} end
  if tonumber(users[2]) > 0 then
    redis.call('HSET', KEYS[5], users[1], users[2])
  else
    redis.call('HDEL', KEYS[5], users[1])
  end
  count_silenced()
  return {'ok', 0}
end
return {'bad_op'}
