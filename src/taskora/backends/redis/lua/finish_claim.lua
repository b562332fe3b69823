--- KEYS: @task
--- ARGV: B #outcomes outcomes{id token kind payload retryDelayMs}
--- ARGV: want lockTtlMs tokenBase tokenSeq singleton completedMax failedMax afterWait reserve maxVersion
-- FINISH_AND_CLAIM: record the outcomes of held jobs, then claim up to `want` new ones.
-- One call per worker loop pass: the hot path costs one round trip per batch of jobs.
-- ARGV: B, count, then per outcome: id, token, kind, payload, retryDelayMs;
--       then want, lockTtlMs, tokenBase, tokenSeq, singleton ('1'/'0'),
--       completedMax, failedMax (retention by count, trimmed here as jobs finish),
--       afterWait ('1' when queued behind the caller's own BZPOPMIN of the marker),
--       reserve (how many more jobs to claim ahead of the free slots),
--       maxVersion (the newest payload version the worker runs; 0 = any).
-- kind: start (a job claimed ahead now runs: it becomes active here)
--       | completed (payload = result JSON) | failed | retry (payload = error message)
--       | cancelled | release (back to waiting, e.g. at shutdown).
-- Outcomes apply in the order the worker saw them (finish N, start N+1, finish N+1, ...).
-- Returns { refused ids, claimed jobs flat (id, data, _v, attempt, ts, token, reserved),
-- next due ms of a delayed job when nothing is waiting (0 = none) }.
-- An outcome is refused when the job's lock is not the caller's token: the job was
-- recovered from this worker (stall), or cancelled before it started, and is not ours.
-- Any outcome other than start for a job still claimed ahead gives it back, to the front.
local B = ARGV[1]
local count = tonumber(ARGV[2])
local now = now_ms()
local refused = {}
local released = false
local n_completed, n_failed = 0, 0
local min_due = nil -- the marker is re-armed by rearm() below
local base = 3 + count * 5

-- Count retention with a slack of 1 % of the limit: once over by more, back to the limit in
-- one batch, so a long run trims every ~limit/100 jobs, not three commands per job.
local function trim_to(set, max, budget)
  local over = redis.call('ZCARD', set) - max
  if over <= math.floor(max / 100) then return end
  if over > budget then over = budget end
  local last = string.format('%d', over - 1)
  local ids = redis.call('ZRANGE', set, '0', last)
  for _, old in ipairs(ids) do
    local ok = B .. old
    redis.call('DEL', ok, ok .. ':lock', ok .. ':logs')
  end
  redis.call('ZREMRANGEBYRANK', set, '0', last)
end

for i = 0, count - 1 do
  local o = 3 + i * 5
  local id, token, kind, payload = ARGV[o], ARGV[o + 1], ARGV[o + 2], ARGV[o + 3]
  local jk = B .. id
  local f -- the job's fields an ending outcome needs (read before anything is written)
  if redis.call('GET', jk .. ':lock') ~= token then
    refused[#refused + 1] = id
  elseif kind == 'start' then
    if redis.call('TYPE', jk).ok ~= 'hash' then
      refused[#refused + 1] = id
    elseif redis.call('ZREM', K.reserved, id) == 1 then
      redis.call('PEXPIRE', jk .. ':lock', ARGV[base + 1])
      redis.call('LPUSH', K.active, id)
      redis.call('HSET', jk, 'state', 'active', 'processedOn', NOW)
      emit(K.events, 'event', 'active', 'jobId', id)
    elseif redis.call('HGET', jk, 'state') ~= 'active' then
      refused[#refused + 1] = id
    end -- else started already, by an earlier run of this call whose reply was lost
  else
    -- no TYPE first: a key of another type fails this read (caught: refused, as before); a
    -- missing one reads all-false, told apart from a hash without `ts` by EXISTS, rarely
    f = redis.pcall('HMGET', jk, 'concurrencyKey', 'dedupKey', 'cancelReason', 'priority', 'ts',
      'state')
    if f.err or (not f[5] and redis.call('EXISTS', jk) == 0) then
      refused[#refused + 1] = id
      f = nil
    end
  end
  if not f then -- refused, or a start: done above
  -- never started: back to the front (a job claimed ahead stays `waiting` in its hash until
  -- it starts, so a job that reads `active` is not looked for among the reservations)
  elseif f[6] == 'waiting' and redis.call('ZREM', K.reserved, id) == 1 then
    redis.call('DEL', jk .. ':lock')
    requeue(K, id, tonumber(f[4] or '0') or 0, tonumber(f[5] or '') or now, true)
    released = true
  else
    redis.call('DEL', jk .. ':lock')
    -- from the tail: the oldest claim (the one most likely ending) is found first
    redis.call('LREM', K.active, '-1', id)
    if release_concurrency(K, B, f[1]) then released = true end
    if kind == 'completed' then
      end_job(K, jk, id, 'completed', NOW, f[2], 'result', payload, 'result')
      n_completed = n_completed + 1
    elseif kind == 'retry' then
      local attempt = redis.call('HINCRBY', jk, 'attempt', 1)
      local due = now + tonumber(ARGV[o + 4])
      redis.call('HSET', jk, 'state', 'retrying', 'error', payload)
      redis.call('ZADD', K.delayed, due, id)
      if not min_due or due < min_due then min_due = due end
      emit(K.events, 'event', 'retrying', 'jobId', id, 'attempt', attempt, 'nextAttemptAt', due,
        'error', payload)
    elseif kind == 'failed' then
      end_job(K, jk, id, 'failed', NOW, f[2], 'error', payload, 'error')
      n_failed = n_failed + 1
    elseif kind == 'cancelled' then
      end_job(K, jk, id, 'cancelled', NOW, f[2], 'reason', f[3] or '')
    else -- release
      redis.call('HSET', jk, 'state', 'waiting')
      requeue(K, id, tonumber(f[4] or '0') or 0, tonumber(f[5] or '') or now, true)
      released = true
      emit(K.events, 'event', 'waiting', 'jobId', id)
    end
  end
end

if n_completed > 0 or n_failed > 0 then
  local minute = math.floor(now / 60000) * 60000
  if n_completed > 0 then
    local key = B .. 'metrics:completed:' .. minute
    if redis.call('INCRBY', key, string.format('%d', n_completed)) == n_completed then
      redis.call('EXPIRE', key, '86400')
    end
    trim_to(K.completed, tonumber(ARGV[base + 5]), 2 * n_completed + 10)
  end
  if n_failed > 0 then
    local key = B .. 'metrics:failed:' .. minute
    if redis.call('INCRBY', key, n_failed) == n_failed then redis.call('EXPIRE', key, 86400) end
    trim_to(K.failed, tonumber(ARGV[base + 6]), 2 * n_failed + 10)
  end
end

-- a retry above changed the delayed set after nothing was read: promote() reads it itself
local first_due = promote(K, B, now)
local claimed, gated, parked_newer, drained = claim(K, B, now, tonumber(ARGV[base]),
  tonumber(ARGV[base + 8] or '0'), ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3]),
  ARGV[base + 4], tonumber(ARGV[base + 9] or '0') or 0)
local next_due = rearm(K, now, gated, released, ARGV[base + 7] == '1', parked_newer, drained,
  first_due)
return { refused, claimed, next_due }
