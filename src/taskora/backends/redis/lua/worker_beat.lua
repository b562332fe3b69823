--- KEYS: records expiries
--- ARGV: id record ttlMs
-- WORKER_BEAT: a worker process announces itself, refreshes its entry, or (record '') leaves
-- the registry (docs/design.md#workers).
-- KEYS: <root>:{:workers} (hash: id -> record), <root>:{:workers}:expiry (zset: id -> the ms
--       after which the entry counts as gone); one cluster slot of their own
-- ARGV: id, record (the JSON the core wrote; '' = remove), ttlMs (how long it stays alive
--       without another beat)
-- Every call first removes the entries already past their time (workers that died without a
-- clean close), on the server's clock: readers filter by that clock too, so a host whose
-- clock is off neither keeps a dead worker listed nor drops a live one.
-- Returns how many gone entries it removed.
local now = now_ms()
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for i = 1, #gone do
  redis.call('HDEL', KEYS[1], gone[i])
  redis.call('ZREM', KEYS[2], gone[i])
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
end
return #gone
