-- KEYS[1] call hash, KEYS[2] members hash: the call's own keys, one hash tag.
-- ARGV: op, call, now_ms, actor, session, device, actor_name, ring_ms, keep_ms, ended_ms,
--       the live call the actor is in ('' for none), the live call the target is in ('' for
--       none; both read by calls.ringing just before), then per op: target, media, room,
--       capacity
-- RULES (a table, defined before this text): calls.state.RULES, rendered and prepended by
--       calls.ring_script, so Python and Lua check requests by the same table.
-- Returns {'error', code} with nothing written, or {'ok', payload, effects...}: what the change
-- means for keys of other hash tags, four strings each, applied by calls.ringing in order:
--   ring USER DEADLINE MEMBER   the ring into the deadline index and the user's ringing set
--   unring USER MEMBER ''       the ring out of both
--   unindex '' MEMBER ''        a stale entry out of the deadline index
--   mark USER MS ''             the user's call marker set to this call for MS
--   keepmark USER MS ''         the user's call marker kept MS longer, if it is this call's
--   release USER '' ''          the user's call marker deleted, if it is this call's
--   pub USER PAYLOAD ''         the transition published on the user's call channel
local op, id, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local actor, session, device, name = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local RING, KEEP, ENDED = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local actor_current, target_current = ARGV[11], ARGV[12]
local target, media, room, capacity = ARGV[13], ARGV[14], ARGV[15], tonumber(ARGV[16])
local touched = {}
local effects = {}

local function effect(kind, u, a, b)
  effects[#effects + 1] = kind
  effects[#effects + 1] = u
  effects[#effects + 1] = tostring(a or '')
  effects[#effects + 1] = tostring(b or '')
end
local function member(u)
  local raw = redis.call('HGET', KEYS[2], u)
  if raw then return cjson.decode(raw) end
  return nil
end
local function put(u, m)
  redis.call('HSET', KEYS[2], u, cjson.encode(m))
  touched[u] = true
end
local function keep(key, ms)
  local left = redis.call('PTTL', key)
  if left == -1 or (left >= 0 and left < ms) then redis.call('PEXPIRE', key, ms) end
end
local function index_member(u) return cjson.encode({id, u}) end
local function ring(u, deadline) effect('ring', u, deadline, index_member(u)) end
local function unring(u) effect('unring', u, index_member(u)) end
local function release(u) effect('release', u) end
local function counts()
  local joined, ringing = 0, 0
  local all = redis.call('HGETALL', KEYS[2])
  for i = 2, #all, 2 do
    local s = cjson.decode(all[i]).s
    if s == 'joined' then joined = joined + 1 elseif s == 'ringing' then ringing = ringing + 1 end
  end
  return joined, ringing
end
local function finish(reason)
  redis.call('HSET', KEYS[1], 'state', 'ended', 'reason', reason, 'ended_ms', now)
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    local u, m = all[i], cjson.decode(all[i + 1])
    if m.s == 'ringing' then
      m.s = 'cancelled'
      put(u, m)
      unring(u)
    elseif m.s == 'joined' then
      release(u)
    end
  end
  redis.call('PEXPIRE', KEYS[1], ENDED)
  redis.call('PEXPIRE', KEYS[2], ENDED)
end
-- After a member left: end the call unless it goes on (as calls.state.call_goes_on).
local function settle(reason)
  local joined, ringing = counts()
  if joined >= 2 or (joined >= 1 and ringing >= 1) then return end
  finish(reason)
end
local function publish(kind, subject, inviter, inviter_name, what, deadline)
  local call = redis.call('HGETALL', KEYS[1])
  local info = {}
  for i = 1, #call, 2 do info[call[i]] = call[i + 1] end
  local states, all = {}, redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do states[all[i]] = cjson.decode(all[i + 1]).s end
  local t = {call = id, kind = kind, actor = actor, session = session, device = device,
    subject = subject, inviter = inviter or '', inviter_name = inviter_name or '',
    media = what or info.media, room = info.room, state = info.state,
    reason = info.reason or '', deadline_ms = deadline or 0, members = states}
  for u, s in pairs(states) do
    if s == 'ringing' or s == 'joined' or touched[u] then
      t.to = u
      effect('pub', u, cjson.encode(t))
    end
  end
end
local function check(action)
  local state = redis.call('HGET', KEYS[1], 'state')
  local m = member(actor)
  if not state or not m then return nil, nil, 'unknown_call' end
  local rule = RULES[action]
  if not rule.calls[state] then return nil, nil, rule.call_err end
  if rule.caller_only and m.r ~= 'caller' then return nil, nil, rule.role_err end
  if not rule.members[m.s] then return nil, nil, rule.member_err end
  return state, m, nil
end
local function ok(payload) return {'ok', payload or '', unpack(effects)} end
local function refuse(code) return {'error', code} end

if op == 'invite' then
  if actor_current ~= '' then return refuse('already_in_call') end
  if target_current ~= '' then return refuse('busy') end
  if redis.call('EXISTS', KEYS[1]) == 1 then return refuse('internal') end
  redis.call('HSET', KEYS[1], 'state', 'ringing', 'caller', actor, 'media', media,
    'room', room, 'created_ms', now)
  put(actor, {s = 'joined', r = 'caller', k = session, d = device})
  local deadline = now + RING
  put(target, {s = 'ringing', r = 'callee', by = actor, bn = name, m = media, x = deadline})
  effect('mark', actor, RING + KEEP)
  ring(target, deadline)
  redis.call('PEXPIRE', KEYS[1], RING + KEEP)
  redis.call('PEXPIRE', KEYS[2], RING + KEEP)
  publish('invite', target, actor, name, media, deadline)
  return ok(room)
elseif op == 'add' then
  local state, m, err = check('invite')
  if err then return refuse(err) end
  local room_name = redis.call('HGET', KEYS[1], 'room')
  local tm = member(target)
  if tm and tm.s == 'ringing' then return ok(room_name) end
  if target_current ~= '' then return refuse('busy') end
  local joined, ringing = counts()
  if joined + ringing >= capacity then return refuse('room_full') end
  local deadline = now + RING
  put(target, {s = 'ringing', r = 'callee', by = actor, bn = name, m = media, x = deadline})
  ring(target, deadline)
  keep(KEYS[1], RING + KEEP)
  keep(KEYS[2], RING + KEEP)
  publish('invite', target, actor, name, media, deadline)
  return ok(room_name)
elseif op == 'accept' then
  local state, m, err = check('accept')
  if err then return refuse(err) end
  if actor_current ~= '' and actor_current ~= id then return refuse('already_in_call') end
  m.s, m.k, m.d = 'joined', session, device
  put(actor, m)
  unring(actor)
  effect('mark', actor, KEEP)
  if state == 'ringing' then
    redis.call('HSET', KEYS[1], 'state', 'accepted', 'accepted_ms', now)
  end
  keep(KEYS[1], KEEP)
  keep(KEYS[2], KEEP)
  publish('accept', actor, m.by, m.bn)
  return ok(redis.call('HGET', KEYS[1], 'room'))
elseif op == 'decline' then
  local state, m, err = check('decline')
  if err then return refuse(err) end
  m.s = 'declined'
  put(actor, m)
  unring(actor)
  settle('declined')
  publish('decline', actor, m.by, m.bn)
  return ok()
elseif op == 'cancel' then
  local state, m, err = check('cancel')
  if err then return refuse(err) end
  finish('cancelled')
  publish('cancel', '')
  return ok()
elseif op == 'hangup' or op == 'leave' then
  local m
  if op == 'hangup' then
    local state, err
    state, m, err = check('hangup')
    if err then return refuse(err) end
  else
    -- The connection that placed or accepted the call went away.
    local state = redis.call('HGET', KEYS[1], 'state')
    m = member(actor)
    if not state or not m or m.k ~= session or m.s ~= 'joined' then return ok('gone') end
    if state == 'ringing' then
      finish('cancelled')
      publish('cancel', '')
      return ok('cancelled')
    end
  end
  m.s = 'left'
  put(actor, m)
  release(actor)
  settle('hangup')
  publish('hangup', actor, m.by, m.bn)
  return ok()
elseif op == 'update' then
  local state, m, err = check('update')
  if err then return refuse(err) end
  redis.call('HSET', KEYS[1], 'media', media)
  publish('update', '')
  return ok()
elseif op == 'timeout' then
  local m = member(target)
  if not m or m.s ~= 'ringing' then
    effect('unindex', '', index_member(target))
    return ok('gone')
  end
  if m.x > now then return ok('alive') end
  m.s = 'missed'
  put(target, m)
  unring(target)
  settle('no_answer')
  publish('timeout', target, m.by, m.bn, m.m, m.x)
  return ok('expired')
elseif op == 'resume' then
  -- The same device is back on a new connection: it takes over its place in the call. Replies
  -- with the call's state (ringing: the device placed it, and it still rings), or 'gone'.
  local state = redis.call('HGET', KEYS[1], 'state')
  local m = member(actor)
  if (state ~= 'ringing' and state ~= 'accepted') or not m or m.s ~= 'joined'
      or m.d ~= device then
    return ok('gone')
  end
  m.k = session
  redis.call('HSET', KEYS[2], actor, cjson.encode(m))
  keep(KEYS[1], KEEP)
  keep(KEYS[2], KEEP)
  return ok(state)
elseif op == 'keepalive' then
  local state = redis.call('HGET', KEYS[1], 'state')
  local m = member(actor)
  if (state ~= 'ringing' and state ~= 'accepted') or not m or m.s ~= 'joined'
      or m.k ~= session then
    return ok('gone')
  end
  keep(KEYS[1], KEEP)
  keep(KEYS[2], KEEP)
  effect('keepmark', actor, KEEP)
  return ok('kept')
end
return redis.error_reply('unknown ringing op')
