-- COLLECT: append one item to a collect buffer and (re)arm its batch job, in one step
-- (the reference's COLLECT_PUSH, same keys; docs/design.md#collect).
-- KEYS: the standard per-task keys (lib.lua).
-- ARGV: B, id (this dispatch), item (JSON), _v, maxAttempts, key, delayMs, maxSize (0 = none),
--       maxWaitMs (0 = none).
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
-- Returns { 1, batch job id if not this dispatch's own id else '', '', '' }.
local B, id, item, version, max_attempts, key = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local delay, max_size, max_wait = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local ck = B .. 'collect:' .. key
local ik, mk, jobk, seen = ck .. ':items', ck .. ':meta', ck .. ':job', B .. 'collect:seen'
-- Every key this script may write is checked before the first write (no half-done call).
for k, want in pairs({ [K.wait] = 'list', [K.delayed] = 'zset', [K.marker] = 'zset',
    [K.events] = 'stream', [ik] = 'list', [mk] = 'hash', [jobk] = 'string', [seen] = 'zset' }) do
  local have = redis.call('TYPE', k).ok
  if have ~= want and have ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. k .. ' is not a ' .. want)
  end
end
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', seen, '-inf', now - 120000)
if redis.call('ZADD', seen, 'NX', now, id) == 0 then
  return { 1, '', '', '' } -- this dispatch was already appended
end

local count = redis.call('RPUSH', ik, item)
redis.call('HSET', mk, 'count', count, 'lastAt', now)
if count == 1 then redis.call('HSET', mk, 'firstAt', now) end

-- The buffer's batch job, while it is still the pending one; else this dispatch's id starts
-- a new one (also after a cancel of the old one: the buffered items are not lost).
local batch = redis.call('GET', jobk)
if not (batch and redis.call('HGET', B .. batch, 'state') == 'delayed'
    and redis.call('HGET', B .. batch, 'collectKey') == key) then
  batch = id
  redis.call('HSET', B .. id, 'ts', now, '_v', version, 'attempt', 1, 'maxAttempts', max_attempts,
    'state', 'delayed', 'priority', 0, 'data', '[]', 'collectKey', key)
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
if batch == id then return { 1, '', '', '' } end
return { 1, batch, '', '' }
