"""Every Redis key name taskora uses, in one place (wire format v6, docs/design.md#redis-layout).

All keys of one task share the hash tag ``{task}``, so every script touches a single cluster
slot. ``base`` is what scripts receive to build job keys themselves.
"""

from __future__ import annotations

from functools import lru_cache

from ..keys import WORKFLOWS, root, schedule_base, task_base, workflow_key

__all__ = [
    "TASK_KEY_NAMES",
    "TaskKeys",
    "WorkflowKeys",
    "root",
    "schedule_keys",
    "task_keys",
]

TASK_KEY_NAMES = (
    "wait",
    "prioritized",
    "delayed",
    "active",
    "events",
    "marker",
    "completed",
    "failed",
    "cancelled",
    "expired",
    "stalled",
    "done",
)
"""The KEYS of every per-task script (``--- KEYS: @task``), in lib.lua's order."""


class TaskKeys:
    """Keys of one task. ``standard`` is the KEYS list every per-task script receives."""

    __slots__ = ("base", "cancel_channel", "done", "events", "standard")

    def __init__(self, prefix: str | None, task: str) -> None:
        self.base = task_base(prefix, task)
        b = self.base
        self.standard: tuple[str, ...] = tuple(b + name for name in TASK_KEY_NAMES)
        self.events = b + "events"
        self.done = b + "done"  # stream, and channel of the same name: one entry per end
        self.cancel_channel = b + "cancel"

    def key(self, name: str) -> str:
        return self.base + name

    def job(self, job_id: str) -> str:
        return self.base + job_id

    def logs(self, job_id: str) -> str:
        return f"{self.base}{job_id}:logs"

    def lock(self, job_id: str) -> str:
        return f"{self.base}{job_id}:lock"

    def flow(self, kind: str, key: str) -> str:
        return f"{self.base}{kind}:{key}"


class WorkflowKeys(TaskKeys):
    """The keys of the pseudo-task ``WORKFLOWS`` under which result waiters wait for a
    workflow's end: its "job" is the workflow's record (which holds ``state``, ``result``,
    ``error`` and ``cancelReason`` as a job's hash does) and its ``done`` channel is the one
    the workflow scripts publish ends on. Nothing else of it exists (docs/design.md#workflows)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str | None) -> None:
        super().__init__(prefix, WORKFLOWS)
        self.prefix = prefix

    def job(self, job_id: str) -> str:
        return workflow_key(self.prefix, job_id)


@lru_cache(maxsize=4096)
def task_keys(prefix: str | None, task: str) -> TaskKeys:
    return WorkflowKeys(prefix) if task == WORKFLOWS else TaskKeys(prefix, task)


def schedule_keys(prefix: str | None) -> tuple[str, str, str]:
    """The schedule records (hash), their next fire times (zset) and the leader lock.

    The reference's names (``schedules``, ``schedules:next``, ``schedules:lock``) with the
    hash tag ``{schedules}`` so the three share one cluster slot (decision 11). They cannot
    meet a task's keys: those all continue ``{task}:`` with a job id or a fixed name.
    """
    base = schedule_base(prefix)
    return base, base + ":next", base + ":lock"
