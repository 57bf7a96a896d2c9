-- Presence: extend the expiry of many devices at once (their node's periodic refresh), each
-- as presence.lua's 'refresh' does: nothing changes that a watcher sees, so nothing is
-- published. One call for a batch of devices instead of one each (on a cluster, the
-- devices of one slot).
-- KEYS[i]: the devices hash of the i-th device's user
-- ARGV[1]: expires_ms; ARGV[2i], ARGV[2i + 1]: the i-th device and its session
-- Returns, for each device in order: 'refreshed', 'missing' (no such device: to register
-- again) or 'replaced' (another session has it now).
local expires = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local device, session = ARGV[2 * i], ARGV[2 * i + 1]
  local cur = redis.call('HGET', key, device)
  if not cur then
    out[i] = 'missing'
  else
    local d = cjson.decode(cur)
    if d.k ~= session then
      out[i] = 'replaced'
    else
      d.x = expires
      redis.call('HSET', key, device, cjson.encode(d))
      out[i] = 'refreshed'
    end
  end
end
return out
