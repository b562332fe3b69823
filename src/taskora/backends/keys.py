"""Key names shared by both backends and the tests (wire format v6, docs/design.md#redis-layout).

The memory backend keeps no Redis keys, but it stores full key names where Redis does (a
job's ``dedupKey``), so both build them here and cannot disagree.
"""

from __future__ import annotations

__all__ = [
    "WORKFLOWS",
    "meta_key",
    "root",
    "schedule_base",
    "task_base",
    "workers_keys",
    "workflow_key",
    "workflows_base",
]


def root(prefix: str | None) -> str:
    """``taskora`` or ``taskora:<prefix>``: every key of one app starts with it."""
    return "taskora" if not prefix else f"taskora:{prefix}"


def task_base(prefix: str | None, task: str) -> str:
    """A task's key base ``<root>:{task}:``; the hash tag keeps a task on one cluster slot."""
    return f"{root(prefix)}:{{{task}}}:"


def meta_key(prefix: str | None) -> str:
    return root(prefix) + ":meta"


def schedule_base(prefix: str | None) -> str:
    return f"{root(prefix)}:{{schedules}}"


def workflow_key(prefix: str | None, wf_id: str) -> str:
    """One workflow's record ``<root>:{:wf}:<id>``, in the slot of the shared workflow keys
    (deadlines, the end channel), so each workflow script stays in one cluster slot
    (docs/design.md#workflows)."""
    return f"{task_base(prefix, WORKFLOWS)}{wf_id}"


WORKFLOWS = ":wf"
"""The name under which a workflow's end reaches result waiters, as if it were a task's job:
task names cannot contain ``:``, so it is nobody's task (docs/design.md#workflows)."""


def workflows_base(prefix: str | None) -> str:
    """``<root>:{:wf}:``: the shared workflow keys (deadlines zset, end channel); the hash tag
    ``:wf`` cannot be a task's (no ``:`` in task names)."""
    return task_base(prefix, WORKFLOWS)


WORKERS = ":workers"


def workers_keys(prefix: str | None) -> tuple[str, str]:
    """The worker registry (docs/design.md#workers): ``<root>:{:workers}`` (hash: worker id ->
    its record) and ``<root>:{:workers}:expiry`` (zset: worker id -> the ms, on the server's
    clock, after which it counts as gone). The hash tag ``:workers`` is nobody's task (no
    ``:`` in task names), so both keys share a cluster slot of their own."""
    base = f"{root(prefix)}:{{{WORKERS}}}"
    return base, base + ":expiry"
