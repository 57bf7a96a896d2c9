-- A library, not a script: prepended to the scripts that write to a log.
-- epoch_at(t): a log's new epoch made from T (a TIME reply): the time with a random suffix,
-- so that two lives of one log never share it (see chat.resume).
-- stamp_at(t): the stamp of an event logged at T: Redis's time to the microsecond, so that
-- an event logged under a number again (after Redis went back in time) never carries the
-- stamp of the one it replaces.
-- log_epoch(hash, field): the epoch of the log whose counter sits in HASH, kept in FIELD,
-- made when missing.
-- log_stamp(): the stamp of the event being logged.
local function epoch_at(t)
  return string.format('%x%05x%04x', tonumber(t[1]), tonumber(t[2]), math.random(0, 65535))
end

local function stamp_at(t)
  return string.format('%x%05x', tonumber(t[1]), tonumber(t[2]))
end

local function log_epoch(hash, field)
  local e = redis.call('HGET', hash, field)
  if e then return e end
  e = epoch_at(redis.call('TIME'))
  redis.call('HSET', hash, field, e)
  return e
end

local function log_stamp()
  return stamp_at(redis.call('TIME'))
end
