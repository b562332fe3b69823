"""The scheduler: registration, the leader's tick, and ``app.schedules``.

Any number of processes run a :class:`Scheduler`; the one holding the leader lock dispatches.
A tick is a small state machine (docs/design.md#scheduling):

1. **lock**: take or renew the leader lock (``schedule_lock``); not leader -> done.
2. **due**: read the due schedules and the server's now (``schedule_due``); nothing is
   removed, so a crash from here on leaves every schedule armed.
3. **dispatch**: for each fire time to run, create its job through the task's enqueue path
   with a ``schedule`` flow (``enqueue_flow``): a per-schedule mark on the task's slot makes a
   fire time run at most once, whichever leader sends it, and holds it back while the
   previous job is unfinished when ``overlap=False``.
4. **re-arm**: compare-and-set the record (last run, last job) and the next fire time
   (``schedule_write``), only if the schedule is still what step 2 read.

A schedule whose task this process does not know is left armed for a leader that does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from .backends.base import Backend, Flow, ScheduleExpect
from .errors import ConfigError, ValidationError
from .handle import ResultHandle
from .runtime import Runtime
from .schedule import (
    ScheduleInfo,
    ScheduleSpec,
    fire_job_id,
    history_json,
    plan_fires,
    to_info,
)

__all__ = ["ScheduleManager", "Scheduler"]

log = logging.getLogger("taskora.scheduler")

DUE_BATCH = 50
STOP_TIMEOUT_S = 5.0  # how long a stop lets a tick in progress finish its fire time
MARK_MIN_MS = 7 * 86_400_000  # how long a schedule's dedup mark outlives its fire time
_CAS_TRIES = 20


class Scheduler:
    """One process's scheduler loop; the leader among them dispatches."""

    def __init__(
        self,
        app: Runtime,
        declared: Mapping[str, ScheduleSpec],
        poll_ms: int,
        lock_ttl_ms: int,
    ) -> None:
        self.app = app
        self.declared = declared
        self.poll_ms = poll_ms
        self.lock_ttl_ms = lock_ttl_ms
        self.token = uuid.uuid4().hex
        self.is_leader = False
        self._registered: set[str] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._warned: set[str] = set()
        # name -> the record it wrote last, parsed (its history aside), its stem
        # (history_json) and its history: the next tick reads that record back and skips
        # the parse, most of the encoding, and a ScheduleSpec per fire time
        self._parsed: dict[str, tuple[str, ScheduleSpec, str, int | None, str | None]] = {}

    async def start(self) -> None:
        """Store the declared schedules, then tick in the background: once ``start()``
        returns (``async with app:``), ``app.schedules`` knows every declared schedule."""
        self._stop = asyncio.Event()
        await self._register(await self.app._connected_backend())
        self._task = asyncio.create_task(self._run(), name="taskora-scheduler")

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop ticking. A tick in progress finishes the fire time it is on (up to ``timeout``
        seconds; then it is cancelled, and a fire time cut between its dispatch and its re-arm
        stays armed, its dedup mark keeping it from running twice), so ``app.schedules``
        shows the last run; then the leader lock is given up."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.is_leader:
            self.is_leader = False
            with contextlib.suppress(Exception):  # the lock expires by itself anyway
                backend = await self.app._connected_backend()
                await backend.schedule_lock(self.token, self.lock_ttl_ms, release=True)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: try again next poll
                log.warning("taskora scheduler: tick failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_ms / 1000)

    async def tick(self) -> int:
        """One tick; returns how many jobs this process dispatched."""
        backend = await self.app._connected_backend()
        if not self._registered.issuperset(self.declared):
            await self._register(backend)
        self.is_leader = await backend.schedule_lock(self.token, self.lock_ttl_ms)
        if not self.is_leader:
            return 0
        sent = 0
        for _ in range(100):  # a long catch-up goes on in further rounds, then next tick
            got = await backend.schedule_due(self.token, DUE_BATCH)
            if got is None:
                self.is_leader = False
                return sent
            now, due = got
            more = False
            for name, fire_ms, record in due:
                if self._stop.is_set():  # stopping: what is left stays armed for the next leader
                    return sent
                count, again = await self._fire(backend, name, fire_ms, record, now)
                sent += count
                more = more or again
            if not more and len(due) < DUE_BATCH:
                break
        return sent

    async def _fire(
        self, backend: Backend, name: str, due_ms: int, record: str, now: int
    ) -> tuple[int, bool]:
        known = self._parsed.get(name)
        if known is not None and known[0] == record:
            _, spec, stem, last_run, last_job = known
        else:
            try:
                spec = ScheduleSpec.from_json(record)
            except (ValueError, KeyError, TypeError):
                self._warn(name, f"schedule {name!r} has an unreadable record; left as it is")
                return 0, False
            stem = spec.fired(None, None).to_json()
            last_run, last_job = spec.last_run, spec.last_job_id
        task: Any = self.app.tasks.get(spec.task)
        if task is None:
            self._warn(name, f"schedule {name!r}: task {spec.task!r} is unknown here; left armed")
            return 0, False
        plan = plan_fires(spec, due_ms, now)
        period = spec.every_ms or 0
        sent = 0
        for fire in plan.fires:
            try:
                job, _ = task._build(spec.data)
            except ValidationError as exc:  # stored by another process: left armed, said once
                self._warn(name, f"schedule {name!r}: its data does not fit the task: {exc}")
                return 0, False
            job.id = fire_job_id(name, fire)
            flow = Flow(
                "schedule",
                name,
                fire_ms=fire,
                overlap=spec.overlap,
                window_ms=max(MARK_MIN_MS, 3 * period),
            )
            result = await backend.enqueue_flow(task.name, job, flow)
            if result.enqueued:
                last_run, last_job = fire, job.id
                sent += 1
        if last_run is not None and last_job is not None:
            text = history_json(stem, last_run, last_job)
        else:
            text = spec.fired(last_run, last_job).to_json()
        if await backend.schedule_write(name, ScheduleExpect(record, due_ms), text, plan.next_ms):
            self._parsed[name] = (text, spec, stem, last_run, last_job)
        return sent, plan.more

    def _warn(self, name: str, message: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            log.warning("taskora scheduler: %s", message)

    async def _register(self, backend: Backend) -> None:
        for name, spec in self.declared.items():
            if name not in self._registered:
                await register(backend, name, spec)
                self._registered.add(name)


async def register(backend: Backend, name: str, spec: ScheduleSpec) -> None:
    """Store a declared schedule. An existing one keeps its history (last run, last job), its
    paused state, and its next fire time unless the timing changed (decision 5)."""
    for _ in range(_CAS_TRIES):
        rows = await backend.schedule_read(name)
        if not rows:
            first = spec.first_fire(backend.now_ms())
            expect = ScheduleExpect(None, None)
            if await backend.schedule_write(name, expect, spec.to_json(), first):
                return
            continue
        _, record, next_ms = rows[0]
        try:
            old = ScheduleSpec.from_json(record)
        except (ValueError, KeyError, TypeError):
            old = None
        new = spec if old is None else spec.with_history(old)
        if new.to_json() == record:
            return
        if old is None or not new.same_timing(old):
            next_ms = (
                None if old is not None and next_ms is None else new.first_fire(backend.now_ms())
            )
        if await backend.schedule_write(
            name, ScheduleExpect(record, rows[0][2]), new.to_json(), next_ms
        ):
            return
    raise ConfigError(f"schedule {name!r} kept changing while it was being registered")


class ScheduleManager:
    """``app.schedules``: list, pause, resume, update, remove and trigger stored schedules."""

    def __init__(self, app: Runtime) -> None:
        self.app = app

    async def _backend(self) -> Backend:
        return await self.app._connected_backend()

    async def list(self) -> list[ScheduleInfo]:
        async def run() -> list[ScheduleInfo]:
            rows = await (await self._backend()).schedule_read(None)
            out = []
            for name, record, next_ms in sorted(rows):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    out.append(to_info(name, record, next_ms))
            return out

        return await self.app._route(run)

    async def get(self, name: str) -> ScheduleInfo | None:
        async def run() -> ScheduleInfo | None:
            rows = await (await self._backend()).schedule_read(name)
            return to_info(*rows[0]) if rows else None

        return await self.app._route(run)

    async def _change(self, name: str, change: Any) -> None:
        """Read, change, compare-and-set; again if someone else wrote in between."""

        async def run() -> None:
            backend = await self._backend()
            for _ in range(_CAS_TRIES):
                rows = await backend.schedule_read(name)
                if not rows:
                    raise ConfigError(f"unknown schedule {name!r}")
                _, record, next_ms = rows[0]
                spec = ScheduleSpec.from_json(record)
                new_spec, new_next = change(spec, next_ms, backend.now_ms())
                expect = ScheduleExpect(record, next_ms)
                new_record = None if new_spec is None else new_spec.to_json()
                if await backend.schedule_write(name, expect, new_record, new_next):
                    return
            raise ConfigError(f"schedule {name!r} kept changing; try again")

        await self.app._route(run)

    async def pause(self, name: str) -> None:
        """Stop firing (kept, with its history) until ``resume``."""
        await self._change(name, lambda spec, _next, _now: (spec, None))

    async def resume(self, name: str) -> None:
        """Fire again, from now on (missed fire times while paused are not caught up)."""

        def change(spec: ScheduleSpec, next_ms: int | None, now: int) -> Any:
            return spec, next_ms if next_ms is not None else spec.first_fire(now)

        await self._change(name, change)

    async def update(self, name: str, **fields: Any) -> None:
        """Change ``every``, ``cron``, ``timezone``, ``on_missed``, ``overlap`` or ``data``;
        a new timing re-arms from now. Invalid values raise ValueError, nothing written."""
        allowed = {"every", "cron", "timezone", "on_missed", "overlap", "data"}
        unknown = set(fields) - allowed
        if unknown:
            raise ConfigError(f"update of schedule {name!r}: unknown fields {sorted(unknown)}")
        if "every" in fields and "cron" in fields:
            raise ConfigError(f"schedule {name!r}: give exactly one of every= or cron=")

        def change(spec: ScheduleSpec, next_ms: int | None, now: int) -> Any:
            every: Any = None if spec.every_ms is None else spec.every_ms / 1000
            cron, timezone = spec.cron, spec.timezone
            if "every" in fields:
                every, cron, timezone = fields["every"], None, None
            if "cron" in fields:
                every, cron = None, fields["cron"]
                timezone = fields.get("timezone")
            elif "timezone" in fields:
                timezone = fields["timezone"]
            new = ScheduleSpec.build(
                name,
                spec.task,
                data=fields.get("data", spec.data),
                every=every,
                cron=cron,
                timezone=timezone,
                on_missed=fields.get("on_missed", spec.on_missed),
                overlap=fields.get("overlap", spec.overlap),
            ).with_history(spec)
            if next_ms is not None and not new.same_timing(spec):
                next_ms = new.first_fire(now)
            return new, next_ms

        await self._change(name, change)

    async def remove(self, name: str) -> bool:
        """Delete the schedule; False when there was none."""

        async def run() -> bool:
            backend = await self._backend()
            if not await backend.schedule_read(name):
                return False
            return await backend.schedule_write(name, ScheduleExpect(), None, None)

        return await self.app._route(run)

    async def trigger(self, name: str) -> ResultHandle[Any]:
        """Dispatch the schedule's job now, with its data; next and last run are unchanged."""
        info = await self.get(name)
        if info is None:
            raise ConfigError(f"unknown schedule {name!r}")
        task: Any = self.app.tasks.get(info.task)
        if task is None:
            raise ConfigError(f"schedule {name!r}: task {info.task!r} is not known here")
        handle: ResultHandle[Any] = task.dispatch(info.data)
        return handle
