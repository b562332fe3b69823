"""Test an app's tasks in-process, in virtual time: ``from taskora.testing import TestRunner``.

``TestRunner(app)`` swaps the App's backend for a fresh :class:`MemoryBackend` whose clock is a
:class:`VirtualClock`, for the runner's lifetime (``dispose()`` puts the original back). The
user's code is not changed: tasks dispatch through the same App, so jobs that tasks dispatch
stay in the runner. No worker loop runs; the runner claims and runs jobs itself through the
worker's :class:`~taskora.executor.Executor` (validation, middleware, timeouts, retry
decisions), and time moves only when it says so: ``advance`` jumps the clock from one due time
to the next (delayed jobs, backoff, debounce, collect flushes, schedules) and processes
everything runnable at each, so hours of backoff take no wall time and every run is
deterministic (ties go in dispatch order: the runner's job ids count up). Each job still runs
as under a worker (at once, with no task of its own unless it waits: ``Executor.run_now``),
about 90 µs apiece: a virtual month of an every-minute schedule (43,200 jobs) takes about
4 s on a busy 2-core machine (docs/design.md#testing).

``on_redis(app, url)`` is the other half: the app on a real Redis under a throwaway prefix
(the pytest plugin's ``taskora_redis_app``). Not imported by ``import taskora``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, overload

from . import serializer
from .app import App
from .backends import backend_from_url
from .backends.base import Backend, ClaimOptions, Outcome
from .backends.memory import MemoryBackend
from .context import Context, LocalIO
from .durations import Duration, to_ms
from .errors import ConfigError, TaskoraError
from .executor import Executor, Run
from .handle import ResultHandle
from .handoff import Slot
from .middleware import run_chain
from .retry import retry_delay_ms
from .scheduler import Scheduler
from .task import Task
from .workflow import WorkflowHandle, _app_of, _Flow, step_id
from .workflow import sweep as sweep_workflows

__all__ = ["Execution", "JobView", "TestRunner", "VirtualClock", "WorkflowExecution", "on_redis"]

Workflow = _Flow  # what execute() takes as a workflow: a Signature, Chain, Group, Chord, ...

TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})
MAX_ROUNDS = 10_000  # execute(): due-time jumps before it gives up on a job that never ends


class VirtualClock:
    """Milliseconds that move only when told (starts at the wall clock's now)."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.ms = int(time.time() * 1000) if start_ms is None else start_ms

    def __call__(self) -> int:
        return self.ms

    def set(self, ms: int) -> None:
        if ms > self.ms:  # never backwards: due times already passed stay passed
            self.ms = ms


@dataclass(frozen=True, slots=True)
class Execution:
    """How a job ended (or where it stands, if it could not end): ``runner.execute``."""

    id: str
    state: str | None
    result: Any
    error: str | None
    attempts: int
    logs: list[dict[str, Any]]
    progress: Any
    handle: ResultHandle[Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class WorkflowExecution:
    """How a workflow ended: ``runner.execute(chain_or_group)``. ``steps`` holds one
    :class:`Execution` per step, in the order the workflow was written (a step that never
    ran, because the workflow ended first, has state ``None`` or ``cancelled``)."""

    id: str
    state: str | None
    result: Any
    error: str | None
    steps: list[Execution]
    handle: WorkflowHandle = field(repr=False)


@dataclass(frozen=True, slots=True)
class JobView:
    """A job the runner holds: ``runner.jobs``."""

    task: str
    id: str
    state: str
    attempt: int
    data: Any
    fields: dict[str, str] = field(repr=False)


class TestRunner:
    """Runs every task of ``app`` in-process on a memory backend with a virtual clock.

    ``async with TestRunner(app) as runner:`` or ``runner = TestRunner(app)`` ...
    ``await runner.dispose()``. The app must not be running workers.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, app: App, *, start_ms: int | None = None) -> None:
        if app._started:
            raise ConfigError("TestRunner: the app is running workers; close it first")
        self.app = app
        self.clock = VirtualClock(start_ms)
        self.backend = MemoryBackend(prefix=app.prefix, clock=self.clock)
        self._put_back: Callable[[], None] | None = _swap_backend(app, self.backend, app.prefix)
        self._own_ids = app._new_id
        self._id_seq = 0
        app._new_id = self._next_id
        self._lanes_by_name: dict[str, _Lane] = {}
        self._lane_list: list[_Lane] = []
        self._lane_seen = -1
        self._unsubscribed = True  # a lane not listening for cancel requests yet
        self._running: dict[tuple[str, str], Slot[Run]] = {}
        self._scheduler: Scheduler | None = None

    # -- lifecycle --------------------------------------------------------------------
    async def __aenter__(self) -> TestRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.dispose()

    async def dispose(self) -> None:
        """Put the app's own backend back; the runner's jobs are dropped."""
        if self._put_back is None:
            return
        if self.app._enqueuer is not None:
            await self.app._enqueuer.drain()
        await self.backend.close()
        self._restore()

    def _restore(self) -> None:
        """The synchronous part of ``dispose`` (the pytest fixture's teardown: it works
        whichever async plugin runs the tests)."""
        put_back, self._put_back = self._put_back, None
        if put_back is None:
            return
        for lane in self._lanes_by_name.values():
            lane.executor.shutdown()
        put_back()
        self.app._new_id = self._own_ids

    def _next_id(self) -> str:
        """Job ids that count up (a UUID's shape): ids are what orders jobs due at the same
        instant (as on Redis, where equal scores sort by member), so counting makes those
        ties run in dispatch order, and every run of a test makes the same ids."""
        self._id_seq += 1
        return f"00000000-0000-4000-8000-{self._id_seq:012x}"

    def _check(self) -> None:
        if self._put_back is None:
            raise TaskoraError("this TestRunner was disposed")

    @property
    def now_ms(self) -> int:
        """The virtual time, in ms since the epoch."""
        return self.clock.ms

    # -- direct call --------------------------------------------------------------------
    async def run(self, task: Task[Any, Any] | str, data: Any = None) -> Any:
        """Call the handler directly, no queue: input validation, app and task middleware,
        the timeout, and retries at once (no backoff wait). Returns the handler's result or
        raises the last error."""
        self._check()
        t = self._task(task)
        attempt = 1
        max_attempts = t.options.retry.attempts if t.options.retry is not None else 1
        chain = (*self.app.middleware, *t.middleware)
        while True:
            value = t.input.validate(data, "input") if t.input is not None else data
            ctx = Context(f"run-{attempt}", t.name, attempt, self.clock.ms, LocalIO())
            try:
                timeout_ms = t.options.timeout_ms
                async with asyncio.timeout(timeout_ms / 1000 if timeout_ms else None):
                    if chain:
                        result = await run_chain(chain, ctx, value, _caller(t, ctx))
                    else:
                        result = await _invoke(t, value, ctx)
            except Exception as exc:
                if attempt >= max_attempts or retry_delay_ms(t.options.retry, attempt, exc) is None:
                    raise
                attempt += 1
                continue
            if t.output is not None:
                t.output.to_json(result, "output")  # a wrong result fails here, as in a worker
            return result

    # -- through the queue --------------------------------------------------------------
    def dispatch(self, task: Task[Any, Any] | str, data: Any = None, **options: Any) -> Any:
        """``task.dispatch(data, **options)`` into the runner; returns the handle. Nothing runs
        until ``advance``, ``run_until_idle`` or ``execute``."""
        self._check()
        return self._task(task).dispatch(data, **options)

    @overload
    async def execute(
        self, task: Task[Any, Any] | str, data: Any = None, **options: Any
    ) -> Execution: ...

    @overload
    async def execute(self, task: Workflow) -> WorkflowExecution: ...

    async def execute(
        self, task: Task[Any, Any] | str | Workflow, data: Any = None, **options: Any
    ) -> Execution | WorkflowExecution:
        """Dispatch a task's job (or start a workflow: ``execute(a.s(1) | b.s())``), then
        process and jump virtual time over delays and backoff until it ends; returns how it
        ended."""
        if isinstance(task, Workflow):
            return await self._execute_workflow(task, options)
        handle = self.dispatch(task, data, **options)
        name = handle.task
        job_id = await handle

        async def ended() -> bool:
            snapshot = await self.backend.get_snapshot(name, job_id)
            return snapshot.state is None or snapshot.state in TERMINAL

        await self._until(ended)
        return await self._execution(handle, name, job_id)

    async def _execute_workflow(self, flow: Workflow, options: dict[str, Any]) -> WorkflowExecution:
        self._check()
        if options:
            raise ConfigError(f"execute(workflow) takes no dispatch options, got {sorted(options)}")
        if _app_of(flow) is not self.app:
            raise ConfigError(
                "execute(workflow): its tasks belong to another App than the runner's"
            )
        handle = flow.dispatch()
        await handle

        async def ended() -> bool:
            return await handle.get_state() != "running"

        await self._until(ended)
        [record] = await self.backend.workflow_records([handle.id], nodes=True)
        if record is None:
            return WorkflowExecution(handle.id, None, None, None, [], handle)
        steps = []
        for i, node in enumerate(record.nodes):
            job_id = step_id(handle.id, i)
            steps.append(
                await self._execution(ResultHandle(self.app, node.task, job_id), node.task, job_id)
            )
        result = serializer.loads(record.result, "workflow result") if record.result else None
        return WorkflowExecution(handle.id, record.state, result, record.error, steps, handle)

    async def _until(self, ended: Callable[[], Awaitable[bool]]) -> None:
        """Process, then jump to the next due time, until ``ended()`` (or nothing is due)."""
        for _ in range(MAX_ROUNDS):
            await self.run_until_idle()
            if await ended():
                return
            due = self.backend.next_due_ms()
            if due is None:
                return
            await self._step_to(due)

    async def advance(self, duration: Duration) -> None:
        """Move virtual time forward by ``duration``: everything due on the way happens, in
        due-time order, with the jobs it makes runnable processed at each step."""
        self._check()
        target = self.clock.ms + to_ms(duration, "advance(duration)")
        await self.run_until_idle()
        while True:
            due = self.backend.next_due_ms()
            if due is None or due > target:
                break
            await self._step_to(due)
        self.clock.set(target)
        await self.run_until_idle()

    async def run_until_idle(self) -> None:
        """Process every runnable job (and jobs they dispatch) at the current virtual time."""
        self._check()
        app = self.app
        await app._connected_backend()
        lanes = self._lanes()
        if self._unsubscribed:
            await self._subscribe(lanes)
        await self._trim(lanes)
        deadline = self.backend.workflows.next_deadline()
        if deadline is not None and deadline <= self.clock.ms:
            await sweep_workflows(app)  # workflow ttls, as a worker's stall loop sweeps them
        runnable = self._runnable
        while True:
            if app._enqueuer is not None:
                await app._enqueuer.drain()
            fired = await self._tick_schedules()
            ran = 0
            for lane in self._lanes():
                if runnable(lane.name):
                    ran += await self._process(lane)
            if not ran and not fired and not self._pending():
                return

    @property
    def jobs(self) -> list[JobView]:
        """Every job the runner holds, per task in dispatch order, with its state."""
        views = []
        for name, t in self.backend._tasks.items():
            for job_id, job in sorted(t.jobs.items(), key=lambda item: item[1].get("ts", 0)):
                fields = {k: str(v) for k, v in job.items()}
                raw = job.get("data")
                views.append(
                    JobView(
                        name,
                        job_id,
                        str(job.get("state")),
                        int(job.get("attempt", 1)),
                        serializer.loads(raw, "job data") if isinstance(raw, str) else raw,
                        fields,
                    )
                )
        return views

    # -- machinery ----------------------------------------------------------------------
    def _task(self, task: Task[Any, Any] | str) -> Task[Any, Any]:
        name = task if isinstance(task, str) else task.name
        found = self.app.tasks.get(name)
        if found is None:
            raise ConfigError(f"unknown task {name!r}; registered: {sorted(self.app.tasks)}")
        return found

    def _pending(self) -> bool:
        enqueuer = self.app._enqueuer
        return enqueuer is not None and bool(
            enqueuer._tasks or enqueuer._scheduled or enqueuer._inflight
        )

    async def _step_to(self, ms: int) -> None:
        self.clock.set(ms)
        await self.run_until_idle()

    async def _subscribe(self, lanes: list[_Lane]) -> None:
        """Hear cancel requests for running jobs, as a worker does (each task once)."""
        backend = self.backend
        for lane in lanes:
            if not lane.subscribed:
                lane.subscribed = True
                await backend.subscribe_cancel(lane.name, self._cancel_listener(lane.name))
        self._unsubscribed = False

    def _cancel_listener(self, name: str) -> Callable[[str], None]:
        def heard(job_id: str) -> None:
            slot = self._running.get((name, job_id))
            if slot is not None:
                slot.cancel_requested = True
                self._lanes_by_name[name].executor.interrupt(slot)

        return heard

    async def _tick_schedules(self) -> int:
        """The scheduler's tick, driven by the runner instead of its poll loop: only when a
        schedule is due (or the declared ones are not stored yet)."""
        app = self.app
        if self._scheduler is None:
            if not app._declared and not self.backend.schedules.records:
                return 0
            self._scheduler = Scheduler(app, app._declared, 1000, 30_000)
        due = self.backend.schedules.next
        if self._scheduler._registered and (not due or min(due.values()) > self.clock.ms):
            return 0
        return await self._scheduler.tick()

    def _lanes(self) -> list[_Lane]:
        """One lane per task with a handler (rebuilt when the app registers more tasks)."""
        tasks = self.app.tasks
        if self._lane_seen != len(tasks):
            self._lane_seen = len(tasks)
            self._lane_list = [
                self._lane_for(task) for task in tasks.values() if task.handler is not None
            ]
            self._unsubscribed = True
        return self._lane_list

    def _lane_for(self, task: Task[Any, Any]) -> _Lane:
        lane = self._lanes_by_name.get(task.name)
        if lane is None or lane.task is not task:
            lane = _Lane(task, self.app, self.backend)
            self._lanes_by_name[task.name] = lane
        return lane

    async def _trim(self, lanes: list[_Lane]) -> None:
        """Retention by age, as each worker's stall loop does it: every ``Stall.interval``
        of virtual time, finished jobs older than ``Retention``'s ages go. (The loop's other
        half, the stalled-job check, has nothing to do here: a job runs to its end inside
        one virtual instant, so no lock ever expires under it.)"""
        now = self.clock.ms
        for lane in lanes:
            if now >= lane.next_trim_ms:
                lane.next_trim_ms = now + lane.task.options.stall.interval_ms
                await self.backend.trim(lane.name, self.app.retention)

    def _runnable(self, name: str) -> bool:
        """Whether a claim could find anything: queued jobs, or delayed ones now due (the
        claim promotes those). A peek at the memory backend's structures, so an idle task
        costs no claim call at each virtual step."""
        t = self.backend._tasks.get(name)
        if t is None:
            return False
        if t.wait or t.prio_score:
            return True
        due = self.backend._next_due(t)
        return due is not None and due <= self.clock.ms

    async def _process(self, lane: _Lane) -> int:
        """Claim what is runnable now (promoting what is due), run it, record the outcomes.
        A job runs at once (``Executor.run_now``): only one that waits costs a task."""
        name, executor, outcomes, running = lane.name, lane.executor, lane.outcomes, self._running
        finish_and_claim = self.backend.finish_and_claim_now
        ran = 0
        pending: list[Outcome] = []
        while True:
            _, claimed = finish_and_claim(name, pending, lane.concurrency, lane.claim, "runner")
            if not claimed:
                return ran
            waiting: list[tuple[Slot[Run], asyncio.Task[None]]] = []
            for job in claimed:
                slot: Slot[Run] = Slot(job)
                rest = executor.run_now(slot)
                if rest is not None:  # it waits: a cancel request may reach it meanwhile
                    running[(name, job.id)] = slot
                    waiting.append((slot, rest))
            if waiting:
                await asyncio.gather(*(rest for _, rest in waiting))
                for slot, _ in waiting:
                    running.pop((name, slot.id), None)
            ran += len(claimed)
            pending = outcomes[:]
            outcomes.clear()

    async def _execution(self, handle: ResultHandle[Any], name: str, job_id: str) -> Execution:
        fields = await self.backend.job_fields(name, job_id)
        snapshot = await self.backend.get_snapshot(name, job_id)
        logs = [serializer.loads(e, "log") for e in await self.backend.get_logs(name, job_id)]
        result = None
        if snapshot.state == "completed":
            result = await handle.result
        progress = snapshot.progress
        return Execution(
            job_id,
            snapshot.state,
            result,
            fields.get("error"),
            int(fields.get("attempt", "0")),  # 0: no such job (a step that never started)
            logs,
            None if progress is None else serializer.loads(progress, "progress"),
            handle,
        )


@contextlib.contextmanager
def on_redis(app: App, url: str) -> Iterator[App]:
    """``app`` on the Redis at ``url``, under a fresh random prefix, for the ``with`` block
    (the ``taskora_redis_app`` fixture): tests never see each other's keys, and the user's
    code does not change. After the block the app's own backend is back and every key under
    that prefix is deleted. Close the app inside the block (``async with app:``)."""
    if app._started:
        raise ConfigError("on_redis: the app is running workers; close it first")
    prefix = "test-" + os.urandom(6).hex()
    backend = backend_from_url(url, prefix=prefix)
    put_back = _swap_backend(app, backend, prefix)
    try:
        yield app
    finally:
        put_back()
        reset = getattr(backend, "reset", None)
        if reset is not None:  # its connections belonged to the test's event loop, gone now
            reset()
        if not isinstance(backend, MemoryBackend):
            from .backends.redis.admin import delete_prefix

            _in_thread(lambda: delete_prefix(url, prefix))
    if app._started:  # after the clean-up: its keys are gone either way
        raise ConfigError(
            "on_redis: the app was left running workers; close it inside the block "
            "(async with app:)"
        )


def _swap_backend(app: App, backend: Backend, prefix: str | None) -> Callable[[], None]:
    """Point ``app`` at ``backend`` (connected on first use); returns what puts it back."""
    saved = (app.backend, app._connected, app.prefix)
    app.backend, app._connected, app.prefix = backend, False, prefix
    _forget_connection(app)

    def put_back() -> None:
        app.backend, app._connected, app.prefix = saved
        _forget_connection(app)

    return put_back


def _forget_connection(app: App) -> None:
    app._enqueuer = None
    app._connect_lock = None
    if app._hub is not None:
        app._hub.reset()


def _in_thread(factory: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Run a coroutine to its end on a new loop in a new thread: it works from sync and async
    code alike, whatever loop the caller has (or had)."""
    failed: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(factory())
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=main, name="taskora-testing")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


class _Lane:
    """What the runner keeps per task with a handler: its executor, its claim options and
    the outcomes waiting to be finished with the next claim."""

    __slots__ = (
        "claim",
        "concurrency",
        "executor",
        "name",
        "next_trim_ms",
        "outcomes",
        "subscribed",
        "task",
    )

    def __init__(self, task: Task[Any, Any], app: App, backend: MemoryBackend) -> None:
        self.task = task
        self.name = task.name
        self.concurrency = task.options.concurrency
        self.outcomes: list[Outcome] = []
        self.next_trim_ms = 0
        self.subscribed = False
        record = self.outcomes.append
        self.executor = Executor(
            app,
            task,
            backend,
            self.concurrency,
            lambda slot, outcome, took: record(outcome),
            lambda job_id: None,
        )
        self.claim = ClaimOptions(
            lock_ttl_ms=task.options.stall.lock_ttl_ms,
            singleton=task.options.singleton,
            keep_completed=app.retention.completed_max,
            keep_failed=app.retention.failed_max,
            version=task.versioning.version,
        )


def _caller(task: Task[Any, Any], ctx: Context) -> Callable[[Any], Any]:
    return lambda value: _invoke(task, value, ctx)


async def _invoke(task: Task[Any, Any], data: Any, ctx: Context) -> Any:
    if task.is_async:
        return await task.invoke(data, ctx)
    return await asyncio.to_thread(task.invoke, data, ctx)
