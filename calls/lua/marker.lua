-- A key of one user that calls set (the user's call marker, the user's ringing set), changed
-- after the call's own script (ringing.lua) said so.
-- KEYS[1] the key
-- ARGV[1] op: 'release' deletes it if it holds ARGV[2]; 'keep' lets it live at least ARGV[3]
--         ms (a key without expiry gets one) if it holds ARGV[2], or whatever it is for ''.
-- A marker that another call took meanwhile stays as it is.
local op, owner = ARGV[1], ARGV[2]
if owner ~= '' and redis.call('GET', KEYS[1]) ~= owner then return 0 end
if op == 'release' then return redis.call('DEL', KEYS[1]) end
if op == 'keep' then
  local ms = tonumber(ARGV[3])
  local left = redis.call('PTTL', KEYS[1])
  if left == -1 or (left >= 0 and left < ms) then return redis.call('PEXPIRE', KEYS[1], ms) end
  return 0
end
return redis.error_reply('unknown marker op')
