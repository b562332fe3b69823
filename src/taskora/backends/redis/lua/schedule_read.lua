--- KEYS: records times
--- ARGV: name
-- SCHEDULE_READ: schedules with their next fire time, in one consistent read.
-- KEYS: <root>:{schedules}, <root>:{schedules}:next
-- ARGV: name ('' = all)
-- Returns { name, record, nextMs or '', ... }.
local out = {}
local function add(name, rec)
  out[#out + 1] = name
  out[#out + 1] = rec
  out[#out + 1] = redis.call('ZSCORE', KEYS[2], name) or ''
end
if ARGV[1] ~= '' then
  local rec = redis.call('HGET', KEYS[1], ARGV[1])
  if rec then add(ARGV[1], rec) end
  return out
end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do add(all[i], all[i + 1]) end
return out
