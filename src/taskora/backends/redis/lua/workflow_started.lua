--- KEYS: wf
--- ARGV:
-- WORKFLOW_STARTED: the roots are enqueued; a running record now lives until it ends (then
-- it keeps the retention its end gave it: an ended record keeps its expiry).
-- KEYS: <root>:{:wf}:<id> (see workflow_create.lua)
if redis.call('HGET', KEYS[1], 'state') == 'running' then redis.call('PERSIST', KEYS[1]) end
return 1
