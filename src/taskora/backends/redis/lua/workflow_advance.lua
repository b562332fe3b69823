--- KEYS: wf
--- ARGV: wfId channel node result keepMs
-- WORKFLOW_ADVANCE: a step completed; record it and return what it unblocks, atomically
-- (docs/design.md#workflows). O(the step): its own fields, a counter per node waiting for it,
-- and the input of each node it unblocks.
-- KEYS: <root>:{:wf}:<id> (see workflow_create.lua)
-- ARGV: workflow id, the end channel (<root>:{:wf}:done), node, its result (JSON), keepMs
--       (retention of the record once the workflow completes)
-- Returns { state, then per unblocked node: node, task, data, version, maxAttempts }, state
-- 'missing' when there is no record. A node already completed (the step ran again after a
-- crash between this script and the enqueue) changes nothing and returns the nodes it
-- unblocked that have not completed yet: their enqueue is repeated, and is a no-op for a job
-- that exists. The last node completes the workflow: result filled in, the end published
-- for waiters as a job's end is ("<entry>\n<id>\ncompleted[\n<result>]").
local key = KEYS[1]
local st = redis.call('HGET', key, 'state')
if not st then return { 'missing' } end
if st ~= 'running' then return { st } end
local p = 'n:' .. ARGV[3] .. ':'
local f = redis.call('HMGET', key, p .. 'state', p .. 'next')
if not f[1] then return { 'missing' } end
local function fill(template)
  return (string.gsub(template, '#(%d+)', function(i)
    return redis.call('HGET', key, 'n:' .. i .. ':result') or 'null'
  end))
end
local ready, left = {}, nil
if f[1] ~= 'completed' then
  redis.call('HSET', key, p .. 'state', 'completed', p .. 'result', ARGV[4])
  left = redis.call('HINCRBY', key, 'left', -1)
  for j in string.gmatch(f[2], '%d+') do
    if redis.call('HINCRBY', key, 'n:' .. j .. ':wait', -1) == 0 then ready[#ready + 1] = j end
  end
else
  left = tonumber(redis.call('HGET', key, 'left'))
  for j in string.gmatch(f[2], '%d+') do
    local g = redis.call('HMGET', key, 'n:' .. j .. ':wait', 'n:' .. j .. ':state')
    if g[1] == '0' and g[2] == 'queued' then ready[#ready + 1] = j end
  end
end
local out = { 'running' }
for _, j in ipairs(ready) do
  local q = 'n:' .. j .. ':'
  local g = redis.call('HMGET', key, q .. 'task', q .. 'v', q .. 'attempts', q .. 'data', q .. 'in')
  redis.call('HSET', key, q .. 'state', 'queued')
  out[#out + 1] = j
  out[#out + 1] = g[1]
  out[#out + 1] = g[4] or fill(g[5] or 'null')
  out[#out + 1] = g[2]
  out[#out + 1] = g[3]
end
if left == 0 then
  local now = now_ms()
  local result = fill(redis.call('HGET', key, 'out'))
  redis.call('HSET', key, 'state', 'completed', 'result', result, 'finishedOn', now)
  redis.call('PEXPIRE', key, ARGV[5])
  local message = now .. '-0\n' .. ARGV[1] .. '\ncompleted'
  if #result <= MAX_INLINE_RESULT then message = message .. '\n' .. result end
  redis.call('PUBLISH', ARGV[2], message)
  out[1] = 'completed'
end
return out
