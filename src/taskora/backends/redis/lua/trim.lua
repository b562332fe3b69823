--- KEYS: @task
--- ARGV: B batch completedAgeMs completedMax failedAgeMs failedMax cancelledAgeMs cancelledMax
--- ARGV: expiredAgeMs expiredMax
-- TRIM: retention for finished jobs, by age and by count, at most `batch` per set per call.
-- ARGV: B, batch, then (maxAgeMs, maxItems) for completed, failed, cancelled, expired.
-- Returns the number of jobs deleted (the caller repeats while a batch came back full).
local B = ARGV[1]
local batch = tonumber(ARGV[2])
local now = now_ms()
local removed = 0
local function drop(set, ids)
  for _, id in ipairs(ids) do
    local jk = B .. id
    redis.call('DEL', jk, jk .. ':lock', jk .. ':logs')
    redis.call('ZREM', set, id)
  end
  removed = removed + #ids
end
local sets = { K.completed, K.failed, K.cancelled, K.expired }
for i, set in ipairs(sets) do
  local age, max = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  drop(set, redis.call('ZRANGEBYSCORE', set, '-inf', now - age, 'LIMIT', 0, batch))
  local over = redis.call('ZCARD', set) - max
  if over > 0 then drop(set, redis.call('ZRANGE', set, 0, math.min(over, batch) - 1)) end
end
return removed
