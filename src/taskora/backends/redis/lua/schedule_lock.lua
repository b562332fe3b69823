--- KEYS: lock
--- ARGV: token ttlMs release
-- SCHEDULE_LOCK: take, renew or give up the scheduler's leader lock (docs/design.md#scheduling).
-- KEYS: <root>:{schedules}:lock (the only key: one cluster slot)
-- ARGV: token, ttlMs, release ('1' = give it up if we hold it)
-- Returns 1 when this token holds the lock afterwards, else 0. The lock's lifetime is kept
-- by the server (PX), so a leader whose host clock is wrong cannot stretch it.
local held = redis.call('GET', KEYS[1])
if ARGV[3] == '1' then
  if held == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
