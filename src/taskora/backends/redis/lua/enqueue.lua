--- KEYS: @task
--- ARGV: B #jobs jobs{id data version maxAttempts priority delayMs ttlMs concurrencyKey concurrencyLimit trace}
-- ENQUEUE: create one or more jobs (plain dispatch and dispatch_many).
-- ARGV: B, count, then per job: id, data, _v, maxAttempts, priority, delayMs, ttlMs,
--       concurrencyKey ('' = none), concurrencyLimit, trace ('' = none: no field written).
-- Returns per job its creation time as '<ms>-0' (it orders the job against a result
-- waiter's subscription), or '' when the id already existed (an enqueue retried after a
-- lost reply must not create the job twice).
-- Each job gets its creation entry in the events stream ('waiting' or 'delayed', wire
-- format v6), as the reference's ENQUEUE scripts write it: Node listeners and boards see it.
-- Hand-off (docs/design.md#hand-off): a plain job (no delay, ttl or concurrency key) that
-- finds nothing waiting ahead of it and a worker blocked idle on the task (registered in
-- B..'idle', not expired) is claimed for that worker right here (lock, `active`, its
-- `active` event, as a claim writes them) and pushed to the worker's inbox, which its
-- blocking wait watches before the marker: the wake-up carries the job, no claim call.
local B = ARGV[1]
local count = tonumber(ARGV[2])
local now = now_ms()
local created = NOW .. '-0'
local out = {}
local waiting, min_due = false, nil
local idle = B .. 'idle'
local queue_empty = nil -- nil: not read yet; false once a job of this call queued
local no_idle = false

-- The registered idle worker to hand a job of payload version `v` to, or nil. The entry is
-- taken out of the registry (the worker registers again on its next wait); one expired
-- means every entry is (the newest registration is popped first), so the registry goes.
local function idle_worker(v)
  if no_idle then return nil end
  if queue_empty == nil then
    queue_empty = redis.call('LLEN', K.wait) == 0 and redis.call('ZCARD', K.prioritized) == 0
  end
  if not queue_empty then return nil end
  local top = redis.call('ZPOPMAX', idle)
  if not top[1] then no_idle = true; return nil end
  if tonumber(top[2]) <= now then
    redis.call('DEL', idle)
    no_idle = true
    return nil
  end
  local seq, ttl, max_v, tb = string.match(top[1], '^(%d+):(%d+):(%d+):(.+)$')
  if not tb or (max_v ~= '0' and (tonumber(v) or 1) > tonumber(max_v)) then
    if tb then redis.call('ZADD', idle, top[2], top[1]) end -- a worker of an older version
    return nil
  end
  return tb .. ':' .. seq, ttl, B .. 'inbox:' .. tb
end
-- checked before the first write, so a foreign key fails the call with nothing changed
local events_type = redis.call('TYPE', K.events).ok
if events_type ~= 'stream' and events_type ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. K.events .. ' is not a stream')
end
for i = 0, count - 1 do
  local o = 3 + i * 10
  local id = ARGV[o]
  local jk = B .. id
  if redis.call('EXISTS', jk) == 1 then
    out[i + 1] = ''
  else
    local priority = tonumber(ARGV[o + 4])
    local delay = tonumber(ARGV[o + 5])
    local ttl = tonumber(ARGV[o + 6])
    local token, lock_ttl, inbox
    if delay == 0 and ttl == 0 and ARGV[o + 7] == '' then
      token, lock_ttl, inbox = idle_worker(ARGV[o + 2])
    end
    -- queue first: if a queue key has the wrong type this fails before anything is written
    if token then
      -- claimed for the idle worker, as claim() would: lock, active list, hash, events
      redis.call('LPUSH', K.active, id)
      redis.call('SET', jk .. ':lock', token, 'PX', lock_ttl)
      local fields = { 'ts', NOW, '_v', ARGV[o + 2], 'attempt', '1', 'maxAttempts', ARGV[o + 3],
        'state', 'active', 'priority', priority, 'data', ARGV[o + 1], 'processedOn', NOW }
      if ARGV[o + 9] ~= '' then fields[#fields + 1] = 'trace'; fields[#fields + 1] = ARGV[o + 9] end
      redis.call('HSET', jk, unpack(fields))
      emit(K.events, 'event', 'waiting', 'jobId', id)
      emit(K.events, 'event', 'active', 'jobId', id)
      -- the job as the worker reads it: fixed fields one a line, the data last (any bytes)
      redis.call('ZADD', inbox, '0', table.concat({ id, token, ARGV[o + 2], NOW, ARGV[o + 9],
        ARGV[o + 1] }, '\n'))
      redis.call('PEXPIRE', inbox, lock_ttl) -- a dead worker's inbox goes with its lock
    elseif delay > 0 then
      local due = now + delay
      redis.call('ZADD', K.delayed, due, id)
      if not min_due or due < min_due then min_due = due end
    else
      requeue(K, id, priority, now)
      waiting = true
      queue_empty = false -- later jobs of this call queue behind it
    end
    if token then
      -- written above
    elseif delay == 0 and ttl == 0 and ARGV[o + 7] == '' and ARGV[o + 9] == '' then -- the common case, without a table
      redis.call('HSET', jk, 'ts', NOW, '_v', ARGV[o + 2], 'attempt', '1',
        'maxAttempts', ARGV[o + 3], 'state', 'waiting', 'priority', priority, 'data', ARGV[o + 1])
    else
      local fields = { 'ts', NOW, '_v', ARGV[o + 2], 'attempt', '1', 'maxAttempts', ARGV[o + 3],
        'state', delay > 0 and 'delayed' or 'waiting', 'priority', priority, 'data', ARGV[o + 1] }
      if delay > 0 then fields[#fields + 1] = 'delay'; fields[#fields + 1] = delay end
      if ttl > 0 then fields[#fields + 1] = 'expireAt'; fields[#fields + 1] = now + ttl end
      if ARGV[o + 7] ~= '' then
        fields[#fields + 1] = 'concurrencyKey'; fields[#fields + 1] = ARGV[o + 7]
        fields[#fields + 1] = 'concurrencyLimit'; fields[#fields + 1] = ARGV[o + 8]
      end
      if ARGV[o + 9] ~= '' then fields[#fields + 1] = 'trace'; fields[#fields + 1] = ARGV[o + 9] end
      redis.call('HSET', jk, unpack(fields))
    end
    if not token then emit(K.events, 'event', delay > 0 and 'delayed' or 'waiting', 'jobId', id) end
    out[i + 1] = created
  end
end
if waiting then
  redis.call('ZADD', K.marker, '0', '0')
elseif min_due then
  redis.call('ZADD', K.marker, 'LT', min_due, '0')
end
return out
