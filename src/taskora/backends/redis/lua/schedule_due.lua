--- KEYS: records times lock
--- ARGV: token limit
-- SCHEDULE_DUE: the schedules whose fire time has come, read by the leader.
-- KEYS: <root>:{schedules} (hash: name -> record JSON), <root>:{schedules}:next (zset: name ->
--       next fire time ms; absent = paused), <root>:{schedules}:lock
-- ARGV: token, limit
-- Returns nil when the token does not hold the lock, else { now, name, nextMs, record, ... }
-- with `now` from the server's clock (docs/design.md#decisions, 2). Nothing is removed: a
-- schedule stays armed until schedule_write re-arms it, so a leader that dies after this
-- call, or does not know the task, loses nothing (docs/design.md#decisions, 5).
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local out = { now }
for i = 1, #due, 2 do
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[1], due[i]) or ''
end
return out
