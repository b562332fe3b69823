"""Workflows: chains, groups and chords of task steps (docs/design.md#workflows).

``dispatch()`` compiles the composition into a flat list of nodes, each knowing how many
nodes it waits for and which nodes wait for it, and the backend keeps them in one record per
workflow. A step is an ordinary job whose id names its workflow and node
(``wf-<workflow>-<node>``), so plain jobs carry no extra field and pay nothing.

Advancing is O(the step) and atomic where it must be: the worker that completes a step, before
it acknowledges the job, runs one script on the workflow's record that records the result,
counts down the nodes waiting for it and returns those it unblocked with their input; then it
enqueues them (their ids are fixed: a repeated enqueue is a no-op); then it acks. A crash
anywhere before the ack leaves the job unacknowledged: stall recovery runs the step again, and
the script, seeing the node already completed, returns the unblocked nodes that have not
completed yet, so their enqueue repeats. Nothing is half done, at the price of at-least-once
step execution (as for any job).
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import os
import signal
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from . import serializer
from .backends.base import NewJob, ReadyStep, Terminal, WorkflowPlan, WorkflowStep
from .durations import optional_ms, to_ms
from .errors import (
    ConfigError,
    JobCancelledError,
    JobFailedError,
    TimeoutError,
    WorkflowError,
)

if TYPE_CHECKING:
    from .backends.base import Backend
    from .runtime import Runtime

__all__ = [
    "Chain",
    "Chord",
    "Chunk",
    "Group",
    "Signature",
    "WorkflowHandle",
    "cancel_job",
    "cancel_workflow",
    "chain",
    "chord",
    "group",
    "step_done",
    "step_ended",
    "sweep",
]

STEP_PREFIX = "wf-"
HANDLE = -1  # the "node" that ends a workflow cancelled from its handle
TTL = -2  # ... and one whose ttl passed
SWEEP_LIMIT = 100  # ttl-expired workflows ended per sweep
# Fault tests only (tests/test_workflows_crash.py): the process SIGKILLs itself right after
# the advance of this node was recorded and before what it unblocked is enqueued. Read once.
_KILL_AFTER_ADVANCE = os.environ.get("TASKORA_TEST_KILL_AFTER_ADVANCE")


class StepTask(Protocol):
    """What a step needs of its task (typed so, ``workflow`` does not import ``task``)."""

    @property
    def name(self) -> str: ...

    @property
    def app(self) -> Runtime: ...

    @property
    def collect(self) -> object | None: ...

    def _build(self, data: Any) -> tuple[NewJob, Any]: ...

    def _new_job(self, data: Any, **fields: Any) -> NewJob: ...


WorkflowState = Literal["running", "completed", "failed", "cancelled"]
_MISSING = object()


class _Flow:
    def __or__(self, other: _Flow) -> Chain:
        left = self.steps if isinstance(self, Chain) else (self,)
        right = other.steps if isinstance(other, Chain) else (other,)
        return Chain((*left, *right))

    def dispatch(self, ttl: Any = None, name: str | None = None) -> WorkflowHandle:
        """Start the workflow; ``await`` the handle for its id. Bad input raises here, before
        anything is written. ``ttl``: the workflow is cancelled when it has not ended by then
        (enforced by the workers' sweep on the backend's clock, not by this process)."""
        app = _app_of(self)
        ttl_ms = 0 if ttl is None else to_ms(ttl, "workflow ttl", allow_zero=False)
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"workflow name must be a string, got {name!r}")
        plan = _plan(app, self, name, ttl_ms)
        handle = WorkflowHandle(app, _new_wf_id(), plan.name)
        handle._started = asyncio.ensure_future(app._route(lambda: handle._start(plan)))
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


@dataclasses.dataclass(frozen=True, slots=True)
class Chunk(_Flow):
    """``task.chunk(items, size=)``: the items ``size`` at a time, each chunk a group that
    starts when the previous one has completed. Its output is every item's output, in order
    (the reference gives only the last chunk's)."""

    task: StepTask
    items: tuple[Any, ...]
    size: int


def map_items(task: StepTask, items: Iterable[Any]) -> Group:
    """``task.map(items)``: one step per item, all at once; the output is their list."""
    steps = tuple(Signature(task, item) for item in _items(items, "map"))
    return Group(steps)


def chunk_items(task: StepTask, items: Iterable[Any], size: Any) -> Chunk:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"chunk size must be a positive integer, got {size!r}")
    return Chunk(task, _items(items, "chunk"), size)


def _items(items: Iterable[Any], what: str) -> tuple[Any, ...]:
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise ValueError(f"{what} takes an iterable of items, got {items!r}")
    out = tuple(items)
    if not out:
        raise ValueError(f"{what} needs at least one item")
    return out


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
    if isinstance(flow, (Signature, Chunk)):
        return flow.task.app
    if isinstance(flow, Chord):
        return _app_of(flow.header)
    assert isinstance(flow, (Chain, Group))
    return _app_of(flow.steps[0])


def _new_wf_id() -> str:
    return os.urandom(16).hex()


# ---- compiling ------------------------------------------------------------------------------
# An output spec is a node index (that node's result) or a list of specs (a JSON array of
# them); as a template, "#3" or "[#1,[#2,#3]]": the backend fills in the results as stored.


@dataclasses.dataclass(slots=True)
class _Node:
    task: StepTask
    job: NewJob  # version and attempts; its data when the step has its own
    bound: bool
    inputs: Any  # the spec of its input (unbound steps)
    deps: list[int]


def _plan(app: Runtime, flow: _Flow, name: str | None, ttl_ms: int) -> WorkflowPlan:
    nodes: list[_Node] = []
    out = _compile(app, flow, nodes, None)
    then: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        for d in node.deps:
            then[d].append(i)
    steps = tuple(
        WorkflowStep(
            task=node.task.name,
            version=node.job.version,
            max_attempts=node.job.max_attempts,
            data=node.job.data if node.bound else None,
            inputs="" if node.bound else _template(node.inputs),
            waits=len(node.deps),
            then=tuple(then[i]),
        )
        for i, node in enumerate(nodes)
    )
    return WorkflowPlan(name or _describe(flow), steps, _template(out), ttl_ms)


def _compile(app: Runtime, flow: _Flow, nodes: list[_Node], prev: Any) -> Any:
    """Append the nodes of ``flow`` run after ``prev`` (an output spec or None); return the
    spec of its output."""
    if isinstance(flow, Signature):
        task = _known(app, flow.task)
        if flow.has_data:
            job, _ = task._build(flow.data)  # validated and serialized as a dispatch's data
            node = _Node(task, job, True, None, _refs(prev))
        elif prev is None:
            raise ValueError(f"the first step ({task.name!r}) of a workflow needs data")
        else:
            node = _Node(task, task._new_job(None), False, prev, _refs(prev))
        nodes.append(node)
        return len(nodes) - 1
    if isinstance(flow, Chain):
        if not flow.steps:
            raise ValueError("a chain needs at least one step")
        spec = prev
        for step in flow.steps:
            spec = _compile(app, step, nodes, spec)
        return spec
    if isinstance(flow, Group):
        if not flow.steps:
            raise ValueError("a group needs at least one step")
        return [_compile(app, step, nodes, prev) for step in flow.steps]
    if isinstance(flow, Chord):
        return _compile(app, flow.callback, nodes, _compile(app, flow.header, nodes, prev))
    if isinstance(flow, Chunk):
        outputs: list[Any] = []
        spec = prev
        for lo in range(0, len(flow.items), flow.size):
            part = flow.items[lo : lo + flow.size]
            spec = [_compile(app, Signature(flow.task, item), nodes, spec) for item in part]
            outputs += spec
        return outputs
    raise TypeError(f"not a workflow step: {flow!r}")


def _known(app: Runtime, task: StepTask) -> StepTask:
    if app.tasks.get(task.name) is not task:
        raise ValueError(
            f"unknown task {task.name!r}: every step's task must be registered with the "
            "workflow's app"
        )
    if task.collect is not None:
        raise ValueError(f"task {task.name!r} collects its dispatches: it cannot be a step")
    return task


def _refs(spec: Any) -> list[int]:
    if spec is None:
        return []
    if isinstance(spec, int):
        return [spec]
    return list(dict.fromkeys(i for s in spec for i in _refs(s)))


def _template(spec: Any) -> str:
    if isinstance(spec, int):
        return f"#{spec}"
    return "[" + ",".join(_template(s) for s in spec) + "]"


def _describe(flow: _Flow) -> str:
    """The default name, as the reference makes it: ``chain(a → b)``, ``group(a, b)``."""

    def name(f: _Flow) -> str:
        if isinstance(f, Signature):
            return f.task.name
        if isinstance(f, Chain):
            return " → ".join(name(s) for s in f.steps)
        if isinstance(f, Group):
            return ", ".join(name(s) for s in f.steps)
        if isinstance(f, Chord):
            return f"{name(f.header)} → {name(f.callback)}"
        if isinstance(f, Chunk):
            return f"{f.task.name} x{len(f.items)} by {f.size}"
        return type(f).__name__

    kind = type(flow).__name__.lower()
    text = name(flow) if isinstance(flow, Signature) else f"{kind}({name(flow)})"
    return text if len(text) <= 200 else text[:199] + "…"


def step_id(wf_id: str, node: int) -> str:
    return f"{STEP_PREFIX}{wf_id}-{node}"


def parse_step(job_id: str) -> tuple[str, int] | None:
    """The workflow and node of a step's job id, or None for a plain job."""
    if not job_id.startswith(STEP_PREFIX):
        return None
    wf_id, _, node = job_id[len(STEP_PREFIX) :].rpartition("-")
    return (wf_id, int(node)) if node.isdigit() and wf_id else None


# ---- the engine (the dispatching process starts it, the workers advance it) -----------------


async def _enqueue(backend: Backend, wf_id: str, ready: Iterable[ReadyStep]) -> None:
    """Enqueue unblocked steps, one call per task (an id that exists is left untouched)."""
    by_task: dict[str, list[NewJob]] = {}
    for r in ready:
        job = NewJob(step_id(wf_id, r.node), r.data, r.version, r.max_attempts)
        by_task.setdefault(r.task, []).append(job)
    await asyncio.gather(*(backend.enqueue(task, jobs) for task, jobs in by_task.items()))


async def step_done(app: Runtime, job_id: str, result: str | None) -> None:
    """Record a completed step and enqueue what it unblocks (before the job is acked)."""
    parsed = parse_step(job_id)
    if parsed is None:
        return
    wf_id, node = parsed
    backend = await app._connected_backend()
    keep = app.retention.completed_age_ms
    advance = await backend.workflow_advance(wf_id, node, result or "null", keep)
    if _KILL_AFTER_ADVANCE is not None and _KILL_AFTER_ADVANCE == str(node):
        os.kill(os.getpid(), signal.SIGKILL)
    await _enqueue(backend, wf_id, advance.ready)


async def step_ended(app: Runtime, job_id: str, state: str, error: str | None) -> None:
    """A step failed for good or was cancelled: end the workflow and cancel the rest."""
    parsed = parse_step(job_id)
    if parsed is None:
        return
    wf_id, node = parsed
    ended = "failed" if state == "failed" else "cancelled"
    await _end(app, wf_id, ended, error or f"step {node} {ended}", node)


async def cancel_job(app: Runtime, task: str, job_id: str, reason: str | None) -> str:
    """Cancel one job (a handle's, an operator's). A workflow step cancelled before it ran ends
    its workflow here, since no executor will see it end; a running step's worker ends it."""
    backend = await app._connected_backend()
    outcome = await backend.cancel(task, job_id, reason)
    if outcome == "cancelled":
        await step_ended(app, job_id, "cancelled", reason)
    return outcome


async def _end(app: Runtime, wf_id: str, state: str, message: str, node: int) -> None:
    backend = await app._connected_backend()
    keep = app.retention.failed_age_ms
    cascade = await backend.workflow_end(wf_id, state, node, message, keep)
    reason = f"workflow {state}"
    await asyncio.gather(*(backend.cancel(task, step_id(wf_id, i), reason) for i, task in cascade))


async def sweep(app: Runtime) -> int:
    """Cancel the workflows whose ttl has passed (the workers call this with their stall
    check); returns how many were due. Idempotent: two sweepers at once cancel once."""
    backend = await app._connected_backend()
    due = await backend.workflow_due(SWEEP_LIMIT)
    for wf_id in due:
        await _end(app, wf_id, "cancelled", "workflow ttl passed", TTL)
    await backend.workflow_undue(due)
    return len(due)


class WorkflowHandle:
    """The handle of a dispatched workflow: ``await handle`` gives its id."""

    def __init__(self, app: Runtime, wf_id: str, name: str | None) -> None:
        self.app = app
        self.id = wf_id
        self.name = name
        self._started: asyncio.Future[None] | None = None

    def __await__(self) -> Any:
        return self._id().__await__()

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.id!r}, name={self.name!r})"

    async def _id(self) -> str:
        assert self._started is not None
        await asyncio.shield(self._started)
        return self.id

    async def _start(self, plan: WorkflowPlan) -> None:
        backend = await self.app._connected_backend()
        if not await backend.workflow_create(self.id, plan):
            raise ConfigError(f"workflow {self.id} exists already")
        roots = [
            ReadyStep(i, s.task, s.data or "null", s.version, s.max_attempts)
            for i, s in enumerate(plan.steps)
            if s.waits == 0
        ]
        await _enqueue(backend, self.id, roots)
        await backend.workflow_started(self.id)

    async def get_state(self) -> WorkflowState:
        async def read() -> WorkflowState:
            await self._id()
            backend = await self.app._connected_backend()
            info = await backend.workflow_read(self.id)
            if info is None:
                raise WorkflowError(f"workflow {self.id} not found")
            state: WorkflowState = info.state  # type: ignore[assignment]
            return state

        return await self.app._route(read)

    @property
    def result(self) -> Any:
        """Wait for the output with no timeout (``await handle.result``)."""
        return self.wait_for(None)

    async def wait_for(self, timeout: Any) -> Any:
        """Wait for the output; raise :class:`taskora.TimeoutError` after ``timeout``."""
        timeout_ms = optional_ms(timeout, "wait_for(timeout)")
        return await self.app._route(lambda: self._wait(timeout_ms))

    async def _wait(self, timeout_ms: int | None) -> Any:
        loop = asyncio.get_running_loop()
        limit = None if timeout_ms is None else timeout_ms / 1000
        deadline = None if limit is None else loop.time() + limit
        try:
            await asyncio.wait_for(self._id(), limit)
        except builtins.TimeoutError:
            raise self._timeout(timeout_ms) from None
        backend = await self.app._connected_backend()
        remaining = None if deadline is None else max(0.0, deadline - loop.time())
        end = await backend.workflow_wait(self.id, remaining)
        if end is None:
            raise self._timeout(timeout_ms)
        return self._unwrap(end)

    def _timeout(self, ms: int | None) -> TimeoutError:
        return TimeoutError(f"Workflow {self.id} did not complete within {ms} ms", self.id, ms)

    def _unwrap(self, end: Terminal) -> Any:
        if end.state == "completed":
            return serializer.loads(end.result or "null", "workflow result")
        if end.state == "failed":
            raise JobFailedError(self.id, None, end.error or "")
        if end.state == "cancelled":
            raise JobCancelledError(self.id, None, end.reason)
        raise WorkflowError(f"workflow {self.id} not found ({end.reason or end.state})")

    async def cancel(self, reason: str | None = None) -> None:
        """Cancel the workflow: every step not finished is cancelled, running ones included."""

        async def run() -> None:
            await self._id()
            await _end(self.app, self.id, "cancelled", reason or "workflow cancelled", HANDLE)

        await self.app._route(run)


async def cancel_workflow(app: Runtime, wf_id: str, reason: str | None = None) -> str | None:
    """Cancel a workflow known by id (an operator, the board) as its handle would: its state
    after (one that had ended keeps its own), or None when there is no such workflow."""
    await _end(app, wf_id, "cancelled", reason or "workflow cancelled", HANDLE)
    info = await (await app._connected_backend()).workflow_read(wf_id)
    return None if info is None else info.state
