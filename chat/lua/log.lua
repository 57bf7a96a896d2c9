-- A library, not a script: prepended (after epoch.lua) to the scripts that append to a
-- conversation's log.
-- log_event(meta, events, chan, maxlen, tpl): the next event number ("last_ev" of META),
-- the log's epoch and the event's stamp go into the encoded event TPL at its markers
-- ("ev":-1, "epoch":"", "stamp":""),
-- which is appended to the EVENTS stream (trimmed to about MAXLEN) and published on CHAN;
-- returns the event number.
-- append_message(meta, msgs, events, chan, maxlen, ts, msg_tpl, ev_tpl): the next message
-- sequence number ("last_seq") goes into MSG_TPL and EV_TPL ("seq":-2); the message is
-- stored in MSGS and as META's last, the event logged; returns seq, ev.
local function log_event(meta, events, chan, maxlen, tpl)
  local ev = redis.call('HINCRBY', meta, 'last_ev', 1)
  local epoch = log_epoch(meta, 'epoch')
  local e = string.gsub(tpl, '"ev":%-1', '"ev":' .. ev, 1)
  e = string.gsub(e, '"epoch":""', '"epoch":"' .. epoch .. '"', 1)
  e = string.gsub(e, '"stamp":""', '"stamp":"' .. log_stamp() .. '"', 1)
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, ev .. '-1', 'e', e)
  redis.call('SPUBLISH', chan, e)
  return ev
end

local function append_message(meta, msgs, events, chan, maxlen, ts, msg_tpl, ev_tpl)
  local seq = redis.call('HINCRBY', meta, 'last_seq', 1)
  local s = '"seq":' .. seq
  local msg = string.gsub(msg_tpl, '"seq":%-2', s, 1)
  redis.call('HSET', msgs, seq, msg)
  redis.call('HSET', meta, 'last_ts', ts, 'last', msg)
  local ev = log_event(meta, events, chan, maxlen, (string.gsub(ev_tpl, '"seq":%-2', s, 1)))
  return seq, ev
end
