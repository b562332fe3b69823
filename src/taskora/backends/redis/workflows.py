"""Workflow records on Redis (docs/design.md#workflows).

One hash per workflow, ``<root>:{:wf}:<id>``: every workflow script touches that key and
publishes on the end channel, both under the hash tag ``{:wf}`` (one cluster slot, where a
sharded publish must stay). The other shared key there is the zset of ttl deadlines
(written before the record, so a deadline never misses its workflow; one left over for a
record never written is dropped by the sweep). The result waiter reads the end channel as it
reads a task's ``done`` channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..base import (
    Terminal,
    WorkflowAdvance,
    WorkflowInfo,
    WorkflowNode,
    WorkflowPlan,
    WorkflowRecord,
)
from ..keys import WORKFLOWS, workflow_key, workflows_base
from .scripts import WorkflowAdvanceCall, WorkflowCreate, WorkflowEnd, WorkflowRow, WorkflowStarted

if TYPE_CHECKING:
    from .backend import RedisBackend

__all__ = [
    "workflow_advance",
    "workflow_create",
    "workflow_due",
    "workflow_end",
    "workflow_read",
    "workflow_records",
    "workflow_started",
    "workflow_undue",
    "workflow_wait",
]


def _deadlines(backend: RedisBackend) -> str:
    return workflows_base(backend.prefix) + "deadlines"


def _channel(backend: RedisBackend) -> str:
    return backend.keys(WORKFLOWS).done


async def workflow_create(backend: RedisBackend, wf_id: str, plan: WorkflowPlan) -> bool:
    deadline = backend.now_ms() + plan.ttl_ms if plan.ttl_ms else 0
    rows = [
        WorkflowRow(
            s.task,
            s.version,
            s.max_attempts,
            s.data or "",
            s.inputs,
            s.waits,
            ",".join(map(str, s.then)),
        )
        for s in plan.steps
    ]
    call = WorkflowCreate(
        workflow_key(backend.prefix, wf_id), plan.name, plan.output, deadline, plan.lease_ms, rows
    )
    with backend.errors():
        if deadline:
            await backend.client.execute("ZADD", _deadlines(backend), deadline, wf_id)
        return await call.run(backend.client)


async def workflow_started(backend: RedisBackend, wf_id: str) -> None:
    with backend.errors():
        await WorkflowStarted(workflow_key(backend.prefix, wf_id)).run(backend.client)


async def workflow_advance(
    backend: RedisBackend, wf_id: str, node: int, result: str, keep_ms: int
) -> WorkflowAdvance:
    key = workflow_key(backend.prefix, wf_id)
    call = WorkflowAdvanceCall(key, wf_id, _channel(backend), node, result, keep_ms)
    with backend.errors():
        return await call.run(backend.client)


async def workflow_end(
    backend: RedisBackend, wf_id: str, state: str, node: int, message: str, keep_ms: int
) -> list[tuple[int, str]]:
    key = workflow_key(backend.prefix, wf_id)
    call = WorkflowEnd(key, wf_id, _channel(backend), state, node, message, keep_ms)
    with backend.errors():
        return await call.run(backend.client)


async def workflow_read(backend: RedisBackend, wf_id: str) -> WorkflowInfo | None:
    key = workflow_key(backend.prefix, wf_id)
    with backend.errors():
        raw = await backend.client.execute(
            "HMGET", key, "state", "name", "result", "error", "cancelReason"
        )
    state, name, result, error, reason = (
        None if v is None else v.decode("utf-8", "replace") for v in raw
    )
    if state is None:
        return None
    return WorkflowInfo(state, name or "", result, error, reason)


async def workflow_wait(
    backend: RedisBackend, wf_id: str, timeout_s: float | None
) -> Terminal | None:
    """The shared result waiter, on the pseudo-task ``WORKFLOWS`` (redis/keys.py)."""
    return await backend.waiter.wait(WORKFLOWS, wf_id, timeout_s, None)


async def workflow_due(backend: RedisBackend, limit: int) -> list[str]:
    with backend.errors():
        raw = await backend.client.execute(
            "ZRANGEBYSCORE", _deadlines(backend), "-inf", backend.now_ms(), "LIMIT", 0, limit
        )
    return [v.decode() for v in raw]


async def workflow_undue(backend: RedisBackend, wf_ids: Sequence[str]) -> None:
    if wf_ids:
        with backend.errors():
            await backend.client.execute("ZREM", _deadlines(backend), *wf_ids)


# -- for operators (the inspector, the board); never on a hot path --------------------------
_HEAD = ("state", "name", "createdAt", "finishedOn", "n", "left", "result", "error", "cancelReason")


async def workflow_records(
    backend: RedisBackend, wf_ids: Sequence[str], nodes: bool
) -> list[WorkflowRecord | None]:
    """One pipelined read per workflow: HGETALL with the nodes, else HMGET of the head."""
    if not wf_ids:
        return []
    keys = [workflow_key(backend.prefix, wf_id) for wf_id in wf_ids]
    with backend.errors():
        if nodes:
            raws = await backend.client.pipeline([("HGETALL", key) for key in keys])
            rows = [
                {_text(r[i]): _text(r[i + 1]) for i in range(0, len(r), 2)}
                if isinstance(r, list)
                else {}
                for r in raws
            ]
        else:
            raws = await backend.client.pipeline([("HMGET", key, *_HEAD) for key in keys])
            rows = [
                {k: _text(v) for k, v in zip(_HEAD, r, strict=True) if v is not None}
                if isinstance(r, list)
                else {}
                for r in raws
            ]
    return [_record(row, nodes) for row in rows]


def _record(f: dict[str, str], nodes: bool) -> WorkflowRecord | None:
    if "state" not in f:
        return None
    size = _int(f.get("n"))
    out: tuple[WorkflowNode, ...] = ()
    if nodes:
        deps: list[list[int]] = [[] for _ in range(size)]
        for i in range(size):
            for j in f.get(f"n:{i}:next", "").split(","):
                if j.isdigit() and int(j) < size:
                    deps[int(j)].append(i)
        out = tuple(
            WorkflowNode(
                f.get(f"n:{i}:task", ""),
                f.get(f"n:{i}:state", "pending"),
                tuple(deps[i]),
                f.get(f"n:{i}:data"),
                f.get(f"n:{i}:result"),
                f.get(f"n:{i}:error"),
            )
            for i in range(size)
        )
    return WorkflowRecord(
        f["state"],
        f.get("name", ""),
        _int(f.get("createdAt")),
        _int(f.get("finishedOn")),
        size,
        _int(f.get("left")),
        f.get("result"),
        f.get("error"),
        f.get("cancelReason"),
        out,
    )


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
