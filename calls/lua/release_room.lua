-- KEYS[1] the room's claim, huddle:{room:NAME}:node
-- ARGV[1] this node's claim on it, NODE#WORKER
-- Only the claim's own holder deletes it: a claim that expired and was taken by another
-- node in the meantime stays.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
