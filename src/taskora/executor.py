"""The execution side of a worker: running one job and turning how it ended into an outcome.

It decodes and validates the job's data, calls the handler through the middleware chain
inside the job's timeout (``_call`` and ``_invoke``: the one place the task is called),
handles cancellation and ``on_cancel``, encodes the result, and hands the outcome to
``on_done``. Which jobs run, and what happens to their outcomes, is the hand-off's business
(``handoff.py``); this module never sends anything to the backend but a job's own progress
and log writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dis
import inspect
import logging
import sys
import threading
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from . import serializer
from ._threads import DaemonPool
from .backends.base import Backend, Claimed, Outcome
from .context import Context
from .errors import SerializationError, TimeoutError, ValidationError
from .handoff import Slot, SlotState
from .middleware import run_chain
from .retry import RetryError, retry_delay_ms
from .runtime import Runtime
from .versions import MigrationError
from .workflow import STEP_PREFIX, step_done, step_ended

if TYPE_CHECKING:
    from .task import Task

__all__ = ["Executor", "Run"]

log = logging.getLogger("taskora.worker")


@dataclass(eq=False, slots=True)
class Run:
    """The execution side's handle on one running job."""

    ctx: Context
    io: JobIO
    runner: asyncio.Task[None] | None = None
    started: bool = False  # the runner's coroutine has begun (a task cancelled before its
    # first step never runs its body at all)
    handler_done: bool = False
    aborted: bool = False
    reported: bool = False  # its outcome went to on_done: exactly once per slot
    deadline: float = 0.0  # loop time its handler's timeout ends (Deadlines)
    timed_out: bool = False  # the timeout cancelled the runner (until _call takes it back)


Done = Callable[[Slot[Run], Outcome, float], None]


class Executor:
    """Runs jobs of one task; reports each outcome (and how long it took) to ``on_done``."""

    def __init__(
        self,
        app: Runtime,
        task: Task[Any, Any],
        backend: Backend,
        concurrency: int,
        on_done: Done,
        heartbeat: Callable[[str], None],
    ):
        self._app = app
        self.task = task
        self.name = task.name
        self.options = task.options
        self.backend = backend
        self.concurrency = concurrency
        self._on_done = on_done
        self._heartbeat = heartbeat
        self._chain = (*app.middleware, *task.middleware)  # app -> task -> handler
        self._tracing = app._tracing  # None unless App(tracing=...): docs/design.md#tracing
        self._metrics = app._metrics  # None unless taskora.metrics is on: docs/design.md#metrics
        self._threads: DaemonPool | None = None if task.is_async else self._new_threads()
        # whether no user code can wait: an async handler without await, no middleware (a
        # job may then run on the caller's task: run_now on 3.11)
        self._inline = task.is_async and not any(
            _may_wait(fn) for fn in (task.handler, *self._chain)
        )
        timeout_ms = self.options.timeout_ms
        # A timeout can only cancel at a wait: with none inside _call it never fires
        self._deadlines = Deadlines(timeout_ms / 1000) if timeout_ms and not self._inline else None

    def start(self, slot: Slot[Run]) -> None:
        """Run the slot's job in a new asyncio task."""
        job = slot.job
        io = JobIO(self.backend, self.name, job, self._heartbeat)
        run = Run(Context(job.id, self.name, job.attempt, job.ts, io), io)
        slot.run = run
        run.runner = asyncio.get_running_loop().create_task(self._execute(slot, run))
        run.runner.add_done_callback(lambda _: self._ensure_reported(slot, run))

    def run_now(self, slot: Slot[Run]) -> asyncio.Task[None] | None:
        """Run the slot's job at once, as far as it goes without waiting (the test runner's
        way: a handler that never waits costs no task and no loop turn). None: it ended and
        reported; else the task running the rest. ``start`` is the worker's way.

        The job keeps a context of its own and, on 3.12+, is a real task from its first
        step (an eager one). On 3.11 it runs on the caller's task only when neither the
        handler nor a middleware has an ``await`` (``asyncio.current_task()`` or a
        ``TaskGroup`` in there would see the wrong task); otherwise it takes a task now."""
        job = slot.job
        io = JobIO(self.backend, self.name, job, self._heartbeat)
        run = Run(Context(job.id, self.name, job.attempt, job.ts, io), io)
        slot.run = run
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        if sys.version_info >= (3, 12):
            runner = asyncio.Task(
                self._execute(slot, run), loop=loop, context=context, eager_start=True
            )
            if runner.done():
                self._ensure_reported(slot, run)
                # an error past _execute: the caller's await raises it, as from start's task
                return None if not runner.cancelled() and runner.exception() is None else runner
        elif self._inline:
            body = self._execute(slot, run)
            try:
                waits_on = context.run(body.send, None)
            except StopIteration:
                self._ensure_reported(slot, run)
                return None
            except BaseException:  # past _execute (a bug): reported as start's task would be
                self._ensure_reported(slot, run)
                raise
            # taskora's own code waits (a log flush, a workflow advance): go on in a task
            runner = loop.create_task(_go_on(body, waits_on), context=context)
        else:
            runner = loop.create_task(self._execute(slot, run), context=context)
        run.runner = runner
        runner.add_done_callback(lambda _: self._ensure_reported(slot, run))
        return runner

    def interrupt(self, slot: Slot[Run]) -> None:
        """Ask the handler to stop (a cancel, or a revoked start): ``ctx.cancelled`` turns
        true, and an async handler is cancelled. The slot's state says what the outcome is."""
        run = slot.run
        if run is None:
            return
        run.ctx._mark_cancelled()
        # Not begun yet (the cancel arrived in the same loop turn as the start): cancelling
        # the task now would skip _execute altogether and the slot would never report.
        # _outcome reads the slot's state before it calls the handler instead.
        if self.task.is_async and run.started and not run.handler_done and run.runner is not None:
            run.runner.cancel()

    def abort(self, slot: Slot[Run]) -> None:
        """Shutdown deadline passed: give the job back to the queue."""
        run = slot.run
        if run is None or run.aborted:
            return
        run.aborted = True
        run.ctx._mark_cancelled()
        if run.handler_done:
            return
        if self.task.is_async and run.runner is not None:
            run.runner.cancel()
        else:  # a thread cannot be stopped: release the job now, ignore the thread's result
            self._report(slot, run, Outcome(slot.id, slot.job.token, "release"), 0.0)

    def shutdown(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False)

    def _report(self, slot: Slot[Run], run: Run, outcome: Outcome, took: float) -> None:
        if not run.reported:
            run.reported = True
            if self._metrics is not None:
                self._metrics.job_done(self.name, slot.job, outcome, took)
            self._on_done(slot, outcome, took)

    def _ensure_reported(self, slot: Slot[Run], run: Run) -> None:
        """The runner ended: if it ended without an outcome (cancelled before it began, or a
        BaseException past _execute), report one now, so no slot is held (and its lock
        renewed) forever: cancelled if a cancel was requested, else back to the queue (a
        revoked slot's outcome is dropped by the hand-off either way)."""
        if run.reported:
            return
        log.error("worker %s: job %s ended without an outcome", self.name, slot.id)
        job = slot.job
        outcome = Outcome(job.id, job.token, "cancelled" if slot.cancel_requested else "release")
        self._report(slot, run, outcome, 0.0)

    # -- one job --------------------------------------------------------------------------
    async def _execute(self, slot: Slot[Run], run: Run) -> None:
        run.started = True
        started = time.perf_counter()
        tracing = self._tracing
        if tracing is not None:
            span, token = tracing.process(self.name, slot.job)
        try:
            outcome = await self._outcome(slot, run)
        except asyncio.CancelledError:
            outcome = Outcome(slot.id, slot.job.token, "release")
        except BaseException as exc:  # never lose a job to a bug in this file
            log.exception("worker %s: internal error on job %s", self.name, slot.id)
            outcome = Outcome(slot.id, slot.job.token, "failed", error=f"internal error: {exc!r}")
            if tracing is not None:
                tracing.failure(exc, None)
        if tracing is not None:
            tracing.finish(span, token, outcome)
        if run.io.busy:
            with contextlib.suppress(Exception):
                await run.io.flush()
        if slot.id.startswith(STEP_PREFIX):  # a workflow step: advance before the ack
            outcome = await self._advance(outcome)
        self._report(slot, run, outcome, time.perf_counter() - started)

    async def _advance(self, outcome: Outcome) -> Outcome:
        """Record a workflow step's end and start what it unblocks (docs/design.md#workflows);
        if that fails the job is given back, so the advance is retried, never lost."""
        try:
            if outcome.kind == "completed":
                await step_done(self._app, outcome.id, outcome.result)
            elif outcome.kind in ("failed", "cancelled"):
                await step_ended(self._app, outcome.id, outcome.kind, outcome.error)
        except Exception:
            log.exception("worker %s: could not advance workflow step %s", self.name, outcome.id)
            return Outcome(outcome.id, outcome.token, "release")
        return outcome

    async def _outcome(self, slot: Slot[Run], run: Run) -> Outcome:
        job = slot.job
        early = _before_start(slot)
        if early is not None:
            return early
        data = self._input(job, run)
        if isinstance(data, Outcome):
            return data
        try:
            result = await self._call(run, data)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            run.handler_done = True
            if slot.state is SlotState.REVOKED:
                return Outcome(job.id, job.token, "release")  # dropped: not ours
            if slot.cancel_requested:
                return await self._cancelled(slot, run, data)
            return Outcome(job.id, job.token, "release")
        except Exception as exc:
            run.handler_done = True
            if slot.cancel_requested:
                return await self._cancelled(slot, run, data)
            return self._failure(job, exc)
        run.handler_done = True
        if slot.cancel_requested:
            return await self._cancelled(slot, run, data)
        return self._encode(job, result)

    def _input(self, job: Claimed, run: Run) -> Any:
        """The job's data, decoded and validated (every job, whoever dispatched it), or the
        outcome that ends a job whose data is unusable."""
        if job.error is not None:
            return Outcome(job.id, job.token, "failed", error=job.error)
        try:
            data = serializer.loads(job.data, "job data")
        except SerializationError as exc:
            return Outcome(job.id, job.token, "failed", error=f"malformed job: {exc}")
        versioning = self.task.versioning
        if job.version < versioning.version:  # the claim never hands over a newer job
            try:
                data = versioning.upgrade(data, job.version)
            except MigrationError as exc:  # the same data fails the same way: not retried
                run.handler_done = True
                return Outcome(job.id, job.token, "failed", error=str(exc))
        if self.task.input is not None:
            try:
                return self.task.input.validate(data, "input")
            except ValidationError as exc:
                run.handler_done = True
                return self._failure(job, exc)
        return data

    def _encode(self, job: Claimed, result: Any) -> Outcome:
        if result is None and self.task.output is None:  # most handlers: no encoder call
            return Outcome(job.id, job.token, "completed", result="null")
        try:
            if self.task.output is not None:
                result = self.task.output.to_json(result, "output")
            encoded = serializer.dumps(result, f"result of task {self.name!r}")
        except (SerializationError, ValidationError) as exc:
            return self._failure(job, exc)
        return Outcome(job.id, job.token, "completed", result=encoded)

    async def _call(self, run: Run, data: Any) -> Any:
        """The middleware chain (app -> task) and the handler, all inside the job's timeout
        (as ``asyncio.timeout`` would: the runner is cancelled at the deadline, and the
        CancelledError becomes TimeoutError unless another cancel is pending too)."""
        deadlines = self._deadlines
        if deadlines is None:
            return await self._chained(run, data)
        deadlines.enter(run)
        try:
            return await self._chained(run, data)
        except asyncio.CancelledError:
            if run.timed_out:
                run.timed_out = False
                if _uncancel() == 0:
                    self._timed_out(run)
            raise
        finally:
            deadlines.leave(run)
            if run.timed_out:  # it ended another way after the timeout's cancel: take it back
                run.timed_out = False
                _uncancel()

    def _timed_out(self, run: Run) -> NoReturn:
        timeout_ms = self.options.timeout_ms
        if self._threads is not None:
            # The thread cannot be interrupted: ask it to stop, stop waiting for it, and
            # give the pool a fresh thread so the worker keeps its full concurrency.
            run.ctx._mark_cancelled()
            self._threads.shutdown(wait=False)
            self._threads = self._new_threads()
        raise TimeoutError(
            f"Job {run.ctx.id} timed out after {timeout_ms} ms", run.ctx.id, timeout_ms
        ) from None

    def _chained(self, run: Run, data: Any) -> Awaitable[Any]:
        if self._chain:
            return run_chain(self._chain, run.ctx, data, lambda value: self._invoke(run, value))
        return self._invoke(run, data)

    async def _invoke(self, run: Run, data: Any) -> Any:
        """The handler itself: on the loop, or on a pool thread (shielded: a timeout or a
        cancel stops waiting for the thread, it cannot stop the thread)."""
        if self._threads is None:
            return await self.task.invoke(data, run.ctx)
        loop = asyncio.get_running_loop()
        return await asyncio.shield(
            loop.run_in_executor(self._threads, self.task.invoke, data, run.ctx)
        )

    def _failure(self, job: Claimed, exc: BaseException) -> Outcome:
        message = _message(exc)
        delay = retry_delay_ms(self.options.retry, job.attempt, exc)
        if self._tracing is not None:
            self._tracing.failure(exc, delay)
        if delay is None:
            log.error(
                "task %r job %s failed (attempt %d): %s", self.name, job.id, job.attempt, message
            )
            return Outcome(job.id, job.token, "failed", error=message)
        log.warning(
            "task %r job %s attempt %d %s: %s; retrying in %d ms",
            self.name,
            job.id,
            job.attempt,
            "asked to retry" if isinstance(exc, RetryError) else "failed",
            message,
            delay,
        )
        return Outcome(job.id, job.token, "retry", error=message, retry_delay_ms=delay)

    async def _cancelled(self, slot: Slot[Run], run: Run, data: Any) -> Outcome:
        hook = self.task.on_cancel
        if hook is not None:
            try:
                value = hook(data, run.ctx)
                if asyncio.iscoroutine(value):
                    await value
            except Exception:
                log.exception("task %r: on_cancel failed for job %s", self.name, slot.id)
        return Outcome(slot.id, slot.job.token, "cancelled")

    def _new_threads(self) -> DaemonPool:
        return DaemonPool(self.concurrency, f"taskora-{self.name}")


class Deadlines:
    """The handler timeouts of one executor, on one loop timer.

    Every job of a task has the same timeout, so deadlines come in the order handlers start:
    an insertion-ordered dict holds the runs inside their handler, and one timer is armed for
    the oldest (a timer of its own per job, as ``asyncio.timeout`` makes, cost a quick job
    about a sixth of its worker CPU). A timer left armed for a run that has since left fires
    early and re-arms for the oldest one still in."""

    __slots__ = ("_runs", "_seconds", "_timer")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._runs: dict[Run, None] = {}
        self._timer: asyncio.TimerHandle | None = None

    def enter(self, run: Run) -> None:
        loop = asyncio.get_running_loop()
        run.deadline = loop.time() + self._seconds
        self._runs[run] = None
        if self._timer is None:
            self._timer = loop.call_at(run.deadline, self._expire)

    def leave(self, run: Run) -> None:
        self._runs.pop(run, None)

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        runs = self._runs
        while runs:
            run = next(iter(runs))
            if run.deadline > now:
                self._timer = loop.call_at(run.deadline, self._expire)
                return
            del runs[run]
            run.timed_out = True
            if run.runner is not None:
                run.runner.cancel()


def _may_wait(fn: object) -> bool:
    """Whether calling ``fn`` may suspend: True unless it is a plain ``async def`` with no
    ``await``, ``async for`` or ``async with`` (each of those compiles to a yield)."""
    code = getattr(fn, "__code__", None)
    if code is None or not inspect.iscoroutinefunction(fn):
        return True
    return any(ins.opname == "YIELD_VALUE" for ins in dis.get_instructions(code))


@types.coroutine
def _follow(body: Coroutine[Any, Any, None], waits_on: Any) -> Generator[Any, Any, None]:
    """The rest of a coroutine already stepped once, which yielded ``waits_on``: hand that
    to the task (it suspends on it as it would have) and relay every resume (``yield from``
    done by hand, since the first step happened outside)."""
    while True:
        try:
            sent = yield waits_on
        except BaseException as exc:  # a cancel (or other throw) goes to the coroutine
            try:
                waits_on = body.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waits_on = body.send(sent)
            except StopIteration:
                return


async def _go_on(body: Coroutine[Any, Any, None], waits_on: Any) -> None:
    await _follow(body, waits_on)


def _uncancel() -> int:
    """Take back one cancel request of the current task (the timeout's); returns how many
    are still pending (another cancel came too)."""
    task = asyncio.current_task()
    return task.uncancel() if task is not None else 0


class JobIO:
    """A job's progress/log writes: batched, fire-and-forget, flushed before the outcome."""

    __slots__ = (
        "_backend",
        "_flush_scheduled",
        "_heartbeat",
        "_logs",
        "_loop",
        "_name",
        "_pending",
        "_thread",
        "job",
    )

    def __init__(
        self, backend: Backend, name: str, job: Claimed, heartbeat: Callable[[str], None]
    ) -> None:
        self._backend = backend
        self._name = name
        self._heartbeat = heartbeat
        self.job = job
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._pending: set[asyncio.Future[Any]] = set()
        self._logs: list[str] = []
        self._flush_scheduled = False

    def _in_loop(self) -> bool:
        return threading.get_ident() == self._thread

    def track(self, future: asyncio.Future[Any]) -> None:
        self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("job %s: write failed: %s", self.job.id, future.exception())

    def progress(self, value: str) -> asyncio.Future[None] | None:
        if not self._in_loop():
            self._loop.call_soon_threadsafe(self.progress, value)
            return None
        future = asyncio.ensure_future(self._backend.set_progress(self._name, self.job.id, value))
        self.track(future)
        return future

    def log(self, entry: str) -> None:
        self._logs.append(entry)
        if self._in_loop():
            self._schedule()
        else:
            self._loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        if not self._flush_scheduled and self._logs:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_logs)

    def _flush_logs(self) -> None:
        self._flush_scheduled = False
        entries, self._logs = self._logs, []
        if entries:
            self.track(
                asyncio.ensure_future(self._backend.add_logs(self._name, self.job.id, entries))
            )

    def heartbeat(self) -> None:
        if not self._in_loop():
            self._loop.call_soon_threadsafe(self._heartbeat, self.job.id)
        else:
            self._heartbeat(self.job.id)

    @property
    def busy(self) -> bool:
        """Writes queued or in flight (most jobs make none: no flush to await)."""
        return bool(self._pending or self._logs)

    async def flush(self) -> None:
        self._flush_logs()
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


def _before_start(slot: Slot[Run]) -> Outcome | None:
    """The outcome of a job revoked or cancelled before its handler began: it never runs."""
    job = slot.job
    if slot.state is SlotState.REVOKED:  # refused: not ours (the outcome is dropped)
        return Outcome(job.id, job.token, "release")
    if slot.cancel_requested:
        return Outcome(job.id, job.token, "cancelled")
    return None


def _message(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__
