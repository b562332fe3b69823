"""Workflows: chains, groups and chords of task steps (docs/design.md#workflows).

A workflow is compiled at dispatch into a flat list of nodes (one per step) kept in one
document per workflow. A step is an ordinary job whose id names its workflow and node
(``wf-<workflow>-<node>``), so plain jobs carry no extra field and pay nothing. The worker
that ends a step advances the workflow *before* it acknowledges the job: it enqueues the
steps this one unblocks (their ids are fixed, so a repeated enqueue is a no-op), then
records the step in the document with a version check. A crash anywhere in between leaves
the job unacknowledged; it runs again and the advance repeats idempotently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from . import serializer
from .backends.base import NewJob
from .errors import ConfigError, JobCancelledError, JobFailedError, TaskoraError

if TYPE_CHECKING:
    from .backends.base import Backend
    from .runtime import Runtime

__all__ = [
    "Chain",
    "Chord",
    "Group",
    "Signature",
    "WorkflowHandle",
    "chain",
    "chord",
    "group",
]

STEP_PREFIX = "wf-"


class StepTask(Protocol):
    """What a step needs of its task (typed so, ``workflow`` does not import ``task``)."""

    @property
    def name(self) -> str: ...

    @property
    def app(self) -> Runtime: ...


WorkflowState = Literal["running", "completed", "failed", "cancelled"]
_MISSING = object()


class _Flow:
    def __or__(self, other: _Flow) -> Chain:
        left = self.steps if isinstance(self, Chain) else (self,)
        right = other.steps if isinstance(other, Chain) else (other,)
        return Chain((*left, *right))

    def dispatch(self, ttl: Any = None, name: str | None = None) -> WorkflowHandle:
        """Start the workflow; ``await`` the handle for its id."""
        del ttl  # not enforced yet (docs/design.md#workflows)
        app = _app_of(self)
        nodes: list[dict[str, Any]] = []
        out = _compile(self, nodes, None)  # bad input raises here, before anything is written
        doc = {"s": "running", "nodes": nodes, "out": out, "name": name or ""}
        doc["ts"] = int(time.time() * 1000)  # for listing, newest first (the board)
        handle = WorkflowHandle(app, _new_wf_id(), name)
        handle._started = asyncio.ensure_future(app._route(lambda: handle._start(doc)))
        return handle


@dataclasses.dataclass(frozen=True, slots=True)
class Signature(_Flow):
    """One step: a task and, for a first step, its data (later steps get the previous output)."""

    task: StepTask
    data: Any = _MISSING

    @property
    def has_data(self) -> bool:
        return self.data is not _MISSING


@dataclasses.dataclass(frozen=True, slots=True)
class Chain(_Flow):
    steps: tuple[_Flow, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Group(_Flow):
    steps: tuple[_Flow, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Chord(_Flow):
    header: Group
    callback: _Flow


def chain(*steps: _Flow) -> Chain:
    if not steps:
        raise ValueError("a chain needs at least one step")
    return Chain(tuple(steps))


def group(*steps: _Flow) -> Group:
    if not steps:
        raise ValueError("a group needs at least one step")
    return Group(tuple(steps))


def chord(header: Sequence[_Flow] | Group, callback: _Flow) -> Chord:
    head = header if isinstance(header, Group) else group(*header)
    return Chord(head, callback)


def _app_of(flow: _Flow) -> Runtime:
    if isinstance(flow, Signature):
        return flow.task.app
    if isinstance(flow, Chord):
        return _app_of(flow.header)
    assert isinstance(flow, (Chain, Group))
    return _app_of(flow.steps[0])


def _new_wf_id() -> str:
    return os.urandom(16).hex()


# ---- compiling: nodes {t: task, d: data | absent, in: input spec | absent, deps: [...]}
# An input spec is {"n": i} (node i's output) or {"l": [spec, ...]} (a list of outputs).


def _compile(flow: _Flow, nodes: list[dict[str, Any]], prev: Any) -> Any:
    """Append the nodes of ``flow`` run after ``prev`` (an input spec or None); return the
    spec of its output."""
    if isinstance(flow, Signature):
        node: dict[str, Any] = {"t": flow.task.name, "deps": _refs(prev), "st": "pending"}
        if flow.has_data:
            node["d"] = flow.data
        elif prev is None:
            raise ValueError(f"the first step ({flow.task.name!r}) of a workflow needs data")
        else:
            node["in"] = prev
        nodes.append(node)
        return {"n": len(nodes) - 1}
    if isinstance(flow, Chain):
        spec = prev
        for step in flow.steps:
            spec = _compile(step, nodes, spec)
        return spec
    if isinstance(flow, Group):
        if not flow.steps:
            raise ValueError("a group needs at least one step")
        return {"l": [_compile(step, nodes, prev) for step in flow.steps]}
    if isinstance(flow, Chord):
        return _compile(flow.callback, nodes, _compile(flow.header, nodes, prev))
    raise TypeError(f"not a workflow step: {flow!r}")


def _refs(spec: Any) -> list[int]:
    if spec is None:
        return []
    if "n" in spec:
        return [spec["n"]]
    return [i for s in spec["l"] for i in _refs(s)]


def _resolve(spec: Any, nodes: list[dict[str, Any]]) -> Any:
    if "n" in spec:
        return nodes[spec["n"]].get("r")
    return [_resolve(s, nodes) for s in spec["l"]]


def step_id(wf_id: str, node: int) -> str:
    return f"{STEP_PREFIX}{wf_id}-{node}"


def parse_step(job_id: str) -> tuple[str, int] | None:
    """The workflow and node of a step's job id, or None for a plain job."""
    if not job_id.startswith(STEP_PREFIX):
        return None
    wf_id, _, node = job_id[len(STEP_PREFIX) :].rpartition("-")
    return (wf_id, int(node)) if node.isdigit() else None


# ---- the engine (runs in the dispatching process, then in the workers)


async def _enqueue_node(app: Runtime, backend: Backend, wf_id: str, i: int, doc: Any) -> None:
    node = doc["nodes"][i]
    data = node["d"] if "d" in node else _resolve(node["in"], doc["nodes"])
    task = app.tasks.get(node["t"])
    if task is not None:
        job, _ = task._build(data)  # type: ignore[attr-defined]
        job = dataclasses.replace(job, id=step_id(wf_id, i))
    else:  # a task this process does not know: its defaults
        job = NewJob(id=step_id(wf_id, i), data=serializer.dumps(data, "workflow step data"))
    await backend.enqueue(node["t"], [job])


def _retention_ms(app: Runtime, state: str) -> int:
    r = app.retention
    return r.completed_age_ms if state == "completed" else r.failed_age_ms


async def _update(app: Runtime, wf_id: str, change: Any, after: Any = None) -> Any:
    """Read-modify-write the document until the version check passes. ``change(doc)``
    returns the node indexes to enqueue first (None: nothing to write)."""
    backend = await app._connected_backend()
    while True:
        got = await backend.workflow_get(wf_id)
        if got is None:
            return None
        version, raw = got
        doc = json.loads(raw)
        todo = change(doc)
        if todo is None:
            return doc
        for i in todo:
            await _enqueue_node(app, backend, wf_id, i, doc)
        keep = _retention_ms(app, doc["s"]) if doc["s"] != "running" else 0
        if await backend.workflow_put(wf_id, version, json.dumps(doc), keep):
            if after is not None:
                await after(backend, doc)
            return doc


def _ready(doc: Any) -> list[int]:
    out = []
    for i, node in enumerate(doc["nodes"]):
        if node["st"] == "pending" and all(doc["nodes"][d]["st"] == "done" for d in node["deps"]):
            node["st"] = "dispatched"
            out.append(i)
    return out


async def step_done(app: Runtime, job_id: str, result: str | None) -> None:
    """Record a completed step and enqueue what it unblocks (before the job is acked)."""
    parsed = parse_step(job_id)
    if parsed is None:
        return
    wf_id, i = parsed
    value = serializer.loads(result, "step result") if result is not None else None

    def change(doc: Any) -> list[int] | None:
        node = doc["nodes"][i]
        if doc["s"] != "running" or node["st"] == "done":
            return None
        node["st"], node["r"] = "done", value
        todo = _ready(doc)
        if all(n["st"] == "done" for n in doc["nodes"]):
            doc["s"], doc["r"] = "completed", _resolve(doc["out"], doc["nodes"])
        return todo

    await _update(app, wf_id, change)


async def step_ended(app: Runtime, job_id: str, state: str, error: str | None) -> None:
    """A step failed for good or was cancelled: end the workflow and cancel the rest."""
    parsed = parse_step(job_id)
    if parsed is None:
        return
    wf_id, i = parsed
    await _end(app, wf_id, "failed" if state == "failed" else "cancelled", error, skip=i)


async def _end(app: Runtime, wf_id: str, state: str, error: str | None, skip: int = -1) -> Any:
    def change(doc: Any) -> list[int] | None:
        if doc["s"] != "running":
            return None
        doc["s"], doc["e"] = state, error or ""
        return []

    async def cascade(backend: Backend, doc: Any) -> None:
        for j, node in enumerate(doc["nodes"]):
            if j != skip and node["st"] != "done":
                await backend.cancel(node["t"], step_id(wf_id, j), f"workflow {state}")

    return await _update(app, wf_id, change, cascade)


class WorkflowError(TaskoraError):
    """The workflow is unknown (never started, or trimmed by retention)."""


class WorkflowHandle:
    """The handle of a dispatched workflow: ``await handle`` gives its id."""

    def __init__(self, app: Runtime, wf_id: str, name: str | None) -> None:
        self.app = app
        self.id = wf_id
        self.name = name
        self._started: asyncio.Future[None] | None = None

    def __await__(self) -> Any:
        return self._id().__await__()

    async def _id(self) -> str:
        assert self._started is not None
        await asyncio.shield(self._started)
        return self.id

    async def _start(self, doc: dict[str, Any]) -> None:
        todo = _ready(doc)
        backend = await self.app._connected_backend()
        if not await backend.workflow_put(self.id, 0, json.dumps(doc), 0):
            raise ConfigError(f"workflow {self.id} exists already")
        for i in todo:
            await _enqueue_node(self.app, backend, self.id, i, doc)

    async def _doc(self) -> Any:
        await self._id()
        backend = await self.app._connected_backend()
        got = await backend.workflow_get(self.id)
        if got is None:
            raise WorkflowError(f"workflow {self.id} not found")
        return json.loads(got[1])

    async def get_state(self) -> WorkflowState:
        return await self.app._route(self._doc_state)

    async def _doc_state(self) -> WorkflowState:
        state: WorkflowState = (await self._doc())["s"]
        return state

    @property
    def result(self) -> Any:
        return self.app._route(self._result)

    async def wait_for(self, timeout: float) -> Any:
        return await asyncio.wait_for(self.result, timeout)

    async def _result(self) -> Any:
        pause = 0.005
        while True:
            doc = await self._doc()
            state = doc["s"]
            if state == "completed":
                return doc.get("r")
            if state == "failed":
                raise JobFailedError(self.id, None, doc.get("e", ""))
            if state == "cancelled":
                raise JobCancelledError(self.id, None, doc.get("e") or None)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

    async def cancel(self, reason: str | None = None) -> None:
        async def run() -> None:
            await self._id()
            await _end(self.app, self.id, "cancelled", reason)

        await self.app._route(run)


async def cancel_workflow(app: Runtime, wf_id: str, reason: str | None = None) -> str | None:
    """Cancel a workflow known by id (the board): its state after, None if unknown."""
    doc = await _end(app, wf_id, "cancelled", reason)
    return None if doc is None else str(doc["s"])
