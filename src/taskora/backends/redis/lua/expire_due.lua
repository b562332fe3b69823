--- KEYS: @task
--- ARGV: B ids...
-- EXPIRE_DUE: end jobs whose ttl passed while no worker claimed them, so their waiters
-- never hang (docs/design.md#decisions, 3). Called by a result waiter that saw a past expireAt.
-- ARGV: B, then job ids.
-- Returns the ids that were expired now (others were not due, or already moved on).
local B = ARGV[1]
local now = now_ms()
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local jk = B .. id
  if redis.call('TYPE', jk).ok == 'hash' then
    local f = redis.call('HMGET', jk, 'state', 'expireAt', 'concurrencyKey')
    local expire_at = tonumber(f[2] or '')
    if expire_at and expire_at <= now then
      local removed = false
      if f[1] == 'waiting' then
        removed = unqueue_waiting(K, B, id, f[3])
      elseif f[1] == 'delayed' or f[1] == 'retrying' then
        removed = redis.call('ZREM', K.delayed, id) == 1
      end
      if removed then
        expire_job(K, B, id, now)
        out[#out + 1] = id
      end
    end
  end
end
return out
