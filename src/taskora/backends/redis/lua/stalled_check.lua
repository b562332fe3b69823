--- KEYS: @task
--- ARGV: B maxStalledCount
-- STALLED_CHECK: recover jobs whose worker died (two phases, like BullMQ and Taskora):
-- an id seen active at the previous check, whose lock has since expired, is stalled.
-- ARGV: B, maxStalledCount.
-- Jobs claimed ahead whose lock expired (their worker died before starting them) go back
-- to the front of the queue in claim order, with no stall count: they never ran.
-- Returns { recovered ids, failed ids, cancelled ids, returned ids }.
local B = ARGV[1]
local max_count = tonumber(ARGV[2])
local now = now_ms()
local recovered, failed, cancelled, returned = {}, {}, {}, {}
local released = false
for _, id in ipairs(redis.call('ZREVRANGE', K.reserved, 0, -1)) do -- the last first: each goes in front
  local jk = B .. id
  if redis.call('EXISTS', jk .. ':lock') == 0 then
    redis.call('ZREM', K.reserved, id)
    local f = redis.call('HMGET', jk, 'state', 'priority', 'ts')
    if f[1] == 'waiting' then
      requeue(K, id, tonumber(f[2] or '0') or 0, tonumber(f[3] or '') or now, true)
      released = true
      returned[#returned + 1] = id
    end
  end
end
for _, id in ipairs(redis.call('SMEMBERS', K.stalled)) do
  redis.call('SREM', K.stalled, id)
  local jk = B .. id
  if redis.call('EXISTS', jk .. ':lock') == 0 then
    local kind = redis.call('TYPE', jk).ok
    if kind == 'none' and not redis.call('LPOS', K.active, id) then
      -- it finished after the last check and retention already removed it: nothing to do
    elseif kind ~= 'hash' then
      fail_malformed(K, B, id, 'job hash missing or of the wrong type', now)
      failed[#failed + 1] = id
    elseif redis.call('HGET', jk, 'state') == 'active' then
      redis.call('LREM', K.active, 0, id)
      local f = redis.call('HMGET', jk, 'concurrencyKey', 'dedupKey', 'cancelledAt', 'priority', 'cancelReason', 'ts')
      release_concurrency(K, B, f[1])
      released = true
      if f[3] then
        end_job(K, jk, id, 'cancelled', now, f[2], 'reason', f[5] or '')
        cancelled[#cancelled + 1] = id
      else
        local n = redis.call('HINCRBY', jk, 'stalledCount', 1)
        if n > max_count then
          local msg = 'Job stalled and exceeded max stalled count'
          emit(K.events, 'event', 'stalled', 'jobId', id, 'count', n, 'action', 'failed')
          end_job(K, jk, id, 'failed', now, f[2], 'error', msg, 'error')
          failed[#failed + 1] = id
        else
          redis.call('HSET', jk, 'state', 'waiting')
          requeue(K, id, tonumber(f[4] or '0') or 0, tonumber(f[6] or '') or now, true)
          emit(K.events, 'event', 'stalled', 'jobId', id, 'count', n, 'action', 'recovered')
          recovered[#recovered + 1] = id
        end
      end
    else
      redis.call('LREM', K.active, 0, id) -- finished meanwhile; make sure no stale entry remains
    end
  end
end
local active = redis.call('LRANGE', K.active, 0, -1)
for i = 1, #active, 1000 do
  redis.call('SADD', K.stalled, unpack(active, i, math.min(i + 999, #active)))
end
if released then rearm(K, now, false, true, false) end
return { recovered, failed, cancelled, returned }
