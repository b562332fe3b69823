--- KEYS: meta
--- ARGV: wireVersion minCompat writtenBy
-- HANDSHAKE: record this wire version in the meta hash on first use; return what is stored.
local now = redis.call('TIME')
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'wireVersion', ARGV[1], 'minCompat', ARGV[2], 'writtenBy', ARGV[3],
    'writtenAt', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
end
return redis.call('HMGET', KEYS[1], 'wireVersion', 'minCompat', 'writtenBy', 'writtenAt')
