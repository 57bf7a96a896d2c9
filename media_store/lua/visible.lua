-- Whether a user may see a file, and its record, read at one instant (one round trip).
-- Access rule: the owner, or a member of a conversation the file was shared in. The
-- conversations' members keys are built here (ARGV's prefix and suffix around the id):
-- like the media store's other scripts, it assumes one Redis shard.
-- KEYS: meta, shared
-- ARGV: user, members key before the conversation id, after it, '1' to get every field,
--       '1' to check access ('0' for a signed URL, checked before)
-- Returns {0}: no such file; {1}: the user may not see it; else {2, created[, fields]}.
local id, digest, owner, created =
  unpack(redis.call('HMGET', KEYS[1], 'id', 'digest', 'owner', 'created'))
if not (id and digest) then return {0} end
local user = ARGV[1]
local visible = ARGV[5] == '0' or owner == user
if not visible then
  for _, conv in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if redis.call('HEXISTS', ARGV[2] .. conv .. ARGV[3], user) == 1 then
      visible = true
      break
    end
  end
end
if not visible then return {1} end
if ARGV[4] == '1' then return {2, created or '', redis.call('HGETALL', KEYS[1])} end
return {2, created or ''}
