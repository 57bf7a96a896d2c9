-- Presence: one device's change (set, refresh, remove, expire) or a read (get), and the user's
-- aggregate snapshot (JSON, as signaling.protocol.UserPresence) built from the live devices.
-- KEYS[1]: the user's devices hash (device -> {s: status, n: node, k: session, x: expires ms})
-- KEYS[2]: the user's presence meta hash (seen: last change ms, ver: snapshot version)
-- ARGV[1]: op (set | refresh | remove | expire | get); ARGV[2]: user; ARGV[3]: device;
-- ARGV[4]: session; ARGV[5]: status; ARGV[6]: node; ARGV[7]: expires_ms; ARGV[8]: now_ms;
-- ARGV[9]: the user's presence channel (snapshots are published there on every change)
-- Returns the snapshot, or for refresh/remove/expire/set a short word when nothing changed.
local op, user, device, session = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = tonumber(ARGV[8])
if op ~= 'get' then
  local cur = redis.call('HGET', KEYS[1], device)
  local d = cur and cjson.decode(cur) or nil
  if op == 'set' then
    redis.call('HSET', KEYS[1], device, cjson.encode(
      {s = ARGV[5], n = ARGV[6], k = session, x = tonumber(ARGV[7])}))
    if d and d.s == ARGV[5] and d.k == session and d.x > now then return 'same' end
  elseif op == 'refresh' then
    if not d then return 'missing' end
    if d.k ~= session then return 'replaced' end
    d.x = tonumber(ARGV[7])
    redis.call('HSET', KEYS[1], device, cjson.encode(d))
    return 'refreshed'
  elseif op == 'remove' then
    if not d or d.k ~= session then return 'gone' end
    redis.call('HDEL', KEYS[1], device)
  elseif op == 'expire' then
    if not d then return 'gone' end
    if d.x > now then return 'alive' end
    redis.call('HDEL', KEYS[1], device)
  else
    return redis.error_reply('unknown presence op')
  end
  redis.call('HSET', KEYS[2], 'seen', ARGV[8])
  redis.call('HINCRBY', KEYS[2], 'ver', 1)
end
local all = redis.call('HGETALL', KEYS[1])
local names, status = {}, {}
for i = 1, #all, 2 do
  local d = cjson.decode(all[i + 1])
  if d.x > now then
    names[#names + 1] = all[i]
    status[all[i]] = d.s
  end
end
table.sort(names)
local agg, parts = 'offline', {}
for i, name in ipairs(names) do
  if status[name] == 'online' then agg = 'online' elseif agg == 'offline' then agg = 'away' end
  parts[i] = '{"device":' .. cjson.encode(name) .. ',"status":' .. cjson.encode(status[name]) .. '}'
end
local seen = redis.call('HGET', KEYS[2], 'seen') or 'null'
local ver = redis.call('HGET', KEYS[2], 'ver') or '0'
local snap = '{"user":' .. cjson.encode(user) .. ',"status":"' .. agg .. '","devices":[' ..
  table.concat(parts, ',') .. '],"last_seen_ms":' .. seen .. ',"version":' .. ver .. '}'
if op ~= 'get' then redis.call('SPUBLISH', ARGV[9], snap) end
return snap
