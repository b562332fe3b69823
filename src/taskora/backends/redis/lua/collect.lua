--- KEYS: @task
--- ARGV: B #items items{id item version maxAttempts key delayMs maxSize maxWaitMs}
-- COLLECT: append items to collect buffers and (re)arm their batch jobs, in one step
-- (the reference's COLLECT_PUSH, same keys; docs/design.md#collect). Every collect dispatch
-- of a task made in the same event-loop turn shares one call, in dispatch order.
-- KEYS: the standard per-task keys (lib.lua).
-- ARGV: B, n, then per item: id (its dispatch), item (JSON), _v, maxAttempts, key, delayMs,
--       maxSize (0 = none), maxWaitMs (0 = none).
-- Keys touched besides KEYS (all share the task's hash tag, so one cluster slot):
--   B..'collect:'..key..':items'  list of the buffered items, in dispatch order
--   B..'collect:'..key..':meta'   hash count, firstAt, lastAt
--   B..'collect:'..key..':job'    id of the buffer's batch job (deleted when it flushes)
--   B..'collect:seen'             zset of recent dispatch ids: a call re-sent after a lost
--                                 reply appends nothing (kept 2 minutes)
-- The batch job is an ordinary delayed job (data '[]', field collectKey) scored at
-- min(last append + delay, first append + maxWait); each append moves that score, and the
-- promotion that makes it due moves the items into its data (collect_drain in lib.lua).
-- At maxSize items the drain happens here and the job is waiting at once.
-- Returns, per item, the id of the batch job it joined ('' = its own dispatch id).
local B, n = ARGV[1], tonumber(ARGV[2])
local seen = B .. 'collect:seen'
-- Every key this script may write is checked before the first write (no half-done call).
local want = { [K.wait] = 'list', [K.delayed] = 'zset', [K.marker] = 'zset',
  [K.events] = 'stream', [seen] = 'zset' }
for i = 0, n - 1 do
  local ck = B .. 'collect:' .. ARGV[3 + i * 8 + 4]
  want[ck .. ':items'], want[ck .. ':meta'], want[ck .. ':job'] = 'list', 'hash', 'string'
end
for k, kind in pairs(want) do
  local have = redis.call('TYPE', k).ok
  if have ~= kind and have ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. k .. ' is not a ' .. kind)
  end
end
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', seen, '-inf', now - 120000)

local function push(id, item, version, max_attempts, key, delay, max_size, max_wait)
  if redis.call('ZADD', seen, 'NX', now, id) == 0 then
    return '' -- this dispatch was already appended
  end
  local ck = B .. 'collect:' .. key
  local ik, mk, jobk = ck .. ':items', ck .. ':meta', ck .. ':job'
  local count = redis.call('RPUSH', ik, item)
  redis.call('HSET', mk, 'count', count, 'lastAt', now)
  if count == 1 then redis.call('HSET', mk, 'firstAt', now) end
  -- The buffer's batch job, while it is still the pending one; else this dispatch's id
  -- starts a new one (also after a cancel of the old one: the buffered items are not lost).
  local batch = redis.call('GET', jobk)
  if not (batch and redis.call('HGET', B .. batch, 'state') == 'delayed'
      and redis.call('HGET', B .. batch, 'collectKey') == key) then
    batch = id
    redis.call('HSET', B .. id, 'ts', now, '_v', version, 'attempt', 1,
      'maxAttempts', max_attempts, 'state', 'delayed', 'priority', 0, 'data', '[]',
      'collectKey', key)
    redis.call('SET', jobk, id)
  end
  if max_size > 0 and count >= max_size then
    redis.call('ZREM', K.delayed, batch)
    collect_drain(B, batch, key)
    redis.call('HSET', B .. batch, 'state', 'waiting')
    requeue(K, batch, 0, now)
    redis.call('ZADD', K.marker, 0, '0')
    emit(K.events, 'event', 'waiting', 'jobId', batch)
  else
    local first = tonumber(redis.call('HGET', mk, 'firstAt')) or now
    local due = now + delay
    if max_wait > 0 and first + max_wait < due then due = first + max_wait end
    redis.call('ZADD', K.delayed, due, batch)
    redis.call('ZADD', K.marker, 'LT', due, '0')
    emit(K.events, 'event', 'collect', 'jobId', batch, 'count', count, 'key', key)
  end
  if batch == id then return '' end
  return batch
end

local out = {}
for i = 0, n - 1 do
  local o = 3 + i * 8
  out[#out + 1] = push(ARGV[o], ARGV[o + 1], ARGV[o + 2], ARGV[o + 3], ARGV[o + 4],
    tonumber(ARGV[o + 5]), tonumber(ARGV[o + 6]), tonumber(ARGV[o + 7]))
end
return out
