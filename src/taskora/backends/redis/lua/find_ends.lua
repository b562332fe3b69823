--- KEYS: @task
--- ARGV: start ids...
-- FIND_ENDS: the latest entry of each given job in the task's `done` stream. A waiter asks
-- only for jobs whose hash is gone: a job trimmed by retention before its waiter looked still
-- has its end (small results inline) in the stream, and the waiter reads it from there.
-- Rare path (never per result), so the scan is bounded only by `start`.
-- KEYS: the standard per-task keys (lib.lua). ARGV: start (a stream id or '-'), job ids.
-- Returns flat (job id, state, detail or nil) for each job found, in stream order.
local want = {}
for i = 2, #ARGV do want[ARGV[i]] = true end
local found, order = {}, {}
local start = ARGV[1]
while true do
  local page = redis.call('XRANGE', K.done, start, '+', 'COUNT', 1000)
  for _, entry in ipairs(page) do
    local f = entry[2]
    local job, state, detail
    for i = 1, #f, 2 do
      if f[i] == 'jobId' then job = f[i + 1]
      elseif f[i] == 'state' then state = f[i + 1]
      elseif f[i] == 'detail' then detail = f[i + 1] end
    end
    if job and state and want[job] then
      if not found[job] then order[#order + 1] = job end
      found[job] = { state, detail or false }
    end
  end
  if #page < 1000 then break end
  start = '(' .. page[#page][1]
end
local out = {}
for _, job in ipairs(order) do
  out[#out + 1] = job
  out[#out + 1] = found[job][1]
  out[#out + 1] = found[job][2]
end
return out
