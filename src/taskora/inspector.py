"""Looking at jobs from outside: job details and the dead-letter queue (failed jobs)."""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .runtime import Runtime
from .types import JobState

__all__ = ["DeadLetters", "JobInfo"]

RETRY_BATCH = 500
_STATES = {state.value for state in JobState}


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job as stored. ``data``/``result`` are decoded JSON (None when absent or unreadable)."""

    id: str
    task: str
    state: JobState | None
    data: Any
    result: Any
    error: str | None
    attempt: int
    progress: Any
    timestamp: int
    processed_on: int | None
    finished_on: int | None

    @classmethod
    def from_fields(cls, task: str, job_id: str, fields: dict[str, str]) -> JobInfo:
        state = fields.get("state", "")
        return cls(
            id=job_id,
            task=task,
            state=JobState(state) if state in _STATES else None,
            data=_json(fields.get("data")),
            result=_json(fields.get("result")),
            error=fields.get("error") or None,
            attempt=_int(fields.get("attempt")) or 1,
            progress=_json(fields.get("progress")),
            timestamp=_int(fields.get("ts")) or 0,
            processed_on=_int(fields.get("processedOn")),
            finished_on=_int(fields.get("finishedOn")),
        )


class DeadLetters:
    """Permanently failed jobs: list them, retry one, or retry them all (``app.dead_letters``).

    A retried job starts over at attempt 1 with a fresh dispatch time; each move is atomic.
    """

    def __init__(self, app: Runtime) -> None:
        self._app = app

    def _tasks(self, task: str | None) -> Iterable[str]:
        if task is None:
            return list(self._app.tasks)
        if task not in self._app.tasks:
            raise ConfigError(f"unknown task {task!r}")
        return [task]

    async def list(
        self, task: str | None = None, limit: int = 20, offset: int = 0
    ) -> list[JobInfo]:
        """Failed jobs, newest first (per task, when no task is given)."""
        return await self._app._route(lambda: self._list(task, limit, offset))

    async def _list(self, task: str | None, limit: int, offset: int) -> builtins.list[JobInfo]:
        backend = await self._app._connected_backend()
        out: builtins.list[JobInfo] = []
        for name in self._tasks(task):
            rows = await backend.list_jobs(name, "failed", offset, limit)
            out += [JobInfo.from_fields(name, job_id, fields) for job_id, fields in rows]
        return out

    async def retry(self, job_id: str, task: str | None = None) -> bool:
        """Put one failed job back to waiting; False if it is not in the dead-letter queue."""
        return await self._app._route(lambda: self._retry(job_id, task))

    async def _retry(self, job_id: str, task: str | None) -> bool:
        backend = await self._app._connected_backend()
        for name in self._tasks(task):
            if await backend.retry_failed(name, [job_id], 1):
                return True
        return False

    async def retry_all(self, task: str | None = None) -> int:
        """Put every failed job back to waiting (oldest first); returns how many."""
        return await self._app._route(lambda: self._retry_all(task))

    async def _retry_all(self, task: str | None) -> int:
        backend = await self._app._connected_backend()
        total = 0
        for name in self._tasks(task):
            while True:
                moved = await backend.retry_failed(name, None, RETRY_BATCH)
                total += len(moved)
                if len(moved) < RETRY_BATCH:
                    break
        return total


def _json(raw: str | None) -> Any:
    if raw is None or raw == "":
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None
