"""Workflow records for the memory backend: step for step what ``redis/lua/workflow_*.lua``
do, each call one synchronous step (as atomic as the script). Ends wake waiters directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .base import (
    ReadyStep,
    Terminal,
    WorkflowAdvance,
    WorkflowInfo,
    WorkflowNode,
    WorkflowPlan,
    WorkflowRecord,
    WorkflowStep,
)

__all__ = ["WorkflowStore"]

_REF = re.compile(r"#(\d+)")


@dataclass(slots=True)
class _Node:
    step: WorkflowStep
    waits: int
    state: str
    result: str | None = None
    error: str | None = None


@dataclass(slots=True)
class _Record:
    name: str
    nodes: list[_Node]
    output: str
    left: int
    deadline: int
    expire_at: int  # 0: none
    created_ms: int = 0
    finished_ms: int = 0
    state: str = "running"
    result: str | None = None
    error: str | None = None
    reason: str | None = None
    ended_by: int | None = None
    waiters: list[asyncio.Future[Terminal]] = field(default_factory=list)


class WorkflowStore:
    def __init__(self, clock: Callable[[], int]) -> None:
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self._deadlines: dict[str, int] = {}

    def next_deadline(self) -> int | None:
        """The earliest workflow ttl still pending (the test runner's clock stops there)."""
        return min(self._deadlines.values(), default=None)

    def _get(self, wf_id: str) -> _Record | None:
        record = self._records.get(wf_id)
        if record is not None and record.expire_at and record.expire_at <= self._clock():
            del self._records[wf_id]
            return None
        return record

    def reset(self) -> None:
        """The waiters belonged to the old event loop."""
        for record in self._records.values():
            record.waiters.clear()

    def create(self, wf_id: str, plan: WorkflowPlan) -> bool:
        if self._get(wf_id) is not None:
            return False
        now = self._clock()
        deadline = now + plan.ttl_ms if plan.ttl_ms else 0
        if deadline:
            self._deadlines[wf_id] = deadline
        nodes = [_Node(s, s.waits, "queued" if s.waits == 0 else "pending") for s in plan.steps]
        self._records[wf_id] = _Record(
            plan.name, nodes, plan.output, len(nodes), deadline, now + plan.lease_ms, now
        )
        return True

    def started(self, wf_id: str) -> None:
        record = self._get(wf_id)
        if record is not None and record.state == "running":
            record.expire_at = 0

    def advance(self, wf_id: str, node: int, result: str, keep_ms: int) -> WorkflowAdvance:
        record = self._get(wf_id)
        if record is None or not 0 <= node < len(record.nodes):
            return WorkflowAdvance("missing")
        if record.state != "running":
            return WorkflowAdvance(record.state)
        nodes = record.nodes
        this = nodes[node]
        ready: list[int] = []
        if this.state != "completed":
            this.state, this.result = "completed", result
            record.left -= 1
            for j in this.step.then:
                nodes[j].waits -= 1
                if nodes[j].waits == 0:
                    ready.append(j)
        else:
            then = this.step.then
            ready = [j for j in then if nodes[j].waits == 0 and nodes[j].state == "queued"]
        out = []
        for j in ready:
            step = nodes[j].step
            nodes[j].state = "queued"
            data = step.data if step.data is not None else self._fill(record, step.inputs)
            out.append(ReadyStep(j, step.task, data, step.version, step.max_attempts))
        state = "running"
        if record.left == 0:
            record.result = self._fill(record, record.output)
            self._finish(record, "completed", keep_ms, Terminal("completed", result=record.result))
            state = "completed"
        return WorkflowAdvance(state, tuple(out))

    def end(
        self, wf_id: str, state: str, node: int, message: str, keep_ms: int
    ) -> list[tuple[int, str]]:
        record = self._get(wf_id)
        if record is None:
            return []
        nodes = record.nodes
        if record.state == "running":
            if node >= 0:
                if node >= len(nodes) or nodes[node].state == "completed":
                    return []
                nodes[node].state, nodes[node].error = state, message
            out = []
            for i, n in enumerate(nodes):
                if n.state == "queued":
                    n.state = "cancelled"
                    out.append((i, n.step.task))
            record.ended_by = node
            if state == "failed":
                record.error = message
                terminal = Terminal("failed", error=message)
            else:
                record.reason = message
                terminal = Terminal("cancelled", reason=message or None)
            self._finish(record, state, keep_ms, terminal)
            return out
        if record.ended_by != node:
            return []
        return [
            (i, n.step.task) for i, n in enumerate(nodes) if n.state == "cancelled" and i != node
        ]

    def read(self, wf_id: str) -> WorkflowInfo | None:
        record = self._get(wf_id)
        if record is None:
            return None
        return WorkflowInfo(record.state, record.name, record.result, record.error, record.reason)

    async def wait(self, wf_id: str, timeout_s: float | None) -> Terminal | None:
        record = self._get(wf_id)
        if record is None:
            return Terminal("missing", reason="no such workflow")
        if record.state != "running":
            return _terminal(record)
        future: asyncio.Future[Terminal] = asyncio.get_running_loop().create_future()
        record.waiters.append(future)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return None
        finally:
            with contextlib.suppress(ValueError):
                record.waiters.remove(future)

    def ids(self, limit: int) -> list[str]:
        return [wf_id for wf_id in list(self._records) if self._get(wf_id) is not None][:limit]

    def record(self, wf_id: str, nodes: bool) -> WorkflowRecord | None:
        record = self._get(wf_id)
        if record is None:
            return None
        deps: list[list[int]] = [[] for _ in record.nodes]
        for i, n in enumerate(record.nodes):
            for j in n.step.then:
                deps[j].append(i)
        return WorkflowRecord(
            record.state,
            record.name,
            record.created_ms,
            record.finished_ms,
            len(record.nodes),
            record.left,
            record.result,
            record.error,
            record.reason,
            tuple(
                WorkflowNode(n.step.task, n.state, tuple(d), n.step.data, n.result, n.error)
                for n, d in zip(record.nodes, deps, strict=True)
            )
            if nodes
            else (),
        )

    def due(self, limit: int) -> list[str]:
        now = self._clock()
        ids = sorted((at, wf_id) for wf_id, at in self._deadlines.items() if at <= now)
        return [wf_id for _, wf_id in ids[:limit]]

    def undue(self, wf_ids: Sequence[str]) -> None:
        for wf_id in wf_ids:
            self._deadlines.pop(wf_id, None)

    def _finish(self, record: _Record, state: str, keep_ms: int, terminal: Terminal) -> None:
        record.state = state
        record.finished_ms = self._clock()
        record.expire_at = record.finished_ms + keep_ms
        for future in record.waiters:
            if not future.done():
                future.set_result(terminal)

    @staticmethod
    def _fill(record: _Record, template: str) -> str:
        def value(match: re.Match[str]) -> str:
            result = record.nodes[int(match.group(1))].result
            return "null" if result is None else result

        return _REF.sub(value, template)


def _terminal(record: _Record) -> Terminal:
    return Terminal(record.state, result=record.result, error=record.error, reason=record.reason)
