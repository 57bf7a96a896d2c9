-- chat.send: append one message (or thread reply) to a conversation, once per client_id.
-- KEYS[1]: meta, [2] (on one Redis only: another slot): the send counters of this second
-- (chat.send_limit; a hash, field: user), the sender's of which the send is added to first,
-- whatever its outcome, and whose total then leads the reply (an error reply has none). The conversation's
-- other keys are its key prefix (ARGV[13]) and their names: members (user -> role), msgs, cids (sender\nclient_id -> seq), events, reads,
-- silenced, threads, blocks (a direct conversation's copy of its users' blocks: the users
-- who blocked the other one; meta's "blocks" field says the copy is made, see
-- direct_blocks.lua, and its "blockers" how many it holds), thread:ROOT, chan (the channel)
-- Meta's "silenced" field is the number of entries in silenced (members.lua): at 0 there is
-- nothing to look up. A direct conversation has no silenced members (members.lua refuses
-- it). A count missing (kept since direct_blocks.lua and members.lua write it; older data
-- lacks it) is read from the key once and written.
-- (search terms are indexed by the history store, which applies the event)
-- ARGV[1]: sender, [2]: client_id, [3]: ts, [4], [5]: the message encoded, before and
-- after its seq, [6]..[10]: the message event encoded, in the pieces around its event
-- number, epoch, stamp and message (chat.store.event_pieces), [11]: maxlen, [12]: the seq
-- replied to (0 for none), [13]: the conversation's key prefix, [14]: 1 to refuse a sender
-- the other user of a direct conversation blocked, [15]: the counters' life in ms, set when
-- not 0 (with KEYS[2]: a node sets it until one of its sends of the second came back)
-- A reply's thread root (the message replied to, or its own root) goes into the message
-- at its "reply_to":-3 marker.
-- Returns {'ok', seq, ev}, {'duplicate', seq}, {'silenced', until}, {'blocks_unknown'} (the
-- copy of the blocks is to be made first), {'unknown_message', seq} (not in Redis: it may
-- have left the hot window) or {refusal code}.
-- Runs after epoch.lua. The script writes what log.lua's append_message does (the message,
-- the meta's counters and last message, the event logged and published), with the numbers
-- read once and written in one HSET: the send is the hot path, each command is a cost.
local function send()
  local sender = ARGV[1]
  local prefix = ARGV[13]
  local info = redis.call('HMGET', KEYS[1], 'kind', 'blocks', 'last_seq', 'last_ev', 'epoch',
    'blockers', 'silenced', 'peers')
  if not info[1] then return {'unknown_conversation'} end
  local direct = info[1] == 'direct'
  local role
  local peers = info[8]
  if direct and peers then
    -- A direct conversation's members are its two peers ("a\nb"), for good (members.lua
    -- changes none of them): no look-up in members.
    local n = #sender + 1
    if string.sub(peers, 1, n) == sender .. '\n' or string.sub(peers, -n) == '\n' .. sender then
      role = 'member'
    end
  else
    role = redis.call('HGET', prefix .. 'members', sender)
  end
  if not role then return {'not_member'} end
  -- In the order docs/protocol.md gives for chat.send: blocks, the message replied to, then a
  -- follower's and a silenced member's refusals, then the client_id.
  if direct and ARGV[14] == '1' then
    if not info[2] then return {'blocks_unknown'} end
    -- Only two users: a blocker other than the sender is the one the message is for.
    local blockers = tonumber(info[6])
    local blocks = prefix .. 'blocks'
    if not blockers then
      blockers = redis.call('SCARD', blocks)
      redis.call('HSET', KEYS[1], 'blockers', blockers)
    end
    if blockers > 1 or (blockers == 1 and redis.call('SISMEMBER', blocks, sender) == 0) then
      return {'blocked'}
    end
  end
  local msg_head, msg_tail = ARGV[4], ARGV[5]
  local msgs = prefix .. 'msgs'
  local root = tonumber(ARGV[12])
  if root > 0 then
    local r = redis.call('HGET', msgs, root)
    if not r then return {'unknown_message', root} end
    -- A reply to a reply joins its thread. Inside a JSON string every quote is escaped, so
    -- the key is found only as the message's own field.
    local parent = string.match(r, '"reply_to":(%d+)')
    if parent then
      root = tonumber(parent)
      if redis.call('HEXISTS', msgs, root) == 0 then return {'unknown_message', root} end
    end
    local at = '"reply_to":' .. root
    msg_head = string.gsub(msg_head, '"reply_to":%-3', at, 1)
    msg_tail = string.gsub(msg_tail, '"reply_to":%-3', at, 1)
  end
  if role ~= 'owner' and role ~= 'admin' and info[1] == 'channel' then return {'forbidden'} end
  local ts = ARGV[3]
  if not direct and info[7] ~= '0' then
    local key = prefix .. 'silenced'
    if not info[7] then redis.call('HSET', KEYS[1], 'silenced', redis.call('HLEN', key)) end
    local silenced = redis.call('HGET', key, sender)
    if silenced and tonumber(silenced) > tonumber(ts) then return {'silenced', silenced} end
  end
  local seq = tostring((tonumber(info[3]) or 0) + 1)
  local ev = tostring((tonumber(info[4]) or 0) + 1)
  -- The client id's check and its record in one: stored once.
  local cids = prefix .. 'cids'
  local cid = sender .. '\n' .. ARGV[2]
  if redis.call('HSETNX', cids, cid, seq) == 0 then
    return {'duplicate', redis.call('HGET', cids, cid)}
  end
  local t = redis.call('TIME')
  local epoch = info[5]
  local new_epoch = not epoch
  if new_epoch then epoch = epoch_at(t) end
  local msg = msg_head .. seq .. msg_tail
  local e = ARGV[6] .. ev .. ARGV[7] .. epoch .. ARGV[8] .. stamp_at(t) .. ARGV[9] .. msg
    .. ARGV[10]
  -- First of the writes after the client id's: where it fails (a log whose stream went ahead
  -- of its counter), nothing of the message stays.
  local added = redis.pcall('XADD', prefix .. 'events', 'MAXLEN', '~', ARGV[11], ev .. '-1', 'e', e)
  if type(added) == 'table' and added.err then
    redis.call('HDEL', cids, cid)
    return added
  end
  redis.call('HSET', msgs, seq, msg)
  if new_epoch then
    redis.call('HSET', KEYS[1], 'last_seq', seq, 'last_ev', ev, 'last_ts', ts, 'last', msg,
      'epoch', epoch)
  else
    redis.call('HSET', KEYS[1], 'last_seq', seq, 'last_ev', ev, 'last_ts', ts, 'last', msg)
  end
  -- The sender has read up to here. No read position is ever past the last message
  -- (read.lua stops at it, and this is the only other write), so this moves it forward.
  redis.call('HSET', prefix .. 'reads', sender, seq)
  if root > 0 then
    redis.call('ZADD', prefix .. 'thread:' .. root, seq, seq)
    local threads = prefix .. 'threads'
    redis.call('HINCRBY', threads, root .. ':n', 1)
    redis.call('HSET', threads, root .. ':last', seq)
  end
  redis.call('SPUBLISH', prefix .. 'chan', e)
  return {'ok', tonumber(seq), tonumber(ev)}
end

local total
if KEYS[2] then
  total = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  if ARGV[15] ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[15]) end
end
local out = send()
if total and not out.err then table.insert(out, 1, total) end
return out
