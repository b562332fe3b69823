--- KEYS: wf
--- ARGV: version doc keepMs
-- WORKFLOW_PUT: write a workflow's document if its version is unchanged (docs/design.md#workflows).
-- KEYS: <root>:{wf:<id>} (hash: v, doc; the only key: one cluster slot)
-- ARGV: expected version (0 = create), the new document, keepMs (> 0: expire after it,
--       the retention of a finished workflow; the server's clock keeps it)
-- Returns 1 when written, 0 when another writer got there first.
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', v + 1, 'doc', ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
