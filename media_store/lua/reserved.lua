-- A library, not a script: prepended to the scripts that check a quota.
-- reserved(key): the sum of an owner's upload reservations (hash upload id -> length); the
-- hash has at most media_tus_max_open entries.
local function reserved(key)
  local sum = 0
  for _, v in ipairs(redis.call('HVALS', key)) do sum = sum + tonumber(v) end
  return sum
end
