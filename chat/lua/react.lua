-- Add or remove one user's reaction to a message; the event carries the emoji's users.
-- KEYS[1]: meta, [2]: members, [3]: msgs, [4]: reactions (seq -> {emoji: [user...]}),
-- [5]: events
-- ARGV[1]: user, [2]: seq, [3]: emoji, [4]: add (1) or remove (0), [5]: ev_tpl
-- ("users":[] marks the users), [6]: channel, [7]: maxlen, [8]: most emoji per message
-- Returns {'ok', ev or 0 when nothing changed} or {refusal code}.
-- Runs after epoch.lua and log.lua.
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
