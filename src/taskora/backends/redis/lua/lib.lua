-- Shared helpers: defined once in the Functions library, or prepended to each script sent by
-- EVALSHA (see scripts.py).
-- Conventions: B is the task's key base "taskora[:pfx]:{task}:"; a job's hash is B..id.
-- Every script reads the clock with TIME (docs/design.md#decisions, 2: due times use the server's clock).

-- Every per-task script receives the same KEYS, in this order; K names them by role, and NOW
-- is the clock as now_ms() last read it (a string). Both are per call: enter() sets them as a
-- script starts (scripts.py puts that call before each script, whether it runs by EVALSHA,
-- below these helpers, or as a function of the library that holds them once).
local K, NOW = {}, '0'
local function enter(KEYS)
  K = {
    wait = KEYS[1], prioritized = KEYS[2], delayed = KEYS[3], active = KEYS[4],
    events = KEYS[5], marker = KEYS[6], completed = KEYS[7], failed = KEYS[8],
    cancelled = KEYS[9], expired = KEYS[10], stalled = KEYS[11], done = KEYS[12],
  }
  -- Jobs a worker claimed ahead of its free slots (additive to wire format v6): a zset of ids
  -- scored by claim rank (a prioritized job's own score, below 0; a plain job's claim sequence
  -- number from B..'reserved:seq', above 0: claim order, and the order they go back in). They
  -- stay `waiting` in their hash, hold a lock (B..id..':lock') like an active job, and become
  -- active only when their worker starts them (the 'start' outcome of FINISH_AND_CLAIM).
  K.reserved = string.sub(KEYS[1], 1, -5) .. 'reserved'
  NOW = '0'
end

-- now_ms() keeps the clock in NOW as a string too. A Lua number passed to redis.call is
-- formatted with %.14g on every call (a tenth of the server's work on the hot paths, by
-- callgrind): the hot calls pass strings (NOW, literals) instead.
local function now_ms()
  local t = redis.call('TIME')
  local ms = math.floor(tonumber(t[2]) / 1000)
  NOW = t[1] .. string.format('%03d', ms)
  return tonumber(t[1]) * 1000 + ms
end

local EVENTS_MAXLEN = '10000'

local function emit(events, ...)
  return redis.call('XADD', events, 'MAXLEN', '~', EVENTS_MAXLEN, '*', ...)
end

-- A job reached its end. The events stream gets the reference's entry (wire format v6).
-- For result waiters (ours, additive) the end is appended to the task's `done` stream and
-- published on the channel of the same name as "<entry id>\n<job id>\n<state>[\n<detail>]",
-- results up to MAX_INLINE_RESULT bytes inline: waiters are pushed every end and need no
-- command to receive it; after a reconnect they catch up from the stream.
local MAX_INLINE_RESULT = 4096
local function publish_end(id, state, detail)
  local sid
  if detail then
    sid = redis.call('XADD', K.done, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'jobId', id,
      'state', state, 'detail', detail)
    redis.call('PUBLISH', K.done, sid .. '\n' .. id .. '\n' .. state .. '\n' .. detail)
  else
    sid = redis.call('XADD', K.done, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'jobId', id,
      'state', state)
    redis.call('PUBLISH', K.done, sid .. '\n' .. id .. '\n' .. state)
  end
end

local function finished(id, state, field, value)
  if field and state ~= 'completed' then
    emit(K.events, 'event', state, 'jobId', id, field, value)
  else
    emit(K.events, 'event', state, 'jobId', id)
  end
  if field and (state ~= 'completed' or #value <= MAX_INLINE_RESULT) then
    publish_end(id, state, value)
  else
    publish_end(id, state)
  end
end

-- Priority > 0 waits in a sorted set scored -priority*1e13 + ts (wire format v6); priority 0
-- waits in a FIFO list (LPUSH in, RPOP out). `front` puts a job that was claimed once before
-- (recovered from a dead worker, given back at shutdown, unparked) ahead of its band, with
-- its original ts: it is older than anything still waiting.
-- A newly waiting prioritized job that outranks a job some worker holds claimed ahead
-- publishes an empty message on the cancel channel: workers give their buffers back and
-- claim again, so it runs first.
local function requeue(K, id, priority, ts, front)
  if priority > 0 then
    local score = -priority * 1e13 + ts
    redis.call('ZADD', K.prioritized, score, id)
    if not front then
      local last = redis.call('ZRANGE', K.reserved, -1, -1, 'WITHSCORES')
      if last[2] and score < tonumber(last[2]) then
        redis.call('PUBLISH', string.sub(K.reserved, 1, -9) .. 'cancel', '')
      end
    end
  elseif front then
    redis.call('RPUSH', K.wait, id)
  else
    redis.call('LPUSH', K.wait, id)
  end
end

-- A job whose concurrency key is at its limit waits in that key's own FIFO (B..'parked:'..key),
-- out of the main queue: it holds up no other key's jobs, and nobody polls for it. When a
-- slot of the key frees up, the key's oldest parked job goes back to the front of the queue,
-- so the jobs of one key run in dispatch order (concurrency_limit=1 serializes a key).
local function park(B, id, key)
  redis.call('RPUSH', B .. 'parked:' .. key, id)
  redis.call('INCR', B .. 'parked')
end

local function release_concurrency(K, B, key)
  if not key then return false end
  local left = redis.call('DECR', B .. 'conc:' .. key)
  if left <= 0 then redis.call('DEL', B .. 'conc:' .. key) end
  local id = redis.call('LPOP', B .. 'parked:' .. key)
  if id then
    redis.call('DECR', B .. 'parked')
    local f = redis.call('HMGET', B .. id, 'state', 'priority', 'ts')
    if f[1] == 'waiting' then
      requeue(K, id, tonumber(f[2] or '0') or 0, tonumber(f[3] or '') or 0, true)
    end
  end
  return true
end

-- Take a waiting job out of wherever it waits (list, prioritized set, or parked by its key).
-- A job claimed ahead is taken from its worker (which hears it on the cancel channel).
local function unqueue_waiting(K, B, id, conc_key)
  if redis.call('ZREM', K.prioritized, id) == 1 then return true end
  if redis.call('ZREM', K.reserved, id) == 1 then
    redis.call('DEL', B .. id .. ':lock')
    redis.call('PUBLISH', B .. 'cancel', id)
    return true
  end
  if redis.call('LREM', K.wait, 0, id) > 0 then return true end
  if conc_key and redis.call('LREM', B .. 'parked:' .. conc_key, 0, id) > 0 then
    redis.call('DECR', B .. 'parked')
    return true
  end
  if redis.call('ZREM', B .. 'newer', id) == 1 then -- parked for a newer worker
    redis.call('DECR', B .. 'parked')
    return true
  end
  return false
end

local function release_dedup(dedup_key, id)
  if dedup_key and redis.call('GET', dedup_key) == id then
    redis.call('DEL', dedup_key)
  end
end

-- End a job, the one sequence every way of ending shares (the memory backend's _end): state
-- and finish time (plus `value` under the hash field `stored`, when given), the terminal set,
-- its dedup key released, the event and the end for waiters (`field`: result, error or
-- reason). The caller has already released its lock, active entry and concurrency slot.
local function end_job(K, jk, id, state, now, dedup, field, value, stored)
  if stored then
    redis.call('HSET', jk, 'state', state, 'finishedOn', now, stored, value)
  else
    redis.call('HSET', jk, 'state', state, 'finishedOn', now)
  end
  redis.call('ZADD', K[state], now, id)
  release_dedup(dedup, id)
  finished(id, state, field, value)
end

-- A job whose stored form is unusable ends failed with a reason, never vanishes
-- (docs/design.md#decisions, 4). A key of the wrong type is moved aside so the id gets a real hash.
local function fail_malformed(K, B, id, reason, now)
  local jk = B .. id
  local kind = redis.call('TYPE', jk).ok
  if kind ~= 'hash' and kind ~= 'none' then
    redis.call('RENAME', jk, jk .. ':malformed')
  end
  redis.call('LREM', K.active, 0, id)
  local msg = 'malformed job: ' .. reason
  end_job(K, jk, id, 'failed', now, nil, 'error', msg, 'error')
end

local function expire_job(K, B, id, now)
  local jk = B .. id
  end_job(K, jk, id, 'expired', now, redis.call('HGET', jk, 'dedupKey'))
end

-- Flush a collect buffer into its batch job (docs/design.md#collect): the buffered items
-- become the job's data, a JSON array in dispatch order (items are JSON: decision 9), and
-- the buffer is gone, in the same script that makes the job runnable, so an append either
-- lands in this batch or starts the next one. Only the buffer's own batch job (`:job`)
-- takes the items. Returns how many items the batch holds.
local function collect_drain(B, id, key)
  local ck = B .. 'collect:' .. key
  local n = 0
  if redis.call('GET', ck .. ':job') == id then
    local items = redis.call('LRANGE', ck .. ':items', 0, -1)
    n = #items
    redis.call('DEL', ck .. ':items', ck .. ':meta', ck .. ':job')
    redis.call('HSET', B .. id, 'data', '[' .. table.concat(items, ',') .. ']')
  end
  redis.call('HDEL', B .. id, 'collectKey') -- a retry runs the same batch again
  return n
end

-- Move due delayed/retrying jobs to waiting (or expire them), oldest due first.
-- Returns the delayed set's first due time (false = empty) when it moved nothing, so rearm()
-- need not read it again: one command on the common pass where nothing is due.
local function promote(K, B, now)
  local first = redis.call('ZRANGE', K.delayed, '0', '0', 'WITHSCORES')
  if not first[2] then return false end
  if tonumber(first[2]) > now then return first[2] end
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', NOW, 'LIMIT', '0', '200')
  for _, id in ipairs(due) do
    redis.call('ZREM', K.delayed, id)
    local jk = B .. id
    if redis.call('TYPE', jk).ok ~= 'hash' then
      fail_malformed(K, B, id, 'job hash missing or of the wrong type', now)
    else
      local f = redis.call('HMGET', jk, 'state', 'expireAt', 'priority', 'collectKey')
      if f[4] and f[1] == 'delayed' and collect_drain(B, id, f[4]) == 0 then
        -- a batch job whose buffer another batch took (or none had items): nothing to run
        local why = 'empty collect batch'
        end_job(K, jk, id, 'cancelled', now, nil, 'reason', why, 'cancelReason')
      elseif f[1] == 'delayed' or f[1] == 'retrying' then
        local expire_at = f[2] and tonumber(f[2])
        local priority = tonumber(f[3] or '0')
        if f[2] and not expire_at then
          fail_malformed(K, B, id, 'expireAt is not a number', now)
        elseif not priority then
          fail_malformed(K, B, id, 'priority is not a number', now)
        elseif expire_at and expire_at <= now then
          expire_job(K, B, id, now)
        else
          requeue(K, id, priority, now)
          redis.call('HSET', jk, 'state', 'waiting')
          emit(K.events, 'event', 'promoted', 'jobId', id)
        end
      end
    end
  end  return nil -- moved some: the delayed set changed
end

-- Claim up to `want` waiting jobs in (priority desc, dispatch time asc) order: every job
-- in the prioritized set outranks every priority-0 job in the list (docs/design.md#decisions, 1).
-- The first `want` become active (their handlers start now); up to `reserve` more are
-- claimed ahead (reserved, still `waiting`). A job with a concurrency key or a ttl is never
-- claimed ahead: it goes back where it was and the claim stops there, keeping the order.
-- Returns the claimed jobs (flat: id, data, _v, attempt, ts, token, reserved '1'/'0', trace per
-- job) and whether jobs were left waiting because a concurrency key or the singleton gate
-- blocked them.
-- max_v > 0: the worker runs payload versions up to max_v only. A newer job is parked in
-- the zset `newer` (score = version * 10^9 + sequence: by version, then FIFO) for a worker of
-- its version, which takes parked jobs first (docs/design.md#versions). Workers of version 1
-- cannot take any parked job, so they never read `newer`.
local NEWER_SPAN = 1000000000 -- keeps scores within the 14 digits Lua formats exactly
local function claim(K, B, now, want, reserve, lock_ttl, token_base, seq, singleton, max_v)
  local out = {}
  local parked_newer = false
  if singleton == '1' then reserve = 0 end
  if want + reserve <= 0 then return out, false end
  local active_type = redis.call('TYPE', K.active).ok
  if active_type ~= 'list' and active_type ~= 'none' then
    -- before any pop, so nothing is lost; the client repairs the key and runs again
    error({ err = 'WRONGTYPE ' .. K.active .. ' is not a list' })
  end
  if singleton == '1' then -- at most one active job of the task, across all workers
    if want <= 0 then return out, false end
    if redis.call('LLEN', K.active) > 0 then return out, true end
    want = 1
  end
  local total = want + reserve
  local got, pops = 0, 0
  local drained = false -- both queues were found empty: rearm() need not count them
  local prio_left = true
  local older, next_older = nil, 1
  if max_v > 1 then
    older = redis.call('ZRANGEBYSCORE', B .. 'newer', '-inf', (max_v + 1) * NEWER_SPAN - 1,
      'LIMIT', 0, total)
  end
  while got < total and pops < total + 100 do
    local id, score, score_s
    if older and older[next_older] then
      id = older[next_older]; next_older = next_older + 1
      redis.call('ZREM', B .. 'newer', id)
      redis.call('DECR', B .. 'parked')
    else
      -- nothing in this loop adds to the prioritized set (a push-back ends it), so once it
      -- is found empty, the plain list alone is popped: one command per job, not two
      local z = prio_left and redis.call('ZPOPMIN', K.prioritized) or {}
      if z[1] then
        id = z[1]; score = tonumber(z[2]); score_s = z[2]
      else
        prio_left = false
        id = redis.call('RPOP', K.wait)
      end
    end
    if not id then drained = true; break end
    pops = pops + 1
    local jk = B .. id
    -- one read, no TYPE first: a key of another type fails the read (caught), a missing
    -- one reads all-false (told apart from a hash without these fields by EXISTS, rarely)
    local f = redis.pcall('HMGET', jk, 'state', 'expireAt', 'concurrencyKey', 'concurrencyLimit',
      'data', '_v', 'attempt', 'ts', 'priority', 'trace')
    if f.err or (not f[1] and not f[5] and redis.call('EXISTS', jk) == 0) then
      fail_malformed(K, B, id, 'job hash missing or of the wrong type', now)
    else
      local expire_at = f[2] and tonumber(f[2])
      local limit = f[4] and tonumber(f[4])
      if f[1] ~= 'waiting' then
        -- a stale queue entry (cancelled, or already claimed): drop it
      elseif f[2] and not expire_at then
        fail_malformed(K, B, id, 'expireAt is not a number', now)
      elseif f[3] and not limit then
        fail_malformed(K, B, id, 'concurrencyLimit is not a number', now)
      elseif not f[5] then
        fail_malformed(K, B, id, 'data field missing', now)
      elseif expire_at and expire_at <= now then
        expire_job(K, B, id, now)
      elseif max_v > 0 and (tonumber(f[6] or '1') or 1) > max_v then
        local v = tonumber(f[6])
        redis.call('ZADD', B .. 'newer', v * NEWER_SPAN + redis.call('INCR', B .. 'newer:seq') % NEWER_SPAN, id)
        redis.call('INCR', B .. 'parked')
        parked_newer = true
      elseif f[3] and tonumber(redis.call('GET', B .. 'conc:' .. f[3]) or '0') >= limit then
        park(B, id, f[3])
      elseif got >= want and (f[2] or f[3]) then
        if score then redis.call('ZADD', K.prioritized, score, id) else redis.call('RPUSH', K.wait, id) end
        break
      else
        got = got + 1
        local token = string.format('%s:%d', token_base, seq + got)
        redis.call('SET', jk .. ':lock', token, 'PX', lock_ttl)
        local ahead = got > want
        if ahead then
          -- a plain job's rank is a claim sequence number (jobs dispatched together share a ts)
          redis.call('ZADD', K.reserved,
            score_s or string.format('%d', redis.call('INCR', K.reserved .. ':seq')), id)
        else
          if f[3] then redis.call('INCR', B .. 'conc:' .. f[3]) end
          redis.call('LPUSH', K.active, id)
          redis.call('HSET', jk, 'state', 'active', 'processedOn', NOW)
          emit(K.events, 'event', 'active', 'jobId', id)
        end
        out[#out + 1] = id
        out[#out + 1] = f[5]
        out[#out + 1] = f[6] or '1'
        out[#out + 1] = f[7] or '1'
        out[#out + 1] = f[8] or '0'
        out[#out + 1] = token
        out[#out + 1] = ahead and '1' or '0'
        out[#out + 1] = f[10] or ''
      end
    end
  end
  return out, false, parked_newer, drained
end

-- Leave the wake-up marker saying when a worker should next try to claim:
-- 0 = now, a timestamp = the next delayed job's due time, absent = nothing to do.
-- A claim made right after a worker popped the marker (after_wait) never sets a future
-- marker: that worker blocks until the due time itself (it gets it back from us), and
-- re-adding the marker would wake it again at once. Returns the next due time (0 = none).
-- `drained`: the claim just found both queues empty; `first_due`: what promote() learned of
-- the delayed set (false = empty, a score, nil = unknown): each saves reading it again.
local function rearm(K, now, gated, released, after_wait, parked_newer, drained, first_due)
  local waiting = 0
  if not drained then
    waiting = redis.call('ZCARD', K.prioritized) + redis.call('LLEN', K.wait)
  end
  if waiting > 0 or parked_newer then -- a job parked for a newer worker: wake one
    if not (gated and not released) then
      redis.call('ZADD', K.marker, '0', '0')
    elseif not after_wait then
      redis.call('ZADD', K.marker, now + 1000, '0')
    end
    return 0
  end
  local due = first_due
  if due == nil then due = redis.call('ZRANGE', K.delayed, '0', '0', 'WITHSCORES')[2] or false end
  if due then
    if not after_wait then redis.call('ZADD', K.marker, due, '0') end
    return tonumber(due)
  end
  if not after_wait then redis.call('DEL', K.marker) end
  return 0
end
