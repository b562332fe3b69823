"""The ``ctx`` a handler receives: job identity, progress, structured logs, retry, cancel.

Progress and log writes are fire-and-forget from the handler's point of view (they never
slow it down), and the worker flushes them before the job's terminal transition, so the
event stream always reads ``active -> progress* -> terminal``. Every method is safe to call
from a plain ``def`` handler running in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from typing import Any, Protocol

from . import serializer
from .durations import Duration, optional_ms
from .retry import RetryError
from .types import finite_number

__all__ = ["Context", "JobIO", "Logger"]


class JobIO(Protocol):
    """Where a context's writes go: the worker (backend) or a local recorder."""

    def progress(self, value: str) -> asyncio.Future[None] | None: ...

    def log(self, entry: str) -> None: ...

    def heartbeat(self) -> None: ...


class _Done:
    """What ``ctx.progress()`` returns: awaiting it waits for the write; ignoring it is fine."""

    __slots__ = ("_future",)

    def __init__(self, future: asyncio.Future[None] | None) -> None:
        self._future = future

    def __await__(self) -> Generator[Any, None, None]:
        if self._future is not None:
            yield from asyncio.shield(self._future).__await__()


class Logger:
    """``ctx.log.info("sent", to=addr)``: JSON entries ``{level, message, meta, timestamp}``."""

    __slots__ = ("_io",)

    def __init__(self, io: JobIO) -> None:
        self._io = io

    def _write(self, level: str, message: str, meta: dict[str, Any]) -> None:
        entry: dict[str, Any] = {"level": level, "message": str(message)}
        if meta:
            try:
                serializer.dumps(meta, "log meta")
                entry["meta"] = meta
            except Exception:  # a log call must never fail the job
                entry["meta"] = {k: repr(v) for k, v in meta.items()}
        entry["timestamp"] = int(time.time() * 1000)
        self._io.log(serializer.dumps(entry, "log entry"))

    def info(self, message: str, **meta: Any) -> None:
        self._write("info", message, meta)

    def warn(self, message: str, **meta: Any) -> None:
        self._write("warn", message, meta)

    warning = warn

    def error(self, message: str, **meta: Any) -> None:
        self._write("error", message, meta)


class Context:
    """Per-job context passed to handlers that accept a second parameter."""

    __slots__ = ("_cancelled", "_io", "attempt", "id", "log", "task", "timestamp")

    def __init__(self, job_id: str, task: str, attempt: int, timestamp: int, io: JobIO) -> None:
        self.id = job_id
        self.task = task
        self.attempt = attempt
        self.timestamp = timestamp
        self._io = io
        self._cancelled = False  # a plain flag that threads poll: no Event built per job
        self.log = Logger(io)

    @property
    def cancelled(self) -> bool:
        """True once cancellation of this job was requested; sync handlers should poll it."""
        return self._cancelled

    def _mark_cancelled(self) -> None:
        self._cancelled = True

    def progress(self, value: float | dict[str, Any]) -> _Done:
        """Record progress (a number or a dict). Await the result to wait for the write."""
        if isinstance(value, dict):
            encoded = serializer.dumps(value, "progress")
        else:
            number = finite_number(value, "progress")
            encoded = str(int(number)) if number.is_integer() else repr(number)
        return _Done(self._io.progress(encoded))

    def heartbeat(self) -> None:
        """Renew this job's lock now (the worker also renews it periodically)."""
        self._io.heartbeat()

    def retry(
        self, delay: Duration | None = None, reason: str = "Job scheduled for retry"
    ) -> RetryError:
        """Build a RetryError to ``raise``: retry now-ish, or after ``delay``."""
        error = RetryError(reason)
        error.delay_ms = optional_ms(delay, "ctx.retry(delay)")
        return error

    def __repr__(self) -> str:
        return f"Context(id={self.id!r}, task={self.task!r}, attempt={self.attempt})"


class LocalIO:
    """Recorder used when a task is called directly (no queue): keeps writes in memory."""

    def __init__(self) -> None:
        self.progress_values: list[str] = []
        self.logs: list[str] = []

    def progress(self, value: str) -> asyncio.Future[None] | None:
        self.progress_values.append(value)
        return None

    def log(self, entry: str) -> None:
        self.logs.append(entry)

    def heartbeat(self) -> None:
        return None
