--- KEYS: @task
--- ARGV: B ttlMs held{id token}
-- EXTEND_LOCKS: renew the locks of jobs a worker holds.
-- ARGV: B, ttlMs, then pairs id, token.
-- Returns per job: 1 renewed, 0 lost (not ours any more), -1 renewed but cancellation
-- was requested (the worker stops the handler; pub/sub is the fast path, this the net).
local B = ARGV[1]
local ttl = ARGV[2]
local out = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local jk = B .. id
  if redis.call('GET', jk .. ':lock') == token then
    redis.call('PEXPIRE', jk .. ':lock', ttl)
    redis.call('SREM', K.stalled, id)
    if redis.call('HEXISTS', jk, 'cancelledAt') == 1 then
      out[#out + 1] = -1
    else
      out[#out + 1] = 1
    end
  else
    out[#out + 1] = 0
  end
end
return out
