--- KEYS: wf
--- ARGV: name output deadlineMs leaseMs #steps steps{task version maxAttempts data inputs waits then}
-- WORKFLOW_CREATE: write a new workflow's record (docs/design.md#workflows).
-- KEYS: <root>:{:wf}:<id>, a hash (the only key: one cluster slot): state, name, createdAt,
--       out (template of the output), n (nodes), left (nodes not completed), deadline (ms,
--       when a ttl was given), and per node i: n:i:task, n:i:v, n:i:attempts, n:i:data (own
--       data) or n:i:in (template of its input: '#<node>' stands for that node's result),
--       n:i:wait (nodes it still waits for), n:i:next (the nodes waiting for it, '1,2'),
--       n:i:state (pending | queued | completed | failed | cancelled), later n:i:result.
-- ARGV: name, output template, deadline (epoch ms, 0 = none), lease (ms the record lives
--       unless WORKFLOW_STARTED follows: a dispatcher that died before enqueuing the roots
--       leaves nothing for good), then per node: task, version, maxAttempts, data ('' = none),
--       input template, waits, next.
-- Returns 1 when created, 0 when the id exists. Nodes that wait for nothing (the roots) are
-- written queued: the dispatcher enqueues them next, so a cancel reaches them too.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local count = tonumber(ARGV[5])
local f = { 'state', 'running', 'name', ARGV[1], 'createdAt', now_ms(), 'out', ARGV[2],
  'n', count, 'left', count }
if tonumber(ARGV[3]) > 0 then f[#f + 1] = 'deadline'; f[#f + 1] = ARGV[3] end
for i = 0, count - 1 do
  local o = 6 + i * 7
  local p = 'n:' .. i .. ':'
  f[#f + 1] = p .. 'task'; f[#f + 1] = ARGV[o]
  f[#f + 1] = p .. 'v'; f[#f + 1] = ARGV[o + 1]
  f[#f + 1] = p .. 'attempts'; f[#f + 1] = ARGV[o + 2]
  if ARGV[o + 3] ~= '' then
    f[#f + 1] = p .. 'data'; f[#f + 1] = ARGV[o + 3]
  else
    f[#f + 1] = p .. 'in'; f[#f + 1] = ARGV[o + 4]
  end
  f[#f + 1] = p .. 'wait'; f[#f + 1] = ARGV[o + 5]
  f[#f + 1] = p .. 'next'; f[#f + 1] = ARGV[o + 6]
  f[#f + 1] = p .. 'state'; f[#f + 1] = ARGV[o + 5] == '0' and 'queued' or 'pending'
  if #f > 4000 then -- unpack has a stack limit: write in slices
    redis.call('HSET', KEYS[1], unpack(f))
    f = {}
  end
end
if #f > 0 then redis.call('HSET', KEYS[1], unpack(f)) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
