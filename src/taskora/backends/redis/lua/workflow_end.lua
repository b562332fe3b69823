--- KEYS: wf
--- ARGV: wfId channel state node message keepMs
-- WORKFLOW_END: a running workflow fails or is cancelled (docs/design.md#workflows).
-- KEYS: <root>:{:wf}:<id> (see workflow_create.lua)
-- ARGV: workflow id, the end channel (<root>:{:wf}:done), state ('failed' | 'cancelled'),
--       the node that ended it (-1: a cancel from a handle, -2: its ttl), the error or
--       reason, keepMs (retention of the ended record)
-- Returns { node, task, ... }: the nodes that were queued (their jobs waiting or running),
-- now marked cancelled, for the caller to cancel. The same ender calling again (a replay
-- after a crash before the cancels were sent) gets the same list; any other caller gets
-- nothing, so the steps the cascade cancels do not cascade again. A node that completed
-- cannot end the workflow any more (it may be failed by a stall check after its advance).
local key = KEYS[1]
local st = redis.call('HGET', key, 'state')
if not st then return {} end
local node = ARGV[4]
local n = tonumber(redis.call('HGET', key, 'n'))
local out = {}
if st == 'running' then
  if tonumber(node) >= 0 then
    local ns = redis.call('HGET', key, 'n:' .. node .. ':state')
    if not ns or ns == 'completed' then return {} end
    redis.call('HSET', key, 'n:' .. node .. ':state', ARGV[3], 'n:' .. node .. ':error', ARGV[5])
  end
  local now = now_ms()
  redis.call('HSET', key, 'state', ARGV[3], 'finishedOn', now, 'endedBy', node,
    ARGV[3] == 'failed' and 'error' or 'cancelReason', ARGV[5])
  for i = 0, n - 1 do
    local q = 'n:' .. i .. ':'
    if redis.call('HGET', key, q .. 'state') == 'queued' then
      redis.call('HSET', key, q .. 'state', 'cancelled')
      out[#out + 1] = i
      out[#out + 1] = redis.call('HGET', key, q .. 'task')
    end
  end
  redis.call('PEXPIRE', key, ARGV[6])
  redis.call('PUBLISH', ARGV[2], now .. '-0\n' .. ARGV[1] .. '\n' .. ARGV[3] .. '\n' .. ARGV[5])
  return out
end
if redis.call('HGET', key, 'endedBy') ~= node then return {} end
for i = 0, n - 1 do
  local q = 'n:' .. i .. ':'
  local g = redis.call('HMGET', key, q .. 'state', q .. 'task')
  if g[1] == 'cancelled' and tostring(i) ~= node then
    out[#out + 1] = i
    out[#out + 1] = g[2]
  end
end
return out
