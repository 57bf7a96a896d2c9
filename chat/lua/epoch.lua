-- A library, not a script: prepended to the scripts that write a log's first event.
-- log_epoch(hash, field): the epoch of the log whose counter sits in HASH, kept in FIELD,
-- made when missing: the time with a random suffix, so that two lives of one log never
-- share it (see chat.resume).
local function log_epoch(hash, field)
  local e = redis.call('HGET', hash, field)
  if e then return e end
  local t = redis.call('TIME')
  e = string.format('%x%05x%04x', tonumber(t[1]), tonumber(t[2]), math.random(0, 65535))
  redis.call('HSET', hash, field, e)
  return e
end
