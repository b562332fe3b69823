"""Live updates for every open board page over one SSE stream each (docs/design.md#board).

One ``Live`` per board process, whatever the number of browsers:

- every refresh interval it reads the state counts and the last minutes' throughput once
  (one pipeline per task) and the live workers (one pipeline), and sends the same ``stats``
  frame to every browser: what the overview and task pages show. Its cost does not grow
  with browsers or with job rates.
- while some browser has a job or a workflow open, it listens to those tasks' events through
  the app's single events reader (``taskora.events``) and every ``FLUSH_S`` sends a ``jobs``
  frame with the events of that job (or workflow) to the browsers that watch it. The reader
  runs only then and only for those tasks: reading every event of a busy queue costs Redis
  and the board's process real work, which the overview does not need.

A browser that does not keep up (its queue of frames is full) misses frames, never holds
the others back; the next ``stats`` frame brings it up to date. Nothing runs while no
browser is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ..events import TASK_EVENTS
from .api import worker_doc

if TYPE_CHECKING:
    from ..app import App
    from .redact import Redactor

__all__ = ["Live"]

log = logging.getLogger("taskora.board")

FLUSH_S = 0.5
HEARTBEAT_S = 15.0
TASKS_EVERY_S = 30.0  # how often the task list is re-read (a keyspace walk on Redis)
CLIENT_FRAMES = 64  # frames a slow browser may have queued before it misses some
ERROR_CHARS = 500


class Client:
    """One connected browser: what it watches and its queue of ready-to-send frames."""

    __slots__ = ("job", "missed", "queue", "tasks", "workflow")

    def __init__(self, tasks: frozenset[str] | None, job: str | None, workflow: str | None) -> None:
        self.tasks = tasks  # the tasks whose events it needs (None: all)
        self.job = job
        self.workflow = workflow
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(CLIENT_FRAMES)
        self.missed = 0

    @property
    def wants_events(self) -> bool:
        return self.job is not None or self.workflow is not None

    def wants(self, job_id: str) -> bool:
        if self.job is not None and job_id == self.job:
            return True
        return self.workflow is not None and job_id.startswith(f"wf-{self.workflow}-")

    def send(self, frame: str | None) -> None:
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.missed += 1
            if frame is None:  # closing: make room for the end
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.queue.get_nowait()
                self.queue.put_nowait(None)


def frame(kind: str, doc: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(doc, ensure_ascii=False, default=str)}\n\n"


class Live:
    def __init__(self, app: App, redact: Redactor, refresh_s: float) -> None:
        self.app = app
        self.redact = redact
        self.refresh_s = refresh_s
        self.clients: set[Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | None = None
        self._listening: dict[str, list[Callable[[], None]]] = {}  # task -> unsubscribes
        self._tasks: list[str] = []  # known tasks (re-read every TASKS_EVERY_S)
        self._pending: list[tuple[str, Any, float]] = []  # events of watched jobs
        self._stats: str | None = None
        self._closing = False

    # -- browsers ---------------------------------------------------------------------------
    async def stream(
        self,
        tasks: frozenset[str] | None = None,
        job: str | None = None,
        workflow: str | None = None,
    ) -> AsyncIterator[str]:
        """The frames for one browser until it goes away or the board closes. ``job`` /
        ``workflow``: send that job's (workflow's) events, read from ``tasks`` (None: all)."""
        client = Client(tasks, job, workflow)
        self.clients.add(client)
        if self._runner is None or self._runner.done():
            self._loop = asyncio.get_running_loop()
            self._closing = False
            self._runner = self._loop.create_task(self._run(), name="taskora-board-live")
        elif client.wants_events:
            self._listen()
        try:
            yield "retry: 3000\n\n"
            if self._stats is not None:
                yield self._stats
            while True:
                item = await client.queue.get()
                if item is None:
                    return
                yield item
        finally:
            self.clients.discard(client)
            if client.wants_events:
                self._listen()

    async def close(self) -> None:
        """End every stream (the server is stopping) and stop listening."""
        self._closing = True
        for client in list(self.clients):
            client.send(None)
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
        self._unlisten(set(self._listening))

    # -- the one loop -----------------------------------------------------------------------
    async def _run(self) -> None:
        next_tasks = next_stats = 0.0
        last_sent = time.monotonic()
        try:
            while self.clients and not self._closing:
                now = time.monotonic()
                if now >= next_tasks:
                    self._tasks = await self.app.inspect().tasks()
                    self._listen()
                    next_tasks = now + TASKS_EVERY_S
                if self._flush():
                    last_sent = now
                if now >= next_stats:
                    await self._send_stats()
                    next_stats, last_sent = now + self.refresh_s, now
                if now - last_sent >= HEARTBEAT_S:
                    self._broadcast(": ping\n\n")
                    last_sent = now
                await asyncio.sleep(FLUSH_S)
        except asyncio.CancelledError:
            raise
        except Exception:  # a Redis outage: browsers reconnect (retry: 3000) and restart us
            log.exception("board live updates stopped")
            for client in list(self.clients):
                client.send(None)
        finally:
            self._unlisten(set(self._listening))

    # -- events (only while a job or workflow page is open) ----------------------------------
    def _listen(self) -> None:
        """Listen to exactly the tasks the connected browsers need events of."""
        wanted: set[str] = set()
        for client in self.clients:
            if client.wants_events:
                wanted |= set(self._tasks) if client.tasks is None else set(client.tasks)
        self._unlisten(set(self._listening) - wanted)
        for task in wanted - set(self._listening):
            self._listening[task] = [
                self.app._listen(task, name, self._listener(name)) for name in sorted(TASK_EVENTS)
            ]

    def _unlisten(self, tasks: set[str]) -> None:
        for task in tasks:
            for off in self._listening.pop(task, ()):
                off()

    def _listener(self, name: str) -> Callable[[Any], None]:
        def on_event(event: Any) -> None:
            loop = self._loop
            if loop is None:
                return
            try:
                here = asyncio.get_running_loop()
            except RuntimeError:
                here = None
            if here is loop:
                self._take(name, event)
            else:  # the app lives on another loop than the web server
                loop.call_soon_threadsafe(self._take, name, event)

        return on_event

    def _take(self, name: str, event: Any) -> None:
        if any(client.wants(event.id) for client in self.clients if client.wants_events):
            self._pending.append((name, event, time.time()))

    # -- frames -----------------------------------------------------------------------------
    def _event_doc(self, item: tuple[str, Any, float]) -> dict[str, Any]:
        name, event, at = item
        doc: dict[str, Any] = {"event": name, "id": event.id, "task": event.task}
        doc["at"] = int(at * 1000)
        for key in ("attempt", "will_retry", "action", "duration"):
            value = getattr(event, key, None)
            if value is not None:
                doc[key] = value
        error = getattr(event, "error", None) or getattr(event, "reason", None)
        if isinstance(error, str):
            doc["error"] = self.redact.text(error[-ERROR_CHARS:])
        if name == "progress":
            doc["progress"] = self.redact(event.progress)
        return doc

    def _flush(self) -> bool:
        if not self._pending:
            return False
        events = [self._event_doc(item) for item in self._pending]
        self._pending = []
        for client in list(self.clients):
            if client.wants_events:
                mine = [e for e in events if client.wants(e["id"])]
                if mine:
                    client.send(frame("jobs", {"events": mine}))
        return True

    async def _send_stats(self) -> None:
        insp = self.app.inspect()
        names = list(self._tasks)
        # per known task: a call without a task would walk the keyspace every tick
        counts, per_task, workers = await asyncio.gather(
            asyncio.gather(*(insp.stats(n) for n in names)),
            asyncio.gather(*(insp.throughput(n, 2) for n in names)),
            insp.workers(),  # one read of the registry's two keys
        )
        minutes: dict[int, list[int]] = {}
        for rows in per_task:
            for m in rows:
                entry = minutes.setdefault(int(m["minute"].timestamp() * 1000), [0, 0])
                entry[0] += m["completed"]
                entry[1] += m["failed"]
        doc = {
            "at": int(time.time() * 1000),
            "tasks": dict(zip(names, counts, strict=True)),
            "minutes": [
                {"t": t, "completed": c, "failed": f} for t, (c, f) in sorted(minutes.items())
            ],
            "workers": [worker_doc(w) for w in workers],
        }
        self._stats = frame("stats", doc)
        self._broadcast(self._stats)

    def _broadcast(self, text: str) -> None:
        for client in list(self.clients):
            client.send(text)
