--- KEYS: records times
--- ARGV: name recordMode expectedRecord nextMode expectedNextMs record nextMs
-- SCHEDULE_WRITE: compare-and-set of one schedule's record and next fire time. Every change
-- (register, re-arm after a tick, pause, resume, update, remove) is one of these, made only if
-- the schedule still is what the caller read: two leaders, or a leader and an update, cannot
-- overwrite each other's work.
-- KEYS: <root>:{schedules}, <root>:{schedules}:next
-- ARGV: name, recordMode ('any' | 'none' | 'is'), expectedRecord, nextMode ('any' | 'none' |
--       'is'), expectedNextMs, record ('' = delete the schedule), nextMs ('' = paused)
-- Returns 1 when written, 0 when the schedule had changed (nothing written).
local name = ARGV[1]
local rec = redis.call('HGET', KEYS[1], name)
if ARGV[2] == 'none' and rec then return 0 end
if ARGV[2] == 'is' and rec ~= ARGV[3] then return 0 end
local score = redis.call('ZSCORE', KEYS[2], name)
if ARGV[4] == 'none' and score then return 0 end
if ARGV[4] == 'is' and (not score or tonumber(score) ~= tonumber(ARGV[5])) then return 0 end
if ARGV[6] == '' then
  redis.call('HDEL', KEYS[1], name)
  redis.call('ZREM', KEYS[2], name)
  return 1
end
redis.call('HSET', KEYS[1], name, ARGV[6])
if ARGV[7] == '' then
  redis.call('ZREM', KEYS[2], name)
else
  redis.call('ZADD', KEYS[2], ARGV[7], name)
end
return 1
