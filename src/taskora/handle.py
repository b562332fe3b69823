"""ResultHandle: what ``dispatch()`` returns at once, before the job reaches the backend."""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import json
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import serializer
from .backends.base import EnqueueResult, Terminal
from .durations import Duration, optional_ms
from .errors import (
    JobCancelledError,
    JobExpiredError,
    JobFailedError,
    JobNotFoundError,
    TimeoutError,
)
from .runtime import Runtime
from .types import JobState, LogEntry
from .workflow import cancel_job

if TYPE_CHECKING:
    from .schemas import Schema

__all__ = ["ResultHandle"]

Out = TypeVar("Out")
T = TypeVar("T")

EnqueueFuture = asyncio.Future[EnqueueResult] | concurrent.futures.Future[EnqueueResult]


class ResultHandle(Generic[Out]):
    """A dispatched job.

    ``await handle`` gives the job id once enqueued (and raises the enqueue error, if any);
    ``await handle.result`` gives the handler's output, pushed by the backend. A handle whose
    dispatch was rejected by dedup follows the job that holds the key (``existing_id``).
    """

    __slots__ = (
        "_app",
        "_event_id",
        "_future",
        "_output",
        "_reject",
        "enqueued",
        "existing_id",
        "id",
        "task",
    )

    def __init__(
        self,
        app: Runtime,
        task: str,
        job_id: str,
        future: EnqueueFuture | None = None,
        reject: Callable[[EnqueueResult], BaseException | None] | None = None,
        output: Schema | None = None,
    ) -> None:
        self._app = app
        self._output = output
        self.task = task
        self.id = job_id
        self._future = future
        self._reject = reject
        self._event_id: str | None = None
        self.enqueued: bool | None = None if future is not None else True
        self.existing_id: str | None = None

    # -- enqueue ----------------------------------------------------------------------
    def __await__(self) -> Generator[Any, None, str]:
        future = self._future
        if isinstance(future, asyncio.Future):
            if future.done():
                return self._settle(future.result())  # raises the enqueue error, if any
            if future.get_loop() is asyncio.get_running_loop():  # at home: nothing to route
                return self._settle((yield from future.__await__()))
        return (yield from self._app._route(self._ensure_enqueued).__await__())

    async def _ensure_enqueued(self) -> str:
        future = self._future
        if future is None:
            return self.id
        if isinstance(future, concurrent.futures.Future):
            return self._settle(await asyncio.wrap_future(future))
        return self._settle(await future)

    def _settle(self, outcome: EnqueueResult) -> str:
        self.enqueued = outcome.enqueued
        self.existing_id = outcome.existing_id
        self._event_id = outcome.event_id
        if not outcome.enqueued and self._reject is not None:
            error = self._reject(outcome)
            if error is not None:
                raise error
        return self.id

    @property
    def _target(self) -> str:
        return self.existing_id or self.id

    # -- results ----------------------------------------------------------------------
    @property
    def result(self) -> Awaitable[Out]:
        """Wait for the output with no timeout."""
        return self.wait_for(None)

    async def wait_for(self, timeout: Duration | None) -> Out:
        """Wait for the output; raise :class:`taskora.TimeoutError` after ``timeout``
        (seconds, a timedelta or "5s"; None waits for as long as it takes)."""
        timeout_ms = optional_ms(timeout, "wait_for(timeout)")
        future = self._future
        if isinstance(future, asyncio.Future) and future.get_loop() is asyncio.get_running_loop():
            return await self._wait(timeout_ms)  # at home (the usual case): nothing to route
        return await self._app._route(lambda: self._wait(timeout_ms))

    async def _wait(self, timeout_ms: int | None) -> Out:
        future = self._future
        if timeout_ms is None:  # no timeout: no timer to arm
            remaining = None
            if isinstance(future, asyncio.Future):
                self._settle(await future)  # at once when enqueued already; raises its error
            else:
                await self._ensure_enqueued()
        else:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_ms / 1000
            if isinstance(future, asyncio.Future) and future.done():
                self._settle(future.result())  # enqueued already (the usual case): no timer
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._ensure_enqueued()
                except builtins.TimeoutError:
                    raise self._timeout_error(timeout_ms) from None
            remaining = max(0.0, deadline - loop.time())
        backend = self._app._ready_backend()
        if backend is None:
            backend = await self._app._connected_backend()
        terminal = await backend.wait_terminal(
            self.task, self._target, remaining, None if self.existing_id else self._event_id
        )
        if terminal is None:
            raise self._timeout_error(timeout_ms)
        return self._unwrap(terminal)

    def _timeout_error(self, ms: int | None) -> TimeoutError:
        return TimeoutError(f"Job {self._target} did not complete within {ms} ms", self._target, ms)

    def _unwrap(self, terminal: Terminal) -> Out:
        job_id = self._target
        if terminal.state == JobState.COMPLETED:
            if terminal.result is None:
                raise JobFailedError(job_id, self.task, "result missing")
            value: Out = serializer.loads(terminal.result, "result")
            if self._output is not None:  # back into the output type (a model for a model)
                return self._output.validate(value, "result")  # type: ignore[no-any-return]
            return value
        if terminal.state == JobState.FAILED:
            raise JobFailedError(job_id, self.task, terminal.error or "unknown error")
        if terminal.state == JobState.CANCELLED:
            raise JobCancelledError(job_id, self.task, terminal.reason)
        if terminal.state == JobState.EXPIRED:
            raise JobExpiredError(job_id, self.task)
        raise JobNotFoundError(job_id, self.task, terminal.reason or "")

    # -- queries ----------------------------------------------------------------------
    async def get_state(self) -> JobState | None:
        """The job's current state, or None if it does not exist (yet, or any more)."""
        snapshot = await self._app._route(lambda: self._snapshot())
        return None if snapshot.state is None else JobState(snapshot.state)

    async def get_progress(self) -> float | int | dict[str, Any] | None:
        """The last value the handler passed to ``ctx.progress``, or None."""
        snapshot = await self._app._route(lambda: self._snapshot())
        return _decode_progress(snapshot.progress)

    async def get_logs(self) -> list[LogEntry]:
        """Structured log entries the handler wrote through ``ctx.log``, oldest first."""
        raw = await self._app._route(lambda: self._logs())
        return [entry for entry in map(_decode_log, raw) if entry is not None]

    async def cancel(self, reason: str | None = None) -> None:
        """Cancel the job: at once if not running, within a second if active anywhere."""
        await self._app._route(lambda: self._cancel(reason))

    async def _snapshot(self) -> Any:
        backend = await self._app._connected_backend()
        return await backend.get_snapshot(self.task, self._target)

    async def _logs(self) -> list[str]:
        backend = await self._app._connected_backend()
        return await backend.get_logs(self.task, self._target)

    async def _cancel(self, reason: str | None) -> str:
        await self._ensure_enqueued()
        return await cancel_job(self._app, self.task, self._target, reason)

    # -- blocking forms ---------------------------------------------------------------
    def get(self, timeout: Duration | None = None) -> Out:
        """Block (from synchronous code) until the output is available, up to ``timeout``."""
        timeout_ms = optional_ms(timeout, "get(timeout)")
        return self._app._route_sync(lambda: self._wait(timeout_ms))

    @property
    def sync(self) -> SyncHandle[Out]:
        """Blocking forms of every method, for code without an event loop."""
        return SyncHandle(self)

    def __repr__(self) -> str:
        return f"ResultHandle(task={self.task!r}, id={self.id!r}, enqueued={self.enqueued})"


class SyncHandle(Generic[Out]):
    """``handle.sync.get_state()`` and friends: each call blocks the calling thread."""

    __slots__ = ("_handle",)

    def __init__(self, handle: ResultHandle[Out]) -> None:
        self._handle = handle

    def _run(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return self._handle._app._route_sync(factory)

    def wait_enqueued(self) -> str:
        return self._run(self._handle._ensure_enqueued)

    def result(self, timeout: Duration | None = None) -> Out:
        timeout_ms = optional_ms(timeout, "sync.result(timeout)")
        return self._run(lambda: self._handle._wait(timeout_ms))

    def get_state(self) -> JobState | None:
        return self._run(self._handle.get_state)

    def get_progress(self) -> float | int | dict[str, Any] | None:
        return self._run(self._handle.get_progress)

    def get_logs(self) -> list[LogEntry]:
        return self._run(self._handle.get_logs)

    def cancel(self, reason: str | None = None) -> None:
        self._run(lambda: self._handle.cancel(reason))


def _decode_progress(raw: str | None) -> float | int | dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | dict):
        return None
    return value


def _decode_log(raw: str) -> LogEntry | None:
    try:
        item = json.loads(raw)
        level = item.get("level", "info")
        if level not in ("info", "warn", "error"):
            level = "info"
        meta = item.get("meta") or {}
        return LogEntry(
            level=level,
            message=str(item.get("message", "")),
            meta=meta if isinstance(meta, dict) else {"value": meta},
            timestamp=int(item.get("timestamp", 0)),
        )
    except (ValueError, AttributeError, TypeError):
        return None
