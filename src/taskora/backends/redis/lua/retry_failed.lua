--- KEYS: @task
--- ARGV: B limit ids...
-- RETRY_FAILED: move dead-lettered (failed) jobs back to waiting, atomically per job.
-- ARGV: B, limit, then job ids (none = the `limit` oldest failed jobs).
-- Each retried job starts over: attempt 1, no error/result/finish time, a fresh ts.
-- Returns the ids that were retried (ids not in the failed set are skipped).
local B = ARGV[1]
local limit = tonumber(ARGV[2])
local ids = {}
if #ARGV > 2 then
  for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('ZRANGE', K.failed, 0, limit - 1)
end
local now = now_ms()
local done = {}
for _, id in ipairs(ids) do
  local jk = B .. id
  if redis.call('TYPE', jk).ok == 'hash' and redis.call('ZREM', K.failed, id) == 1 then
    redis.call('HDEL', jk, 'error', 'finishedOn', 'result', 'stalledCount', 'cancelledAt',
      'cancelReason', 'processedOn')
    redis.call('HSET', jk, 'state', 'waiting', 'attempt', 1, 'ts', now)
    requeue(K, id, tonumber(redis.call('HGET', jk, 'priority') or '0') or 0, now)
    emit(K.events, 'event', 'waiting', 'jobId', id)
    publish_end(id, 'waiting') -- it starts over: waiters forget its earlier end
    done[#done + 1] = id
  end
end
if #done > 0 then redis.call('ZADD', K.marker, 0, '0') end
return done
