-- Make the direct conversation of two users when it does not exist yet.
-- KEYS[1]: meta, [2]: members. ARGV[1]: a, [2]: b, [3]: ts
-- Returns 1 while the users' conversation lists still need the entry, else 0.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'kind', 'direct', 'name', '', 'creator', ARGV[1],
    'created', ARGV[3], 'last_seq', 0, 'last_ev', 0, 'count', 2,
    'peers', ARGV[1] .. '\n' .. ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], 'member', ARGV[2], 'member')
end
if redis.call('HEXISTS', KEYS[1], 'indexed') == 1 then return 0 end
return 1
