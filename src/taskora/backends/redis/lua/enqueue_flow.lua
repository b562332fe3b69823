--- KEYS: @task
--- ARGV: B kind id data version maxAttempts priority delayMs ttlMs concurrencyKey concurrencyLimit
--- ARGV: flowKey kindArgs...
-- ENQUEUE_FLOW: create one job under flow control, the decision and the write in one step
-- (the reference's DEBOUNCE, THROTTLE_ENQUEUE and DEDUPLICATE_ENQUEUE, with the same effects
-- on the same keys). Nothing in between can see the check without its write.
-- ARGV: B, kind ('debounce' | 'throttle' | 'dedup' | 'schedule'), id, data, _v, maxAttempts, priority,
--       delayMs, ttlMs, concurrencyKey ('' = none), concurrencyLimit, flowKey (the user's key),
--       then per kind:
--         debounce: debounceDelayMs (the job is delayed by this; delayMs is ignored)
--         throttle: max, windowMs
--         dedup:    states, comma-separated (a job holding the key in one of them rejects)
--         schedule: fireMs, overlap ('1' = allowed), markTtlMs (flowKey is the schedule name)
-- A replaced debounced job gets a 'debounced' entry in events (wire format v6) and in done
-- (state 'debounced', reason), which ends its waiters with JobNotFoundError at once.
-- Keys touched besides KEYS (all share the task's hash tag):
--   B..'debounce:'..key  latest debounced job id, PX 2 * delay
--   B..'throttle:'..key  accepted dispatches in the current window, PX window
--   B..'dedup:'..key     id of the job owning the key (no TTL; released when it ends)
--   B..'schedule:'..key  hash: fire (the latest fire time handled), jobId (its job), PX markTtl
-- Returns { enqueued (1/0), existingId or '', replacedId or '', creation event id or '' }.
-- An id that already exists (an EVALSHA re-sent after a lost reply) is reported enqueued
-- and nothing is written again.
local B, kind, id = ARGV[1], ARGV[2], ARGV[3]
local jk = B .. id
if redis.call('EXISTS', jk) == 1 then return { 1, '', '', '' } end
-- Every queue key this script may write is checked before the first write: a key of the
-- wrong type fails the call with nothing changed (the client then repairs and re-runs it).
for key, want in pairs({ [K.wait] = 'list', [K.prioritized] = 'zset', [K.delayed] = 'zset',
    [K.marker] = 'zset', [K.events] = 'stream', [K.done] = 'stream' }) do
  local have = redis.call('TYPE', key).ok
  if have ~= want and have ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. key .. ' is not a ' .. want)
  end
end
local now = now_ms()
local data, version, max_attempts = ARGV[4], ARGV[5], ARGV[6]
local priority, delay, ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local conc_key, conc_limit, key = ARGV[10], ARGV[11], ARGV[12]

-- The job exactly as enqueue.lua writes it: queue first, then the hash, then the creation
-- event; the marker says "work now" or, for a delayed job, moves earlier only.
local function create_job(extra)
  local state = 'waiting'
  if delay > 0 then state = 'delayed' end
  local fields = { 'ts', now, '_v', version, 'attempt', 1, 'maxAttempts', max_attempts,
    'state', state, 'priority', priority, 'data', data }
  if delay > 0 then fields[#fields + 1] = 'delay'; fields[#fields + 1] = delay end
  if ttl > 0 then fields[#fields + 1] = 'expireAt'; fields[#fields + 1] = now + ttl end
  if conc_key ~= '' then
    fields[#fields + 1] = 'concurrencyKey'; fields[#fields + 1] = conc_key
    fields[#fields + 1] = 'concurrencyLimit'; fields[#fields + 1] = conc_limit
  end
  if extra then
    for _, v in ipairs(extra) do fields[#fields + 1] = v end
  end
  if delay > 0 then
    local due = now + delay
    redis.call('ZADD', K.delayed, due, id)
    redis.call('ZADD', K.marker, 'LT', due, '0')
  else
    requeue(K, id, priority, now)
    redis.call('ZADD', K.marker, 0, '0')
  end
  redis.call('HSET', jk, unpack(fields))
  emit(K.events, 'event', state, 'jobId', id) -- the creation entry, as enqueue.lua writes it
  return now .. '-0'  -- creation time
end

if kind == 'debounce' then
  delay = tonumber(ARGV[13])
  local dk = B .. 'debounce:' .. key
  local old = redis.call('GET', dk)
  local replaced = ''
  -- Only a job still pending in :delayed is replaced; one already promoted, running or
  -- finished is left alone and the new job is independent of it.
  if old and old ~= id and redis.call('ZSCORE', K.delayed, old) then
    local ok = B .. old
    if redis.call('TYPE', ok).ok == 'hash' and redis.call('HGET', ok, 'state') == 'delayed' then
      redis.call('ZREM', K.delayed, old)
      redis.call('DEL', ok, ok .. ':logs', ok .. ':lock')
      emit(K.events, 'event', 'debounced', 'jobId', old, 'replacedBy', id)
      -- its waiters end at once, with a typed error
      publish_end(old, 'debounced', 'replaced by a later debounced dispatch ' .. id)
      replaced = old
    end
  end
  local event_id = create_job(nil)
  redis.call('SET', dk, id, 'PX', 2 * delay)
  return { 1, '', replaced, event_id }
end

if kind == 'throttle' then
  local max, window = tonumber(ARGV[13]), tonumber(ARGV[14])
  local tk = B .. 'throttle:' .. key
  local count = tonumber(redis.call('GET', tk) or '0')
  if not count or count < 0 or count ~= math.floor(count) then count = 0 end -- foreign value
  if count >= max then return { 0, '', '', '' } end
  -- A fixed window that starts at its first accepted dispatch and ends when the key expires.
  if count == 0 then
    redis.call('SET', tk, 1, 'PX', window)
  else
    redis.call('INCR', tk)
    if redis.call('PTTL', tk) < 0 then redis.call('PEXPIRE', tk, window) end
  end
  return { 1, '', '', create_job(nil) }
end

if kind == 'dedup' then
  local dk = B .. 'dedup:' .. key
  local owner = redis.call('GET', dk)
  if owner then
    local ok = B .. owner
    if redis.call('TYPE', ok).ok == 'hash' then
      local state = redis.call('HGET', ok, 'state')
      for s in string.gmatch(ARGV[13], '[^,]+') do
        if s == state then return { 0, owner, '', '' } end
      end
    end
  end
  -- No owner, the owner is gone, or its state does not block: this job takes the key over.
  local event_id = create_job({ 'dedupKey', dk })
  redis.call('SET', dk, id)
  return { 1, '', '', event_id }
end

-- One fire time of a schedule (docs/design.md#scheduling): dispatched at most once, however
-- many leaders try (the mark only moves forward), and not while the schedule's previous job
-- is unfinished unless overlap is allowed. Replies: {1, ...} created; {0, previous job id}
-- skipped for overlap (the fire time counts as handled); {0, ''} already handled.
if kind == 'schedule' then
  local fire, overlap, keep = tonumber(ARGV[13]), ARGV[14], ARGV[15]
  local mk = B .. 'schedule:' .. key
  local have = redis.call('TYPE', mk).ok
  if have ~= 'hash' and have ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. mk .. ' is not a hash')
  end
  local last = tonumber(redis.call('HGET', mk, 'fire') or '')
  if last and last >= fire then return { 0, '', '', '' } end
  if overlap ~= '1' then
    local prev = redis.call('HGET', mk, 'jobId')
    if prev then
      local state = redis.call('HGET', B .. prev, 'state')
      if state == 'waiting' or state == 'delayed' or state == 'active' or state == 'retrying' then
        redis.call('HSET', mk, 'fire', fire)
        redis.call('PEXPIRE', mk, keep)
        return { 0, prev, '', '' }
      end
    end
  end
  local event_id = create_job({ 'schedule', key, 'fireAt', fire })
  redis.call('HSET', mk, 'fire', fire, 'jobId', id)
  redis.call('PEXPIRE', mk, keep)
  return { 1, '', '', event_id }
end

return redis.error_reply('ERR unknown flow kind ' .. tostring(kind))
