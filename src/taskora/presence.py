"""The worker registry: which worker processes are alive, for the inspector and the board
(docs/design.md#workers).

A started App announces its process once (an id, host, pid, its tasks with their
concurrency, when it started, taskora's version), refreshes that entry every ``heartbeat``
on a timer of its own (one small write; nothing on the paths jobs take) and removes it on a
clean close. A process that dies without closing stops refreshing: its entry counts as gone
``MISSED_BEATS`` heartbeats after its last one, by the store's clock, and the next beat of
any worker removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import BackendError

if TYPE_CHECKING:
    from .backends.base import Backend
    from .worker import Worker

__all__ = ["MISSED_BEATS", "Presence", "WorkerInfo"]

log = logging.getLogger("taskora.worker")

MISSED_BEATS = 3
"""Heartbeats a worker may miss before it counts as gone (a loaded host, a long GC pause)."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker process (``inspect().workers()``): its ``tasks`` (name -> concurrency),
    the jobs it was running at its last heartbeat (``active``), when it started and when it
    was last heard of (aware UTC datetimes, the store's clock)."""

    id: str
    host: str
    pid: int
    tasks: dict[str, int]
    concurrency: int
    active: int
    version: str
    started_at: datetime | None
    last_seen: datetime
    heartbeat_s: float

    @classmethod
    def from_entry(cls, worker_id: str, record: str, expires_ms: int) -> WorkerInfo:
        """An entry as ``Backend.worker_list`` returns it; a record that is not ours (another
        writer, a hand edit) shows as far as it can be read."""
        try:
            doc = json.loads(record)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            doc = {}
        raw_tasks = doc.get("tasks")
        tasks = (
            {str(k): v for k, v in raw_tasks.items() if isinstance(v, int)}
            if isinstance(raw_tasks, dict)
            else {}
        )
        ttl = _int(doc.get("ttl"))
        started = _int(doc.get("started"))
        return cls(
            id=worker_id,
            host=str(doc.get("host", "")),
            pid=_int(doc.get("pid")),
            tasks=tasks,
            concurrency=sum(tasks.values()),
            active=_int(doc.get("active")),
            version=str(doc.get("version", "")),
            started_at=_at(started) if started > 0 else None,
            last_seen=_at(expires_ms - ttl),
            heartbeat_s=ttl / MISSED_BEATS / 1000,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the CLI's ``--json``; the board sends times as epoch ms)."""
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "tasks": self.tasks,
            "concurrency": self.concurrency,
            "active": self.active,
            "version": self.version,
            "started_at": None if self.started_at is None else self.started_at.isoformat(),
            "last_seen": self.last_seen.isoformat(),
        }


class Presence:
    """This process's entry in the registry, kept alive while the App runs its workers."""

    def __init__(self, backend: Backend, workers: Sequence[Worker], heartbeat_ms: int) -> None:
        self.backend = backend
        self.workers = list(workers)
        self.heartbeat_ms = heartbeat_ms
        self.id = uuid.uuid4().hex[:16]
        self.host = socket.gethostname()
        self.started_ms = backend.now_ms()
        self._timer: asyncio.Task[None] | None = None

    def record(self) -> str:
        tasks: dict[str, int] = {}
        for worker in self.workers:
            tasks[worker.name] = worker.concurrency
        return json.dumps(
            {
                "host": self.host,
                "pid": os.getpid(),
                "tasks": tasks,
                "started": self.started_ms,
                "version": __version__,
                "active": sum(len(worker.slots.running) for worker in self.workers),
                "ttl": self.heartbeat_ms * MISSED_BEATS,
            },
            separators=(",", ":"),
        )

    async def start(self) -> None:
        """Announce this process now (a failure is logged: the timer tries again)."""
        await self.beat()
        self._timer = asyncio.create_task(self._run(), name="taskora-presence")

    async def stop(self) -> None:
        """Leave the registry at once (a clean close)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        try:
            await self.backend.worker_beat(self.id, "", 0)
        except BackendError as exc:  # it counts as gone once its heartbeats stop anyway
            log.warning("taskora: could not leave the worker registry: %s", exc)

    async def beat(self) -> None:
        try:
            await self.backend.worker_beat(self.id, self.record(), self.heartbeat_ms * MISSED_BEATS)
        except BackendError as exc:
            log.warning("taskora: worker heartbeat failed: %s", exc)

    async def _run(self) -> None:
        interval = self.heartbeat_ms / 1000
        while True:
            await asyncio.sleep(interval)
            await self.beat()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
