--- KEYS: @task
--- ARGV:
-- REPAIR: a task's structural key holds the wrong type (written by something else):
-- move it aside as <key>:malformed:<ms> so the queue works again and nothing is deleted.
-- Called by the client after a script failed with WRONGTYPE, before retrying it.
-- Returns the keys that were moved.
local want = { 'list', 'zset', 'zset', 'list', 'stream', 'zset', 'zset', 'zset', 'zset', 'zset', 'set',
  'stream' }
local now = now_ms()
local moved = {}
for i, key in ipairs(KEYS) do
  local have = redis.call('TYPE', key).ok
  if have ~= want[i] and have ~= 'none' then
    redis.call('RENAME', key, key .. ':malformed:' .. now)
    moved[#moved + 1] = key
  end
end
return moved
