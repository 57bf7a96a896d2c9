-- A library, not a script: prepended to the scripts that write to a log.
-- log_epoch(hash, field): the epoch of the log whose counter sits in HASH, kept in FIELD,
-- made when missing: the time with a random suffix, so that two lives of one log never
-- share it (see chat.resume).
-- log_stamp(): the stamp of the event being logged: Redis's time to the microsecond, so
-- that an event logged under a number again (after Redis went back in time) never carries
-- the stamp of the one it replaces.
local function log_epoch(hash, field)
  local e = redis.call('HGET', hash, field)
  if e then return e end
  local t = redis.call('TIME')
  e = string.format('%x%05x%04x', tonumber(t[1]), tonumber(t[2]), math.random(0, 65535))
  redis.call('HSET', hash, field, e)
  return e
end

local function log_stamp()
  local t = redis.call('TIME')
  return string.format('%x%05x', tonumber(t[1]), tonumber(t[2]))
end
