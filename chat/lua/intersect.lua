-- Search (chat.search, read only): the seqs present in every term set of one conversation.
-- KEYS: the query's term sets (sorted sets, score = seq)
-- ARGV[1]: below (a score bound), [2]: want, [3]: budget (members examined at most)
-- Returns {next bound or '', seq...}: seqs present in every set, newest first.
local best, size = nil, nil
for i, key in ipairs(KEYS) do
  local n = redis.call('ZCARD', key)
  if n == 0 then return {''} end
  if not size or n < size then best, size = i, n end
end
local want, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local out, cursor, seen = {''}, ARGV[1], 0
while true do
  local page = redis.call('ZREVRANGEBYSCORE', KEYS[best], cursor, '-inf', 'LIMIT', 0, 500)
  local examined = 0
  for _, member in ipairs(page) do
    local everywhere = true
    for i, key in ipairs(KEYS) do
      if i ~= best and not redis.call('ZSCORE', key, member) then everywhere = false break end
    end
    if everywhere then out[#out + 1] = member end
    cursor = '(' .. member
    examined = examined + 1
    if #out - 1 >= want then break end
  end
  seen = seen + examined
  if #page < 500 and examined == #page then return out end  -- nothing older is left
  if #out - 1 >= want or seen >= budget then break end
end
out[1] = cursor
return out
