-- The hot window (chat.history.archiver): what the history store has, and is older than the
-- window, leaves Redis: the log's events up to ARGV[2], and the messages up to ARGV[3] with
-- their reactions, earlier versions, client ids, thread entries. META's "cold_seq" says up
-- to which seq messages are read from the store instead (chat.service). Messages copied back
-- for a write to them (warm.lua, set WARM) leave again once no event of the log after the
-- store's head (ARGV[4]) is about them; no message such an event is about leaves yet.
-- KEYS[1]: meta, [2]: msgs, [3]: events, [4]: reactions, [5]: threads, [6]: cids,
-- [7]: warm (set of seqs)
-- ARGV[1]: the store's epoch, [2]: last event to trim, [3]: last seq to trim, [4]: the
-- store's head event, [5]: the conversation's key prefix (edits:SEQ and thread:ROOT follow)
-- Returns {events left, cold_seq}, or {-1} when the log is of another epoch than the store.
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
if epoch ~= ARGV[1] then return {-1} end
local pending = {}
local low = nil
for _, entry in ipairs(redis.call('XRANGE', KEYS[3], (tonumber(ARGV[4]) + 1) .. '-0', '+')) do
  local s = string.match(entry[2][2], '"msg_seq":(%d+)')
  if s then
    pending[s] = true
    local n = tonumber(s)
    if not low or n < low then low = n end
  end
end
local function drop(seq, body)
  local ok, m = pcall(cjson.decode, body)
  if ok then
    if m.client_id then redis.call('HDEL', KEYS[6], m.sender .. '\n' .. m.client_id) end
    if m.reply_to then redis.call('ZREM', ARGV[5] .. 'thread:' .. m.reply_to, seq) end
  end
  redis.call('HDEL', KEYS[2], seq)
  redis.call('HDEL', KEYS[4], seq)
  redis.call('HDEL', KEYS[5], seq .. ':n', seq .. ':last')
  redis.call('DEL', ARGV[5] .. 'edits:' .. seq)
end
local cold = tonumber(redis.call('HGET', KEYS[1], 'cold_seq') or '0')
local upto = tonumber(ARGV[3])
if low and low <= upto then upto = low - 1 end
for seq = cold + 1, upto do
  local body = redis.call('HGET', KEYS[2], seq)
  if body then drop(seq, body) end
end
for _, s in ipairs(redis.call('SMEMBERS', KEYS[7])) do
  if not pending[s] then
    local body = redis.call('HGET', KEYS[2], s)
    -- A copied message keeps its client id: it was removed with it the first time.
    redis.call('HDEL', KEYS[2], s)
    redis.call('HDEL', KEYS[4], s)
    redis.call('HDEL', KEYS[5], s .. ':n', s .. ':last')
    redis.call('DEL', ARGV[5] .. 'edits:' .. s)
    redis.call('SREM', KEYS[7], s)
  end
end
if upto > cold then
  cold = upto
  redis.call('HSET', KEYS[1], 'cold_seq', cold)
end
local ev = tonumber(ARGV[2])
if ev > tonumber(redis.call('HGET', KEYS[1], 'trim_ev') or '0') then
  redis.call('XTRIM', KEYS[3], 'MINID', (ev + 1) .. '-0')
  redis.call('HSET', KEYS[1], 'trim_ev', ev)
end
return {redis.call('XLEN', KEYS[3]), cold}
