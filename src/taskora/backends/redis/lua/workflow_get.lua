--- KEYS: wf
--- ARGV:
-- WORKFLOW_GET: a workflow's document and version (docs/design.md#workflows).
-- KEYS: <root>:{wf:<id>} (hash: v, doc; the only key: one cluster slot)
-- Returns {version, doc}, or an empty array when there is no such workflow.
local got = redis.call('HMGET', KEYS[1], 'v', 'doc')
if not got[1] then return {} end
return got
