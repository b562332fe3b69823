"""Worker: runs one task's jobs in this process, up to its concurrency.

The worker is a facade over three parts (``docs/design.md#claim-ahead``):

- ``claimer.Claimer``, the claim side: the one loop that sends outcomes, claims jobs (and
  quick ones ahead of the free slots), gives jobs back and waits for work;
- ``executor.Executor``, the execution side: runs one job (validation, middleware, handler,
  timeout, cancellation, ``on_cancel``, encoding) and reports how it ended;
- ``handoff.Handoff``, the only state they share: every job held, as a small state machine
  (reserved -> running -> reported / released / revoked), and the outcomes to send in order.

This module wires them together and owns the lifecycle: start, graceful stop, ``hurry()``,
routing cancel messages, lock renewal and stall checks.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import uuid
from typing import TYPE_CHECKING, Any

from .backends.base import Backend, ClaimOptions, Outcome, StallReport
from .claimer import PREFETCH_S, Claimer, Signal
from .errors import BackendError
from .executor import Executor, Run
from .handoff import Handoff, Slot
from .runtime import Runtime
from .workflow import step_ended
from .workflow import sweep as sweep_workflows

if TYPE_CHECKING:
    from .task import Task

__all__ = ["Worker"]

log = logging.getLogger("taskora.worker")
STALLED = "Job stalled and exceeded max stalled count"


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
            version=task.versioning.version,
        )
        self._wake = Signal()
        self.slots: Handoff[Run] = Handoff(self.concurrency, self._wake.set)
        self.executor = Executor(
            app, task, backend, self.concurrency, self._job_done, self.heartbeat
        )
        self.claimer = Claimer(
            self.name,
            backend,
            self.slots,
            self._wake,
            ClaimOptions(
                lock_ttl_ms=options.stall.lock_ttl_ms,
                singleton=options.singleton,
                keep_completed=app.retention.completed_max,
                keep_failed=app.retention.failed_max,
                version=task.versioning.version,
            ),
            uuid.uuid4().hex,
            self.prefetch,
            self._fill,
            self._interrupt_all,
        )
        self._hurry = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._upkeep: list[asyncio.Task[None]] = []

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        await self.backend.subscribe_cancel(self.name, self.cancel_requested)
        await self._stall_check()  # a restarted worker recovers its dead predecessor's jobs now
        self._main = asyncio.create_task(self.claimer.run(), name=f"taskora-worker-{self.name}")
        self._upkeep = [
            asyncio.create_task(self._renew_locks(), name=f"taskora-locks-{self.name}"),
            asyncio.create_task(self._stall_loop(), name=f"taskora-stall-{self.name}"),
        ]

    async def stop(self, timeout: float | None = None) -> None:
        """Stop claiming; wait for active jobs (up to ``timeout`` s, or until ``hurry()``),
        then give the rest back to the queue."""
        self.slots.stop()
        runners = [s.run.runner for s in self.slots.running if s.run and s.run.runner]
        if runners and not self._hurry.is_set():
            finished = asyncio.ensure_future(asyncio.wait(runners))
            hurried = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait([finished, hurried], timeout=timeout, return_when="FIRST_COMPLETED")
            for waiting in (finished, hurried):
                waiting.cancel()
        unfinished = self.slots.running
        if unfinished:
            log.warning(
                "worker %s: %d unfinished job(s) go back to the queue", self.name, len(unfinished)
            )
        for slot in unfinished:
            self.executor.abort(slot)
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
        self.executor.shutdown()

    def hurry(self) -> None:
        """Cut a ``stop()`` short: unfinished jobs go back to the queue now."""
        self._hurry.set()

    # -- the wiring between the parts ----------------------------------------------------
    def _fill(self) -> None:
        """Start buffered jobs in the free slots. A slow job must not hold the ones claimed
        behind it: when some are left waiting, each job started now is checked on in a while
        (none when the buffer empties: at concurrency 100 that is a timer saved per job)."""
        started = []
        while (slot := self.slots.start_next()) is not None:
            self.executor.start(slot)
            started.append(slot)
        if started and self.slots.has_buffered:
            later = asyncio.get_running_loop().call_later
            for slot in started:
                later(2 * PREFETCH_S, self.claimer.hold_check, slot)

    def _job_done(self, slot: Slot[Run], outcome: Outcome, took: float) -> None:
        if self.slots.report(slot, outcome):
            self.claimer.note_run(took)
            self._fill()  # the next buffered job starts now, not a round trip later

    def _interrupt_all(self, slots: list[Slot[Run]]) -> None:
        for slot in slots:
            self.executor.interrupt(slot)

    def cancel_requested(self, job_id: str) -> None:
        """A message on the task's cancel channel: ``job_id`` was cancelled, or (empty) a
        job outranking the ones claimed ahead arrived, so they go back."""
        if not job_id:
            self.slots.give_back()
            return
        slot = self.slots.cancel(job_id)
        if slot is not None:
            self.executor.interrupt(slot)

    # -- locks, stalls ----------------------------------------------------------------------
    async def _renew_locks(self) -> None:
        interval = self.options.stall.lock_ttl_ms / 3000
        while True:
            await asyncio.sleep(interval)
            await self._extend(self.slots.running)
            await self._extend_buffered()

    async def _extend(self, slots: list[Slot[Run]]) -> None:
        if not slots:
            return
        held = [(slot.id, slot.job.token) for slot in slots]
        try:
            replies = await self.backend.extend_locks(
                self.name, held, self.options.stall.lock_ttl_ms
            )
        except BackendError as exc:
            log.warning("worker %s: lock renewal failed: %s", self.name, exc)
            return
        for slot, reply in zip(slots, replies, strict=True):
            if reply == -1:
                self.cancel_requested(slot.id)
            elif reply == 0:
                log.warning("worker %s: lost the lock of job %s", self.name, slot.id)

    async def _extend_buffered(self) -> None:
        buffered = self.slots.buffered
        if not buffered:
            return
        held = [(slot.id, slot.job.token) for slot in buffered]
        try:
            replies = await self.backend.extend_locks(
                self.name, held, self.options.stall.lock_ttl_ms
            )
        except BackendError:
            return
        for slot, reply in zip(buffered, replies, strict=True):
            if reply == -1:
                self.cancel_requested(slot.id)
            elif reply == 0 and slot.job.reserved:  # cancelled, or given back: not ours now
                self.slots.drop(slot.id)

    def heartbeat(self, job_id: str) -> None:
        slot = self.slots.get(job_id)
        if slot is not None and slot.run is not None:
            slot.run.io.track(asyncio.ensure_future(self._extend([slot])))

    async def _stall_loop(self) -> None:
        interval = self.options.stall.interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            await self._stall_check()

    async def _workflow_upkeep(self, report: StallReport) -> None:
        """Workflow upkeep rides on the stall check (docs/design.md#workflows): a step the
        check failed or cancelled ends its workflow (no executor saw it end), and workflows
        whose ttl passed are cancelled."""
        try:
            for job_id in report.failed:
                await step_ended(self.app, job_id, "failed", STALLED)
            for job_id in report.cancelled:
                await step_ended(self.app, job_id, "cancelled", None)
            await sweep_workflows(self.app)
        except BackendError as exc:
            log.warning("worker %s: workflow upkeep failed: %s", self.name, exc)

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
        await self._workflow_upkeep(report)
        if report.recovered or report.failed:
            log.warning(
                "task %r: recovered %d stalled job(s), failed %d",
                self.name,
                len(report.recovered),
                len(report.failed),
            )
