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
local B = ARGV[1]
local count = tonumber(ARGV[2])
local now = now_ms()
local created = NOW .. '-0'
local out = {}
local waiting, min_due = false, nil
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
    -- queue first: if a queue key has the wrong type this fails before anything is written
    if delay > 0 then
      local due = now + delay
      redis.call('ZADD', K.delayed, due, id)
      if not min_due or due < min_due then min_due = due end
    else
      requeue(K, id, priority, now)
      waiting = true
    end
    if delay == 0 and ttl == 0 and ARGV[o + 7] == '' and ARGV[o + 9] == '' then -- the common case, without a table
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
    emit(K.events, 'event', delay > 0 and 'delayed' or 'waiting', 'jobId', id)
    out[i + 1] = created
  end
end
if waiting then
  redis.call('ZADD', K.marker, '0', '0')
elseif min_due then
  redis.call('ZADD', K.marker, 'LT', min_due, '0')
end
return out
