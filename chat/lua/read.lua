-- A read receipt: move the user's read position forward (never back, never past the last
-- message).
-- KEYS[1]: meta, [2]: members, [3]: reads (user -> seq), [4]: events
-- ARGV[1]: user, [2]: seq, [3]: ev_tpl ("read_seq":-2 marks the position), [4]: channel,
-- [5]: maxlen
-- Returns {'ok', ev or 0, read_seq, kind, moved}; ev is 0 when nothing moved or the
-- conversation is a channel (whose receipts go to the reader's own feed only).
-- Runs after epoch.lua and log.lua.
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
