-- One user's block of the other (or its end) in their direct conversation's copy of blocks
-- (see direct_blocks.lua), and the copy's count in meta's "blockers" once the copy is made
-- (send.lua reads it instead of the set). Written whether the conversation exists or not.
-- KEYS[1]: meta, [2]: blocks. ARGV[1]: the user who blocks, [2]: 1 to block, 0 to unblock.
if ARGV[2] == '1' then
  redis.call('SADD', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
end
if redis.call('HEXISTS', KEYS[1], 'blockers') == 1 then
  redis.call('HSET', KEYS[1], 'blockers', redis.call('SCARD', KEYS[2]))
end
return 1
