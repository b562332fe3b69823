--- KEYS: @task
--- ARGV: B id reason
-- CANCEL: cancel a job. Not yet running (claimed ahead included): cancelled at once. Active: flagged, and every
-- worker of the task hears it on the cancel channel; the one running it stops it.
-- ARGV: B, id, reason.
-- Returns 'cancelled' | 'flagged' | 'not_cancellable'.
local B, id, reason = ARGV[1], ARGV[2], ARGV[3]
local jk = B .. id
if redis.call('TYPE', jk).ok ~= 'hash' then return 'not_cancellable' end
local f = redis.call('HMGET', jk, 'state', 'dedupKey', 'concurrencyKey')
local state = f[1]
local now = now_ms()
if state == 'waiting' or state == 'delayed' or state == 'retrying' then
  if state == 'waiting' then
    unqueue_waiting(K, B, id, f[3])
  else
    redis.call('ZREM', K.delayed, id)
  end
  end_job(K, jk, id, 'cancelled', now, f[2], 'reason', reason, 'cancelReason')
  return 'cancelled'
end
if state == 'active' then
  redis.call('HSET', jk, 'cancelledAt', now, 'cancelReason', reason)
  redis.call('PUBLISH', B .. 'cancel', id)
  return 'flagged'
end
return 'not_cancellable'
