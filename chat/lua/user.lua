-- One user's conversation list (conversation -> the event number they joined at), settings
-- and feed: a change, logged as a feed event when it changed something.
-- KEYS[1]: state (fev: feed counter, fepoch: feed epoch), [2]: convs, [3]: muted,
-- [4]: blocked, [5]: feed
-- ARGV[1]: op (join | leave | mute | unmute | block | unblock | event), [2]: its argument,
-- [3]: ev_tpl ("fev":-1, "feed_epoch":"", "stamp":"" markers), [4]: channel, [5]: maxlen,
-- [6]: joined_ev (join)
-- Returns the feed event number, 0 when the change was already made, -1 for a bad op.
-- Runs after epoch.lua.
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
e = string.gsub(e, '"stamp":""', '"stamp":"' .. log_stamp() .. '"', 1)
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], fev .. '-1', 'e', e)
redis.call('SPUBLISH', ARGV[4], e)
return fev
