-- Whether a user may see a file, and its record, read at one instant (one round trip).
-- Access rule: the owner, or a member of a conversation the file was shared in. Conversations
-- live on other shards of a Redis Cluster, so their members are not read here: the caller
-- checks them for status 3.
-- KEYS: meta, shared
-- ARGV: user, '1' to get every field, '1' to check access ('0' for a signed URL, checked
--       before)
-- Returns {0}: no such file; {1}: the user may not see it; {2, created, fields}: the user may
-- see it; {3, created, fields, conv...}: the user may see it if a member of one of those
-- conversations. fields is the record's flat field list when asked for, else empty.
local id, digest, owner, created =
  unpack(redis.call('HMGET', KEYS[1], 'id', 'digest', 'owner', 'created'))
if not (id and digest) then return {0} end
local user = ARGV[1]
local fields = {}
if ARGV[2] == '1' then fields = redis.call('HGETALL', KEYS[1]) end
if ARGV[3] == '0' or owner == user then return {2, created or '', fields} end
local convs = redis.call('SMEMBERS', KEYS[2])
if #convs == 0 then return {1} end
return {3, created or '', fields, unpack(convs)}
