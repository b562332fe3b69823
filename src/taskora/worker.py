"""Worker: runs one task's jobs in this process, up to its concurrency.

One loop owns all traffic with the backend. Each pass sends every outcome reported since
the last pass together with a claim for the free slots, as one backend call (one Lua script
on Redis): at concurrency 1 that is one round trip per job, and at concurrency 100 one round
trip finishes and replaces dozens of jobs. When nothing is claimable the loop blocks on the
backend's wake-up (``BZPOPMIN`` on Redis), never polling, while outcomes of running jobs
still go out at once.

Claim-ahead: while jobs are quick (under QUICK_JOB_S on average) the worker also claims
about PREFETCH_S of work ahead of its free slots (at most ``prefetch`` jobs; 0 turns it
off). Those jobs are only *reserved*: locked for this worker, still ``waiting`` to everyone
else. When a slot frees, the next one starts at once (no round trip) and its ``start``
outcome rides the next finish call, in order (finish N, start N+1): Redis marks it active
then, so the handler runs up to one round trip before its state reads ``active``. A start
Redis refuses (the job was cancelled, or the reservation expired and went back to the
queue, in that instant) cancels the handler and drops its outcome; that is the one window
in which a job ends ``cancelled`` while its handler ran (its ``on_cancel`` may run too).
Jobs with a concurrency key or a ttl, and singleton tasks, are never claimed ahead.
A newly waiting job that outranks a reserved one makes every worker give its reservations
back (to the front, in order) and claim again; jobs a worker started before it heard of
that (at most its free slots plus the pub/sub delay's worth) still run first.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import serializer
from ._threads import DaemonPool
from .backends.base import Backend, Claimed, ClaimOptions, FinishReport, Outcome
from .context import Context
from .errors import BackendError, SerializationError, TimeoutError, ValidationError
from .middleware import run_chain
from .retry import RetryError, retry_delay_ms
from .runtime import Runtime

if TYPE_CHECKING:
    from .task import Task

__all__ = ["Worker"]

log = logging.getLogger("taskora.worker")

IDLE_BLOCK_S = 2.0
QUICK_JOB_S = 0.005  # jobs faster than this on average are prefetched ...
PREFETCH_S = 0.02  # ... up to about this much work ahead of the free slots


@dataclass(eq=False, slots=True)
class _Running:
    job: Claimed
    ctx: Context
    io: _JobIO
    runner: asyncio.Task[None] | None = None
    handler_done: bool = False
    cancel_requested: bool = False
    aborted: bool = False
    revoked: bool = False  # its start was refused: the job is not ours, drop its outcome


class Worker:
    """Claims, runs and finishes jobs of one task."""

    def __init__(
        self,
        app: Runtime,
        task: Task[Any, Any],
        backend: Backend,
        concurrency: int | None = None,
        prefetch: int | None = None,
    ):
        """``prefetch``: at most this many quick jobs claimed ahead (default ``app.prefetch``;
        0: none, the strict mode where the worker holds only the jobs it runs)."""
        options = task.options
        self.app = app
        self.task = task
        self.name = task.name
        self.backend = backend
        self.options = options
        self.concurrency = concurrency or options.concurrency
        depth = app.prefetch if prefetch is None else prefetch
        self.prefetch = 0 if options.singleton else max(0, int(depth))
        self._claim = ClaimOptions(
            lock_ttl_ms=options.stall.lock_ttl_ms,
            singleton=options.singleton,
            keep_completed=app.retention.completed_max,
            keep_failed=app.retention.failed_max,
        )
        self._token_base = uuid.uuid4().hex
        self._active: dict[str, _Running] = {}
        self._outcomes: list[Outcome] = []
        self._ready: collections.deque[Claimed] = collections.deque()  # claimed, not started
        self._avg_run_s = float("inf")  # moving average of how long a job takes here
        self._wake = _Signal()
        self._stopping = False
        self._hurry = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._waiter: asyncio.Task[tuple[Claimed, ...]] | None = None
        self._waiter_want = 0
        self._idle_expected = False  # the last claim found the queue empty
        self._backoff = 0.05
        self._upkeep: list[asyncio.Task[None]] = []
        self._chain = (*app.middleware, *task.middleware)  # app -> task -> handler
        self._executor: DaemonPool | None = None
        if not task.is_async:
            self._executor = self._new_executor()

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        await self.backend.subscribe_cancel(self.name, self._cancel_requested)
        await self._stall_check()  # a restarted worker recovers its dead predecessor's jobs now
        self._main = asyncio.create_task(self._loop(), name=f"taskora-worker-{self.name}")
        self._upkeep = [
            asyncio.create_task(self._renew_locks(), name=f"taskora-locks-{self.name}"),
            asyncio.create_task(self._stall_loop(), name=f"taskora-stall-{self.name}"),
        ]

    async def stop(self, timeout: float | None = None) -> None:
        """Stop claiming; wait for active jobs (up to ``timeout`` s, or until ``hurry()``),
        then give the rest back to the queue."""
        self._stopping = True
        self._wake.set()
        runners = [r.runner for r in self._active.values() if r.runner is not None]
        if runners and not self._hurry.is_set():
            finished = asyncio.ensure_future(asyncio.wait(runners))
            hurried = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait([finished, hurried], timeout=timeout, return_when="FIRST_COMPLETED")
            for waiting in (finished, hurried):
                waiting.cancel()
        if self._active:
            log.warning(
                "worker %s: %d unfinished job(s) go back to the queue", self.name, len(self._active)
            )
        for run in list(self._active.values()):
            self._abort(run)
        if self._main is not None:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await asyncio.wait_for(asyncio.shield(self._main), timeout=10)
                except builtins.TimeoutError:
                    self._main.cancel()
        for task in self._upkeep:
            task.cancel()
        await asyncio.gather(*self._upkeep, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.backend.unsubscribe_cancel(self.name)
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def hurry(self) -> None:
        """Cut a ``stop()`` short: unfinished jobs go back to the queue now."""
        self._hurry.set()

    def _abort(self, run: _Running) -> None:
        """Shutdown deadline passed: give the job back to the queue."""
        if run.aborted:
            return
        run.aborted = True
        run.ctx._mark_cancelled()
        if run.handler_done:
            return
        if self.task.is_async and run.runner is not None:
            run.runner.cancel()
        else:  # a thread cannot be stopped: release the job now, ignore the thread's result
            self._report(run, Outcome(run.job.id, run.job.token, "release"))

    # -- the claim/finish loop ---------------------------------------------------------------
    async def _loop(self) -> None:
        try:
            while await self._pass():
                pass
        finally:
            await self._drop_waiter()

    async def _pass(self) -> bool:
        """One turn: send outcomes and claim for the free slots; False when stopped."""
        self._wake.clear()
        waiter = self._waiter
        if waiter is not None and waiter.done():  # it claimed work while we were busy
            self._waiter = None
            self._ready.extend(_consume(waiter))
        if self._stopping:
            self._release_ready()
        free = self._fill_from_ready()
        waiting = self._waiter is not None  # a wait in flight claims for the free slots
        if not self._outcomes:
            if self._stopping and not self._active:
                # a wait in flight may have claimed jobs just now: give those back first
                return await self._drop_waiter() > 0
            if free <= 0 or waiting:
                await self._wake.wait()
                return True
        room = 0 if waiting else self._prefetch_room()
        if waiting:
            free = 0
        want = free + room
        outcomes, self._outcomes = self._outcomes, []
        try:
            report = await self._finish(outcomes, free, room)
        except BackendError as exc:
            self._outcomes[:0] = outcomes
            log.warning("worker %s: backend unavailable (%s); retrying", self.name, exc)
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, 2.0)
            return True
        self._backoff = 0.05
        if not waiting:
            self._idle_expected = len(report.claimed) < want
        self._revoke(report.refused)
        self._ready.extend(report.claimed)
        free = self._fill_from_ready()
        if self._outcomes or self._stopping or free <= 0:
            return True  # more to send, or the slots are full
        if not waiting and len(report.claimed) >= want:
            return True  # more may be waiting
        await self._idle(free)
        return True

    async def _finish(self, outcomes: list[Outcome], free: int, room: int) -> FinishReport:
        """Send outcomes, claim ``free`` jobs to run now and ``room`` more ahead. A worker
        with quick jobs that found the queue empty last time sends its next blocking wait
        along with the finish, in one write."""
        if (
            outcomes
            and free > 0  # about to go idle (a wait for reservations alone would outlive
            # its use: it cannot claim a job that must not be claimed ahead)
            and self._idle_expected
            and self._waiter is None
            and not self._stopping
            and self._quick()
        ):
            sent = self.backend.finish_then_wait(
                self.name, outcomes, free, self._claim, self._token_base, IDLE_BLOCK_S, room
            )
            if sent is not None:
                finished, self._waiter = sent
                self._waiter_want = free + room
                self._waiter.add_done_callback(self._wake.set_from)
                return await finished
        return await self.backend.finish_and_claim(
            self.name, outcomes, free, self._claim, self._token_base, room
        )

    async def _idle(self, free: int) -> None:
        """Free slots and nothing claimable: block until work arrives (it is claimed on
        arrival, by the wait itself) or a running job ends."""
        while True:
            if self._waiter is None:
                room = self._prefetch_room()
                self._waiter_want = free + room
                self._waiter = asyncio.create_task(
                    self.backend.wait_for_work(
                        self.name, IDLE_BLOCK_S, free, self._claim, self._token_base, room
                    )
                )
                self._waiter.add_done_callback(self._wake.set_from)
            if not self._waiter.done():
                await self._wake.wait()
                self._wake.clear()
                if not self._waiter.done():
                    return  # an outcome to send
            claimed = _consume(self._waiter)
            self._waiter = None
            self._idle_expected = len(claimed) < self._waiter_want
            self._ready.extend(claimed)
            free = self._fill_from_ready()
            if self._outcomes or self._stopping or free <= 0 or len(claimed) >= self._waiter_want:
                return
            if claimed and self._quick():
                # Quick jobs just started: their outcomes come in a moment, and that finish
                # re-arms the wait in the same write. Re-arm alone only if they linger.
                with contextlib.suppress(builtins.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 2 * PREFETCH_S)
                if self._outcomes:
                    return
            # the queue is empty: block again at once

    async def _drop_waiter(self) -> int:
        """Stop a wait in flight; jobs it claimed go to the buffer. Returns how many."""
        waiter, self._waiter = self._waiter, None
        if waiter is None:
            return 0
        waiter.cancel()
        with contextlib.suppress(BaseException):
            await waiter
        claimed = _consume(waiter)
        self._ready.extend(claimed)
        return len(claimed)

    def _fill_from_ready(self) -> int:
        """Start prefetched jobs in free slots; return the slots still free."""
        free = 0 if self._stopping else self.concurrency - len(self._active)
        while free > 0 and self._ready:
            self._start(self._ready.popleft())
            free -= 1
        return free

    def _quick(self) -> bool:
        return self._avg_run_s < QUICK_JOB_S

    def _prefetch_room(self) -> int:
        """While jobs are quick, claim up to about PREFETCH_S of work ahead of the free
        slots (at most ``prefetch`` jobs): those jobs start the moment a slot frees, and one
        round trip finishes and replaces a batch of them instead of one. Slow jobs are never
        held back from other workers this way (nothing is prefetched once a job takes
        QUICK_JOB_S or more)."""
        if self._stopping or self.prefetch <= 0 or not self._quick():
            return 0
        target = min(self.prefetch, max(1, int(PREFETCH_S / max(self._avg_run_s, 1e-6))))
        return max(0, target - len(self._ready))

    def _release_ready(self) -> None:
        """Give prefetched jobs back, to the front of the queue in their order."""
        if not self._ready:
            return
        while self._ready:
            job = self._ready.pop()  # the last one first: each goes to the front
            self._outcomes.append(Outcome(job.id, job.token, "release"))
        self._wake.set()

    def _check_hold(self, run: _Running) -> None:
        """A job turned out slow while others wait prefetched behind it: release them, so
        another worker (or a higher-priority job that arrived since) goes first."""
        if self._active.get(run.job.id) is run and self._ready:
            self._avg_run_s = max(self._avg_run_s, 2 * PREFETCH_S)  # no prefetch for now
            self._release_ready()

    def _start(self, job: Claimed) -> None:
        if job.reserved:  # claimed ahead: it becomes active in the next call, in order
            self._outcomes.append(Outcome(job.id, job.token, "start"))
            self._wake.set()
        io = _JobIO(self, job)
        ctx = Context(job.id, self.name, job.attempt, job.ts, io)
        run = _Running(job, ctx, io)
        self._active[job.id] = run
        loop = asyncio.get_running_loop()
        run.runner = loop.create_task(self._execute(run))
        if self._ready:
            loop.call_later(2 * PREFETCH_S, self._check_hold, run)

    def _report(self, run: _Running, outcome: Outcome) -> None:
        if self._active.get(run.job.id) is run:
            del self._active[run.job.id]
            if not run.revoked:
                self._outcomes.append(outcome)
            self._fill_from_ready()  # the next prefetched job starts now, not a round trip later
            self._wake.set()

    # -- running one job ----------------------------------------------------------------------
    async def _execute(self, run: _Running) -> None:
        started = time.perf_counter()
        try:
            outcome = await self._outcome(run)
        except asyncio.CancelledError:
            outcome = Outcome(run.job.id, run.job.token, "release")
        except BaseException as exc:  # never lose a job to a bug in this file
            log.exception("worker %s: internal error on job %s", self.name, run.job.id)
            outcome = Outcome(run.job.id, run.job.token, "failed", error=f"internal error: {exc!r}")
        with contextlib.suppress(Exception):
            await run.io.flush()
        took = time.perf_counter() - started
        avg = self._avg_run_s
        self._avg_run_s = took if avg == float("inf") else 0.8 * avg + 0.2 * took
        self._report(run, outcome)

    async def _outcome(self, run: _Running) -> Outcome:
        job = run.job
        data = self._input(run)
        if isinstance(data, Outcome):
            return data
        try:
            result = await self._call(run, data)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            run.handler_done = True
            if run.revoked:
                return Outcome(job.id, job.token, "release")  # dropped: not ours
            if run.cancel_requested:
                return await self._cancelled(run, data)
            return Outcome(job.id, job.token, "release")
        except Exception as exc:
            run.handler_done = True
            if run.cancel_requested:
                return await self._cancelled(run, data)
            return self._failure(job, exc)
        run.handler_done = True
        if run.cancel_requested:
            return await self._cancelled(run, data)
        return self._encode(job, result)

    def _input(self, run: _Running) -> Any:
        """The job's data, decoded and validated (every job, whoever dispatched it), or the
        outcome that ends a job whose data is unusable."""
        job = run.job
        if job.error is not None:
            return Outcome(job.id, job.token, "failed", error=job.error)
        try:
            data = serializer.loads(job.data, "job data")
        except SerializationError as exc:
            return Outcome(job.id, job.token, "failed", error=f"malformed job: {exc}")
        if self.task.input is not None:
            try:
                return self.task.input.validate(data, "input")
            except ValidationError as exc:
                run.handler_done = True
                return self._failure(job, exc)
        return data

    def _encode(self, job: Claimed, result: Any) -> Outcome:
        try:
            if self.task.output is not None:
                result = self.task.output.to_json(result, "output")
            encoded = serializer.dumps(result, f"result of task {self.name!r}")
        except (SerializationError, ValidationError) as exc:
            return self._failure(job, exc)
        return Outcome(job.id, job.token, "completed", result=encoded)

    async def _call(self, run: _Running, data: Any) -> Any:
        timeout_ms = self.options.timeout_ms
        seconds = timeout_ms / 1000 if timeout_ms else None
        if self._chain:
            return await self._call_through_middleware(run, data, seconds, timeout_ms)
        if self.task.is_async:
            scope = asyncio.timeout(seconds)
            try:
                async with scope:
                    return await self.task.invoke(data, run.ctx)
            except builtins.TimeoutError:
                if scope.expired():
                    raise TimeoutError(
                        f"Job {run.job.id} timed out after {timeout_ms} ms", run.job.id, timeout_ms
                    ) from None
                raise
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self.task.invoke, data, run.ctx)
        if seconds is None:
            return await asyncio.shield(future)
        try:
            return await asyncio.wait_for(asyncio.shield(future), seconds)
        except builtins.TimeoutError:
            # The thread cannot be interrupted: ask it to stop, stop waiting for it, and give
            # the pool a fresh thread so the worker keeps its full concurrency.
            run.ctx._mark_cancelled()
            self._executor.shutdown(wait=False)
            self._executor = self._new_executor()
            raise TimeoutError(
                f"Job {run.job.id} timed out after {timeout_ms} ms", run.job.id, timeout_ms
            ) from None

    async def _call_through_middleware(
        self, run: _Running, data: Any, seconds: float | None, timeout_ms: int
    ) -> Any:
        """The middleware chain and the handler, all inside the job's timeout."""
        loop = asyncio.get_running_loop()

        async def handler(value: Any) -> Any:
            if self.task.is_async:
                return await self.task.invoke(value, run.ctx)
            assert self._executor is not None
            return await asyncio.shield(
                loop.run_in_executor(self._executor, self.task.invoke, value, run.ctx)
            )

        scope = asyncio.timeout(seconds)
        try:
            async with scope:
                return await run_chain(self._chain, run.ctx, data, handler)
        except builtins.TimeoutError:
            if not scope.expired():
                raise
            if not self.task.is_async and self._executor is not None:
                run.ctx._mark_cancelled()  # a thread cannot be stopped: see _call
                self._executor.shutdown(wait=False)
                self._executor = self._new_executor()
            raise TimeoutError(
                f"Job {run.job.id} timed out after {timeout_ms} ms", run.job.id, timeout_ms
            ) from None

    def _failure(self, job: Claimed, exc: BaseException) -> Outcome:
        message = _message(exc)
        delay = retry_delay_ms(self.options.retry, job.attempt, exc)
        will_retry = delay is not None
        if will_retry:
            log.warning(
                "task %r job %s attempt %d %s: %s; retrying in %d ms",
                self.name,
                job.id,
                job.attempt,
                "asked to retry" if isinstance(exc, RetryError) else "failed",
                message,
                delay,
            )
        else:
            log.error(
                "task %r job %s failed (attempt %d): %s", self.name, job.id, job.attempt, message
            )
        if will_retry:
            return Outcome(job.id, job.token, "retry", error=message, retry_delay_ms=delay or 0)
        return Outcome(job.id, job.token, "failed", error=message)

    async def _cancelled(self, run: _Running, data: Any) -> Outcome:
        hook = self.task.on_cancel
        if hook is not None:
            try:
                value = hook(data, run.ctx)
                if asyncio.iscoroutine(value):
                    await value
            except Exception:
                log.exception("task %r: on_cancel failed for job %s", self.name, run.job.id)
        return Outcome(run.job.id, run.job.token, "cancelled")

    # -- cancellation, locks, stalls ----------------------------------------------------------
    def _revoke(self, refused: tuple[str, ...]) -> None:
        """Refused ids still running here are jobs whose start Redis refused (cancelled, or
        the reservation expired, just before it arrived): stop them, drop their outcome."""
        for job_id in refused:
            run = self._active.get(job_id)
            if run is None or run.revoked:
                continue
            run.revoked = True
            run.ctx._mark_cancelled()
            if self.task.is_async and not run.handler_done and run.runner is not None:
                run.runner.cancel()

    def _drop_ready(self, job_id: str) -> Claimed | None:
        for job in self._ready:
            if job.id == job_id:
                self._ready.remove(job)
                return job
        return None

    def _cancel_requested(self, job_id: str) -> None:
        if not job_id:  # a job outranking our claimed-ahead ones arrived: give them back
            self._release_ready()
            return
        job = self._drop_ready(job_id)
        if job is not None:
            if not job.reserved:  # active but never started: cancelled as it is
                self._outcomes.append(Outcome(job.id, job.token, "cancelled"))
                self._wake.set()
            return  # claimed ahead: the cancel ended it already
        run = self._active.get(job_id)
        if run is None or run.cancel_requested:
            return
        run.cancel_requested = True
        run.ctx._mark_cancelled()
        if self.task.is_async and not run.handler_done and run.runner is not None:
            run.runner.cancel()

    async def _renew_locks(self) -> None:
        interval = self.options.stall.lock_ttl_ms / 3000
        while True:
            await asyncio.sleep(interval)
            await self._extend(list(self._active.values()))
            await self._extend_ready()

    async def _extend(self, runs: list[_Running]) -> None:
        if not runs:
            return
        held = [(run.job.id, run.job.token) for run in runs]
        try:
            replies = await self.backend.extend_locks(
                self.name, held, self.options.stall.lock_ttl_ms
            )
        except BackendError as exc:
            log.warning("worker %s: lock renewal failed: %s", self.name, exc)
            return
        for run, reply in zip(runs, replies, strict=True):
            if reply == -1:
                self._cancel_requested(run.job.id)
            elif reply == 0:
                log.warning("worker %s: lost the lock of job %s", self.name, run.job.id)

    async def _extend_ready(self) -> None:
        ready = list(self._ready)
        if not ready:
            return
        held = [(job.id, job.token) for job in ready]
        try:
            replies = await self.backend.extend_locks(
                self.name, held, self.options.stall.lock_ttl_ms
            )
        except BackendError:
            return
        for job, reply in zip(ready, replies, strict=True):
            if reply == -1:
                self._cancel_requested(job.id)
            elif reply == 0 and job.reserved:  # cancelled, or given back: not ours now
                self._drop_ready(job.id)

    def heartbeat(self, job_id: str) -> None:
        run = self._active.get(job_id)
        if run is not None:
            task = asyncio.ensure_future(self._extend([run]))
            run.io.track(task)

    async def _stall_loop(self) -> None:
        interval = self.options.stall.interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            await self._stall_check()

    async def _stall_check(self) -> None:
        try:
            lost = await self.backend.verify()
            if lost is not None:
                log.error("worker %s: %s", self.name, lost)
            report = await self.backend.stalled_check(self.name, self.options.stall.max_count)
            await self.backend.trim(self.name, self.app.retention)
        except BackendError as exc:
            log.warning("worker %s: stall check failed: %s", self.name, exc)
            return
        if report.recovered or report.failed:
            log.warning(
                "task %r: recovered %d stalled job(s), failed %d",
                self.name,
                len(report.recovered),
                len(report.failed),
            )

    def _new_executor(self) -> DaemonPool:
        return DaemonPool(self.concurrency, f"taskora-{self.name}")


class _Signal:
    """A cheap wake-up for the worker loop (an asyncio.Event costs a task per wait here)."""

    __slots__ = ("_future", "_set")

    def __init__(self) -> None:
        self._set = False
        self._future: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    def set_from(self, _: object) -> None:
        self.set()

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        self._future = asyncio.get_running_loop().create_future()
        try:
            await self._future
        finally:
            self._future = None


class _JobIO:
    """A job's progress/log writes: batched, fire-and-forget, flushed before the outcome."""

    __slots__ = ("_flush_scheduled", "_logs", "_loop", "_pending", "_thread", "_worker", "job")

    def __init__(self, worker: Worker, job: Claimed) -> None:
        self._worker = worker
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
        backend = self._worker.backend
        future = asyncio.ensure_future(backend.set_progress(self._worker.name, self.job.id, value))
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
            backend = self._worker.backend
            self.track(
                asyncio.ensure_future(backend.add_logs(self._worker.name, self.job.id, entries))
            )

    def heartbeat(self) -> None:
        if not self._in_loop():
            self._loop.call_soon_threadsafe(self._worker.heartbeat, self.job.id)
        else:
            self._worker.heartbeat(self.job.id)

    async def flush(self) -> None:
        self._flush_logs()
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


def _message(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


def _consume(task: asyncio.Task[tuple[Claimed, ...]]) -> tuple[Claimed, ...]:
    if task.cancelled():
        return ()
    exc = task.exception()
    if exc is not None:
        if not isinstance(exc, BackendError):
            log.warning("wait for work failed: %r", exc)
        return ()
    return task.result()
