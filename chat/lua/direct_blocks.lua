-- Make a direct conversation's copy of its users' blocks (read by send.lua), once: from the
-- blocks its users' own lists held when read (ARGV), added to what block and unblock wrote
-- to the copy meanwhile (chat.service.block writes the copy before a block reaches the
-- user's list and after an unblock left it, so the copy never lacks a block).
-- KEYS[1]: meta, [2]: blocks. ARGV: the users who blocked the other one.
-- Meta's "blockers" counts the copy's users from here on (direct_block.lua).
-- Returns 1 when the copy was made, 0 when it was there already or the conversation is not.
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'blocks') == 1 then
  return 0
end
for _, user in ipairs(ARGV) do redis.call('SADD', KEYS[2], user) end
redis.call('HSET', KEYS[1], 'blocks', 1, 'blockers', redis.call('SCARD', KEYS[2]))
return 1
