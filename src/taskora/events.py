"""Job and worker events: typed payloads, the listener registry and its delivery.

``task.on("completed", fn)`` and ``app.on("task:completed", fn)`` return an ``unsubscribe()``
callable; ``fn`` may be sync or async. Events come from each task's events stream (wire
format v6: the entries a Node Taskora process writes and reads too), so a listener hears
what every process did, in stream order per task. One reader per process serves every
listener (see ``backends/redis/events_reader.py``); the memory backend hands its entries
over directly.

Delivery and slow listeners: a sync listener is called at once, in stream order (so sync
listeners of different events see them in the order they happened); it runs on the event
loop, so it must be quick, and slow work belongs in an async listener. Every async listener
has its own bounded buffer (``LISTENER_BUFFER`` events) and its own delivery task, so a slow
one holds up neither job processing, nor the reader, nor other listeners: when its buffer
is full, new events for it are dropped and counted, and the count is logged (once when
dropping starts, and the total when it has caught up); the reader is never held back.
A listener that raises is logged and keeps receiving events.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from . import serializer
from .backends.base import EventSource, Fields
from .errors import SerializationError

if TYPE_CHECKING:
    from .backends.base import Backend


class _Owner(Protocol):
    """What the hub reads of its App (kept narrow: events sit below the App)."""

    @property
    def _tasks(self) -> Mapping[str, Any]: ...
    @property
    def _home(self) -> asyncio.AbstractEventLoop | None: ...
    @property
    def _connected(self) -> bool: ...
    @property
    def backend(self) -> Backend: ...


__all__ = [
    "TASK_EVENTS",
    "ActiveEvent",
    "CancelledEvent",
    "CompletedEvent",
    "DelayedEvent",
    "Event",
    "FailedEvent",
    "ProgressEvent",
    "RetryingEvent",
    "StalledEvent",
    "WaitingEvent",
    "WorkerEvent",
]

log = logging.getLogger("taskora.events")

LISTENER_BUFFER = 10_000


@dataclass(frozen=True, slots=True)
class CompletedEvent:
    """A job ended with a result. ``duration`` is seconds from its claim to its end."""

    id: str
    result: Any
    duration: float
    attempt: int
    task: str


@dataclass(frozen=True, slots=True)
class FailedEvent:
    """An attempt failed; ``will_retry`` says whether another attempt follows."""

    id: str
    error: str | None
    attempt: int
    will_retry: bool
    task: str


@dataclass(frozen=True, slots=True)
class RetryingEvent:
    """A failed job will run again: ``attempt`` is the number of that next attempt."""

    id: str
    attempt: int
    next_attempt: datetime
    error: str | None
    task: str


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    id: str
    progress: Any
    task: str


@dataclass(frozen=True, slots=True)
class ActiveEvent:
    id: str
    attempt: int
    task: str


@dataclass(frozen=True, slots=True)
class StalledEvent:
    """A job's worker died: ``action`` is "recovered" (queued again) or "failed"."""

    id: str
    count: int
    action: str
    task: str


@dataclass(frozen=True, slots=True)
class CancelledEvent:
    id: str
    reason: str | None
    task: str


@dataclass(frozen=True, slots=True)
class WaitingEvent:
    id: str
    task: str


@dataclass(frozen=True, slots=True)
class DelayedEvent:
    id: str
    task: str


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """``worker:ready`` / ``worker:closing`` (``tasks``: this process's workers) and
    ``worker:error`` (``error``: why the event subscription failed; it keeps retrying)."""

    name: str
    tasks: tuple[str, ...] = ()
    error: BaseException | None = None


Event = (
    CompletedEvent
    | FailedEvent
    | RetryingEvent
    | ProgressEvent
    | ActiveEvent
    | StalledEvent
    | CancelledEvent
    | WaitingEvent
    | DelayedEvent
)

TASK_EVENTS = frozenset(
    {
        "completed",
        "failed",
        "retrying",
        "progress",
        "active",
        "stalled",
        "cancelled",
        "waiting",
        "delayed",
    }
)
WORKER_EVENTS = frozenset({"worker:ready", "worker:closing", "worker:error"})

Listener = Callable[[Any], Any]


# -- decoding --------------------------------------------------------------------------------
def decode(task: str, fields: Fields, job: Fields) -> list[Event]:
    """The events of one stream entry (a ``retrying`` entry gives two); [] for kinds that
    have no listener API (promoted, expired, debounced, ...) or unreadable entries."""
    kind = fields.get("event")
    job_id = fields.get("jobId")
    if kind is None or job_id is None:
        return []

    def get(name: str) -> str | None:
        value = fields.get(name)
        return value if value is not None else job.get(name)

    if kind == "completed":
        started, ended = _int(get("processedOn"), 0), _int(get("finishedOn"), 0)
        duration = max(ended - started, 0) / 1000 if started and ended else 0.0
        return [
            CompletedEvent(job_id, _json(get("result")), duration, _int(get("attempt"), 1), task)
        ]
    if kind == "failed":
        return [FailedEvent(job_id, get("error"), _int(get("attempt"), 1), False, task)]
    if kind == "retrying":
        attempt = _int(fields.get("attempt"), 1)
        error = fields.get("error")
        if error is None:
            error = job.get("error")
        at = _int(fields.get("nextAttemptAt"), 0)
        return [
            FailedEvent(job_id, error, attempt, True, task),
            RetryingEvent(job_id, attempt, datetime.fromtimestamp(at / 1000, UTC), error, task),
        ]
    if kind == "active":
        return [ActiveEvent(job_id, _int(get("attempt"), 1), task)]
    if kind == "progress":
        return [ProgressEvent(job_id, _json(fields.get("value")), task)]
    if kind == "stalled":
        action = fields.get("action") or "recovered"
        return [StalledEvent(job_id, _int(fields.get("count"), 1), action, task)]
    if kind == "cancelled":
        return [CancelledEvent(job_id, fields.get("reason") or None, task)]
    if kind == "waiting":
        return [WaitingEvent(job_id, task)]
    if kind == "delayed":
        return [DelayedEvent(job_id, task)]
    return []


def _int(value: str | None, default: int) -> int:
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        return default
    return int(number) if math.isfinite(number) else default


def _json(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return serializer.loads(value, "event value")
    except SerializationError:
        return value  # written by something else: hand over the raw text


# -- listeners ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Pending:
    """An awaitable a listener returned (a sync function that starts async work)."""

    awaitable: Any


class _Subscription:
    """One listener: its own buffer and delivery task, so it can only slow itself down."""

    __slots__ = ("buffer", "dropped", "fn", "hub", "is_async", "name", "runner")

    def __init__(self, hub: EventHub, name: str, fn: Listener) -> None:
        self.hub = hub
        self.name = name
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
        )
        self.buffer: deque[Any] = deque()
        self.dropped = 0
        self.runner: asyncio.Task[None] | None = None

    def push(self, event: Any) -> None:
        if not self.is_async:
            try:
                out = self.fn(event)
            except Exception:
                log.exception("event listener %r for %s raised", self.fn, self.name)
                return
            if not inspect.isawaitable(out):
                return
            self.is_async = True  # it returned an awaitable after all: treat it as async
            self.buffer.append(_Pending(out))
            self._start()
            return
        if len(self.buffer) >= LISTENER_BUFFER:
            if self.dropped == 0:
                log.warning(
                    "listener %r for %s is too slow: its buffer of %d events is full, "
                    "dropping events until it catches up",
                    self.fn,
                    self.name,
                    LISTENER_BUFFER,
                )
            self.dropped += 1
            return
        self.buffer.append(event)
        self._start()

    def _start(self) -> None:
        if self.runner is None or self.runner.done():
            self.runner = asyncio.get_running_loop().create_task(
                self._drain(), name=f"taskora-listener-{self.name}"
            )
            self.hub._runners.add(self.runner)
            self.runner.add_done_callback(self.hub._runners.discard)

    async def _drain(self) -> None:
        while self.buffer:
            event = self.buffer.popleft()
            try:
                out = event.awaitable if isinstance(event, _Pending) else self.fn(event)
                if inspect.isawaitable(out):
                    await out
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event listener %r for %s raised", self.fn, self.name)
            if not self.buffer and self.dropped:
                log.warning(
                    "listener %r for %s dropped %d events", self.fn, self.name, self.dropped
                )
                self.dropped = 0


class EventHub:
    """An App's listeners and the event source that feeds them (one per process)."""

    def __init__(self, app: _Owner) -> None:
        self._app = app
        self._listeners: dict[tuple[str | None, str], list[_Subscription]] = {}
        self._source: EventSource | None = None
        self._runners: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # the source's

    # -- registry ------------------------------------------------------------------------
    def on(self, task: str | None, name: str, fn: Listener) -> Callable[[], None]:
        if not callable(fn):
            raise TypeError(f"event listener must be callable, got {fn!r}")
        if task is None:
            kind = name.removeprefix("task:")
            if name not in WORKER_EVENTS and not (name.startswith("task:") and kind in TASK_EVENTS):
                raise ValueError(
                    f"unknown event {name!r}; expected 'task:<event>' with <event> one of "
                    f"{sorted(TASK_EVENTS)}, or one of {sorted(WORKER_EVENTS)}"
                )
        elif name not in TASK_EVENTS:
            raise ValueError(f"unknown event {name!r}; expected one of {sorted(TASK_EVENTS)}")
        label = name if task is None else f"{task}:{name}"
        sub = _Subscription(self, label, fn)
        self._listeners.setdefault((task, name), []).append(sub)
        self._refresh()

        def unsubscribe() -> None:
            subs = self._listeners.get((task, name))
            if subs is not None and sub in subs:
                subs.remove(sub)
                if not subs:
                    del self._listeners[(task, name)]
                self._refresh()

        return unsubscribe

    def watched(self) -> set[str]:
        """Tasks whose streams are read: those with listeners, all of them for app ones."""
        tasks = {t for (t, name) in self._listeners if t is not None}
        if any(t is None and name.startswith("task:") for (t, name) in self._listeners):
            tasks.update(self._app._tasks)
        return tasks

    # -- source ----------------------------------------------------------------------------
    def _refresh(self) -> None:
        """Listeners changed: tell the source which streams to read (from now on)."""
        home = self._app._home
        if home is None or not home.is_running():
            return  # connected() does it
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is home:
            self._sync()
        else:
            home.call_soon_threadsafe(self._sync)

    def _sync(self) -> None:
        tasks = self.watched()
        if self._source is None:
            if not tasks or not self._app._connected:
                return
            opener = getattr(self._app.backend, "open_events", None)
            if opener is None:
                return
            self._source = opener(self._deliver, self._error)
            self._loop = asyncio.get_running_loop()
        self._source.watch(tasks)

    def connected(self, backend: Backend) -> None:
        """The App connected (a dispatch, ``start()``): start reading if anyone listens."""
        self._sync()

    async def close(self) -> None:
        source, self._source = self._source, None
        if source is not None and self._loop is asyncio.get_running_loop():
            await source.close()  # (one of a loop that is gone is simply dropped)
        # let listeners take what was already delivered, briefly; then stop them
        runners = list(self._runners)
        if runners:
            await asyncio.wait(runners, timeout=1.0)
        for runner in list(self._runners):
            runner.cancel()

    def reset(self) -> None:
        """The App moved to another event loop: forget what belonged to the old one."""
        self._source = None
        self._runners.clear()
        for subs in self._listeners.values():
            for sub in subs:
                sub.runner = None
                sub.buffer.clear()

    # -- delivery ----------------------------------------------------------------------------
    def _deliver(self, task: str, entries: list[tuple[Fields, Fields]]) -> None:
        listeners = self._listeners
        for fields, job in entries:
            for event in decode(task, fields, job):
                name = _NAMES[type(event)]
                for sub in listeners.get((task, name), ()):
                    sub.push(event)
                for sub in listeners.get((None, "task:" + name), ()):
                    sub.push(event)

    def _error(self, exc: BaseException) -> None:
        log.warning("event subscription failed (retrying): %s", exc)
        self.emit_worker("worker:error", error=exc)

    def emit_worker(
        self, name: str, tasks: tuple[str, ...] = (), error: BaseException | None = None
    ) -> None:
        subs = self._listeners.get((None, name))
        if not subs:
            return
        event = WorkerEvent(name, tasks, error)
        for sub in subs:
            sub.push(event)

    async def settle(self) -> None:
        """Wait until every listener has taken what it was given (for tests)."""
        while self._runners:
            await asyncio.wait(list(self._runners))


_NAMES: dict[type, str] = {
    CompletedEvent: "completed",
    FailedEvent: "failed",
    RetryingEvent: "retrying",
    ProgressEvent: "progress",
    ActiveEvent: "active",
    StalledEvent: "stalled",
    CancelledEvent: "cancelled",
    WaitingEvent: "waiting",
    DelayedEvent: "delayed",
}
