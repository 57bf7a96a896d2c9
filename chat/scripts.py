"""Lua scripts for every chat write: each change is one script, so a crash leaves no half state.

A conversation's keys share one hash tag (``{conv:ID}``) and a user's keys another
(``{user:ID}``); each script touches the keys of one of them only.

Events and messages are encoded by Python before the script runs, with markers where the
numbers the script assigns go: ``"ev":-1`` (conversation event number), ``"fev":-1`` (feed
event number), ``"seq":-2`` (message sequence number), ``"read_seq":-2`` and ``"users":[]``.
A marker is found by its quoted key: inside a JSON string every quote is escaped, so message
text can never contain one. ``"epoch":""`` and ``"feed_epoch":""`` take the log's epoch.

Each log (a conversation's events, a user's feed) has an epoch beside its counter, made by
the script that writes the log's first event after the epoch went missing: with the
counter, when the keys were lost or Redis came back from a snapshot taken before the log
existed. A device's cursor carries it, so that numbers handed out again are never mistaken
for the events the device already has (see chat.resume).
"""

from __future__ import annotations

from typing import Final

# The epoch of the log whose counter is ``field`` of ``hash``, made when missing: the time
# with a random suffix, so that two lives of one log never share it.
_EPOCH: Final = """
local function log_epoch(hash, field)
  local e = redis.call('HGET', hash, field)
  if e then return e end
  local t = redis.call('TIME')
  e = string.format('%x%05x%04x', tonumber(t[1]), tonumber(t[2]), math.random(0, 65535))
  redis.call('HSET', hash, field, e)
  return e
end
"""

_PRELUDE: Final = (
    _EPOCH
    + """
local function log_event(meta, events, chan, maxlen, tpl)
  local ev = redis.call('HINCRBY', meta, 'last_ev', 1)
  local epoch = log_epoch(meta, 'epoch')
  local e = string.gsub(tpl, '"ev":%-1', '"ev":' .. ev, 1)
  e = string.gsub(e, '"epoch":""', '"epoch":"' .. epoch .. '"', 1)
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, ev .. '-1', 'e', e)
  redis.call('PUBLISH', chan, e)
  return ev
end

local function append_message(meta, msgs, events, chan, maxlen, ts, msg_tpl, ev_tpl)
  local seq = redis.call('HINCRBY', meta, 'last_seq', 1)
  local s = '"seq":' .. seq
  local msg = string.gsub(msg_tpl, '"seq":%-2', s, 1)
  redis.call('HSET', msgs, seq, msg)
  redis.call('HSET', meta, 'last_ts', ts, 'last', msg)
  local ev = log_event(meta, events, chan, maxlen, (string.gsub(ev_tpl, '"seq":%-2', s, 1)))
  return seq, ev
end
"""
)

# KEYS: meta members msgs cids events reads silenced threads thread_set term...
# ARGV: sender client_id ts msg_tpl ev_tpl chan maxlen root
SEND: Final = (
    _PRELUDE
    + """
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
local cid = sender .. '\\n' .. ARGV[2]
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
for i = 10, #KEYS do redis.call('ZADD', KEYS[i], seq, seq) end
return {'ok', seq, ev}
"""
)

# KEYS: meta members msgs events joined
# ARGV: kind name creator ts chan maxlen msg_tpl ev_tpl first_role member...
CREATE: Final = (
    _PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local n = #ARGV - 9
redis.call('HSET', KEYS[1], 'kind', ARGV[1], 'name', ARGV[2], 'creator', ARGV[3],
  'created', ARGV[4], 'last_seq', 0, 'last_ev', 0, 'count', n + 1)
redis.call('HSET', KEYS[2], ARGV[3], 'owner')
redis.call('HSET', KEYS[5], ARGV[3], ARGV[4])
for i = 10, #ARGV do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[9])
  redis.call('HSET', KEYS[5], ARGV[i], ARGV[4])
end
local seq, ev = append_message(KEYS[1], KEYS[3], KEYS[4], ARGV[5], ARGV[6], ARGV[4],
  ARGV[7], ARGV[8])
return {'ok', ev}
"""
)

# KEYS: meta members. ARGV: a b ts. Replies 1 while the users' lists still need the entry.
ENSURE_DIRECT: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'kind', 'direct', 'name', '', 'creator', ARGV[1],
    'created', ARGV[3], 'last_seq', 0, 'last_ev', 0, 'count', 2,
    'peers', ARGV[1] .. '\\n' .. ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], 'member', ARGV[2], 'member')
end
if redis.call('HEXISTS', KEYS[1], 'indexed') == 1 then return 0 end
return 1
"""

# Membership and settings of one conversation. The caller read the state first and encoded
# the system message for it; when the state it relied on changed since, this is a conflict.
# KEYS: meta members msgs events silenced joined
# ARGV: op actor ts chan maxlen msg_tpl ev_tpl max_members arg...
MEMBERS: Final = (
    _PRELUDE
    + """
local op, actor, ts = ARGV[1], ARGV[2], ARGV[3]
local kind = redis.call('HGET', KEYS[1], 'kind')
if not kind then return {'unknown_conversation'} end
local role = redis.call('HGET', KEYS[2], actor)
local function admin(r) return r == 'owner' or r == 'admin' end
local function log_system()
  local seq, ev = append_message(KEYS[1], KEYS[3], KEYS[4], ARGV[4], ARGV[5], ts, ARGV[6], ARGV[7])
  return ev
end
local users = {}
for i = 9, #ARGV do users[#users + 1] = ARGV[i] end
if op == 'follow' then
  if kind ~= 'channel' then return {'forbidden'} end
  if role then return {'ok', 0} end
  redis.call('HSET', KEYS[2], actor, 'follower')
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
  return {'ok', log_system()}
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
  return {'ok', 0}
end
return {'bad_op'}
"""
)

# Compare-and-set of one stored message (edit, recall) with its index terms and event. An
# edit keeps the old version (keep 1); a recall (keep 0) deletes every earlier version.
# KEYS: meta msgs events edits term... ARGV: seq old new ev_tpl chan maxlen keep n_remove
REWRITE: Final = (
    _PRELUDE
    + """
local seq = ARGV[1]
if redis.call('HGET', KEYS[2], seq) ~= ARGV[2] then return {'conflict'} end
redis.call('HSET', KEYS[2], seq, ARGV[3])
if ARGV[7] == '1' then redis.call('RPUSH', KEYS[4], ARGV[2]) else redis.call('DEL', KEYS[4]) end
if redis.call('HGET', KEYS[1], 'last_seq') == seq then
  redis.call('HSET', KEYS[1], 'last', ARGV[3])
end
local n = tonumber(ARGV[8])
for i = 5, 4 + n do redis.call('ZREM', KEYS[i], seq) end
for i = 5 + n, #KEYS do redis.call('ZADD', KEYS[i], seq, seq) end
return {'ok', log_event(KEYS[1], KEYS[3], ARGV[5], ARGV[6], ARGV[4])}
"""
)

# KEYS: meta members msgs reactions events. ARGV: user seq emoji add ev_tpl chan maxlen max
REACT: Final = (
    _PRELUDE
    + """
local user, seq, emoji = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HEXISTS', KEYS[2], user) == 0 then return {'not_member'} end
local m = redis.call('HGET', KEYS[3], seq)
if not m then return {'unknown_message'} end
if string.find(m, '"recalled":true', 1, true) then return {'recalled'} end
local raw = redis.call('HGET', KEYS[4], seq)
local t = {}
if raw then t = cjson.decode(raw) end
local users = t[emoji] or {}
local at = nil
for i, u in ipairs(users) do if u == user then at = i end end
if ARGV[4] == '1' then
  if at then return {'ok', 0} end
  if not t[emoji] then
    local kinds = 0
    for _ in pairs(t) do kinds = kinds + 1 end
    if kinds >= tonumber(ARGV[8]) then return {'too_many'} end
  end
  users[#users + 1] = user
else
  if not at then return {'ok', 0} end
  table.remove(users, at)
end
if #users == 0 then t[emoji] = nil else t[emoji] = users end
if next(t) == nil then redis.call('HDEL', KEYS[4], seq)
else redis.call('HSET', KEYS[4], seq, cjson.encode(t)) end
local arr = '[]'
if #users > 0 then arr = cjson.encode(users) end
local tpl = string.gsub(ARGV[5], '"users":%[%]', function() return '"users":' .. arr end, 1)
return {'ok', log_event(KEYS[1], KEYS[5], ARGV[6], ARGV[7], tpl)}
"""
)

# KEYS: meta members reads events. ARGV: user seq ev_tpl chan maxlen
# Replies {'ok', ev or 0, read_seq, kind, moved}; ev is 0 when nothing moved or the
# conversation is a channel (whose receipts go to the reader's own feed only).
READ: Final = (
    _PRELUDE
    + """
local user = ARGV[1]
if redis.call('HEXISTS', KEYS[2], user) == 0 then return {'not_member'} end
local kind = redis.call('HGET', KEYS[1], 'kind')
local last = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '0')
local s = math.min(tonumber(ARGV[2]), last)
local cur = tonumber(redis.call('HGET', KEYS[3], user) or '0')
if s <= cur then return {'ok', 0, cur, kind, 0} end
redis.call('HSET', KEYS[3], user, s)
if kind == 'channel' then return {'ok', 0, s, kind, 1} end
local tpl = string.gsub(ARGV[3], '"read_seq":%-2', '"read_seq":' .. s, 1)
return {'ok', log_event(KEYS[1], KEYS[4], ARGV[4], ARGV[5], tpl), s, kind, 1}
"""
)

# One user's conversation list (conversation -> the event number they joined at), settings
# and feed. KEYS: state convs muted blocked feed. ARGV: op arg ev_tpl chan maxlen joined_ev
# Replies the feed event number, or 0 when the change was already made.
USER: Final = (
    _EPOCH
    + """
local op, arg = ARGV[1], ARGV[2]
local changed
if op == 'join' then changed = redis.call('HSETNX', KEYS[2], arg, ARGV[6])
elseif op == 'leave' then changed = redis.call('HDEL', KEYS[2], arg)
elseif op == 'mute' then changed = redis.call('SADD', KEYS[3], arg)
elseif op == 'unmute' then changed = redis.call('SREM', KEYS[3], arg)
elseif op == 'block' then changed = redis.call('SADD', KEYS[4], arg)
elseif op == 'unblock' then changed = redis.call('SREM', KEYS[4], arg)
elseif op == 'event' then changed = 1
else return -1 end
if changed == 0 then return 0 end
local fev = redis.call('HINCRBY', KEYS[1], 'fev', 1)
local epoch = log_epoch(KEYS[1], 'fepoch')
local e = string.gsub(ARGV[3], '"fev":%-1', '"fev":' .. fev, 1)
e = string.gsub(e, '"feed_epoch":""', '"feed_epoch":"' .. epoch .. '"', 1)
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], fev .. '-1', 'e', e)
redis.call('PUBLISH', ARGV[4], e)
return fev
"""
)

# A node saw a log go back in time (Redis restored from an older snapshot): its numbers
# will be handed out again, so its epoch is replaced unless another node did it already.
# KEYS: hash. ARGV: epoch field, the epoch the node knew ('' for none), counter field.
# Replies the epoch now (''  when the log is gone: its next event makes one).
ROTATE_EPOCH: Final = (
    _EPOCH
    + """
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if cur ~= ARGV[2] then return cur end
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 0 then return '' end
redis.call('HDEL', KEYS[1], ARGV[1])
return log_epoch(KEYS[1], ARGV[1])
"""
)

# Sends per user in one second (the counter's key names the second), shared by every node.
# KEYS: counter. ARGV: limit. Replies 1 when allowed.
RATE: Final = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], 2000) end
if n > tonumber(ARGV[1]) then return 0 end
return 1
"""

# Search (chat.search, read only): the seqs present in every term set of one conversation.
# KEYS: the query's term sets. ARGV: below (a score bound), want, budget.
# Replies {next bound or '', seq...}: seqs present in every set, newest first.
INTERSECT: Final = """
local best, size = nil, nil
for i, key in ipairs(KEYS) do
  local n = redis.call('ZCARD', key)
  if n == 0 then return {''} end
  if not size or n < size then best, size = i, n end
end
local want, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local out, cursor, seen = {''}, ARGV[1], 0
while true do
  local page = redis.call('ZREVRANGEBYSCORE', KEYS[best], cursor, '-inf', 'LIMIT', 0, 500)
  local examined = 0
  for _, member in ipairs(page) do
    local everywhere = true
    for i, key in ipairs(KEYS) do
      if i ~= best and not redis.call('ZSCORE', key, member) then everywhere = false break end
    end
    if everywhere then out[#out + 1] = member end
    cursor = '(' .. member
    examined = examined + 1
    if #out - 1 >= want then break end
  end
  seen = seen + examined
  if #page < 500 and examined == #page then return out end  -- nothing older is left
  if #out - 1 >= want or seen >= budget then break end
end
out[1] = cursor
return out
"""
