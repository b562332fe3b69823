"""Live updates for every open board page over one SSE stream each (docs/design.md#board).

One ``Live`` per board process, whatever the number of browsers: it listens to the task
events through the app's single events reader (``taskora.events``), counts them and keeps
the latest few, and every ``FLUSH_S`` sends one ``jobs`` frame to each browser; every
refresh interval it reads the state counts once (one pipeline per task) and sends one
``stats`` frame to all. So the cost in Redis does not grow with the number of browsers,
and a busy queue costs each browser two frames a second, not one per job.

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
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ..events import TASK_EVENTS

if TYPE_CHECKING:
    from ..app import App
    from .redact import Redactor

__all__ = ["Live"]

log = logging.getLogger("taskora.board")

FLUSH_S = 0.5
HEARTBEAT_S = 15.0
TASKS_EVERY_S = 30.0  # how often the task list is re-read (a keyspace walk on Redis)
KEEP_EVENTS = 100  # latest events per frame
CLIENT_FRAMES = 64  # frames a slow browser may have queued before it misses some
ERROR_CHARS = 500


class Client:
    """One connected browser: its filter and its queue of ready-to-send frames."""

    __slots__ = ("job", "missed", "queue", "tasks")

    def __init__(self, tasks: frozenset[str] | None, job: str | None) -> None:
        self.tasks = tasks
        self.job = job
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(CLIENT_FRAMES)
        self.missed = 0

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
        self._unsubscribe: list[Callable[[], None]] = []
        self._tasks: list[str] = []
        self._latest: deque[tuple[str, Any, float]] = deque(maxlen=KEEP_EVENTS)
        self._counts: Counter[tuple[str, str]] = Counter()
        self._jobs: Counter[str] = Counter()  # job ids some browser watches
        self._by_job: dict[str, list[tuple[str, Any, float]]] = {}
        self._stats: str | None = None
        self._closing = False

    # -- browsers ---------------------------------------------------------------------------
    async def stream(self, tasks: frozenset[str] | None, job: str | None) -> AsyncIterator[str]:
        """The frames for one browser until it goes away or the board closes."""
        client = self._connect(tasks, job)
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
            self._disconnect(client)

    def _connect(self, tasks: frozenset[str] | None, job: str | None) -> Client:
        client = Client(tasks, job)
        self.clients.add(client)
        if job is not None:
            self._jobs[job] += 1
        loop = asyncio.get_running_loop()
        if self._runner is None or self._runner.done():
            self._loop = loop
            self._closing = False
            self._runner = loop.create_task(self._run(), name="taskora-board-live")
        return client

    def _disconnect(self, client: Client) -> None:
        self.clients.discard(client)
        if client.job is not None:
            self._jobs[client.job] -= 1
            if self._jobs[client.job] <= 0:
                del self._jobs[client.job]
                self._by_job.pop(client.job, None)

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
        self._stop_listening()

    # -- the one loop -----------------------------------------------------------------------
    async def _run(self) -> None:
        next_tasks = next_stats = 0.0
        last_sent = time.monotonic()
        try:
            while self.clients and not self._closing:
                now = time.monotonic()
                if now >= next_tasks:
                    await self._watch_tasks()
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
            self._stop_listening()

    async def _watch_tasks(self) -> None:
        names = await self.app.inspect().tasks()
        for name in names:
            if name in self._tasks:
                continue
            self._tasks.append(name)
            for event in sorted(TASK_EVENTS):
                self._unsubscribe.append(self.app._listen(name, event, self._listener(event)))

    def _stop_listening(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, []
        for off in unsubscribe:
            off()
        self._tasks = []

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
        now = time.time()
        self._counts[(event.task, name)] += 1
        item = (name, event, now)
        self._latest.append(item)
        if self._jobs and event.id in self._jobs:
            self._by_job.setdefault(event.id, []).append(item)

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
        if not self._counts:
            return False
        counts: dict[str, dict[str, int]] = {}
        for (task, name), n in self._counts.items():
            counts.setdefault(task, {})[name] = n
        latest = [self._event_doc(item) for item in self._latest]
        by_job = {
            job: [self._event_doc(item) for item in items] for job, items in self._by_job.items()
        }
        self._counts.clear()
        self._latest.clear()
        self._by_job.clear()
        made: dict[tuple[frozenset[str] | None, str | None], str] = {}
        for client in list(self.clients):
            key = (client.tasks, client.job)
            text = made.get(key)
            if text is None:
                text = made[key] = self._jobs_frame(client, counts, latest, by_job)
            client.send(text)
        return True

    @staticmethod
    def _jobs_frame(
        client: Client,
        counts: dict[str, dict[str, int]],
        latest: list[dict[str, Any]],
        by_job: dict[str, list[dict[str, Any]]],
    ) -> str:
        if client.tasks is not None:
            counts = {t: c for t, c in counts.items() if t in client.tasks}
            latest = [e for e in latest if e["task"] in client.tasks]
        events = by_job.get(client.job, []) if client.job is not None else latest
        return frame("jobs", {"counts": counts, "events": events})

    async def _send_stats(self) -> None:
        insp = self.app.inspect()
        names = list(self._tasks)
        # per known task: a call without a task would walk the keyspace every tick
        counts, per_task = await asyncio.gather(
            asyncio.gather(*(insp.stats(n) for n in names)),
            asyncio.gather(*(insp.throughput(n, 2) for n in names)),
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
        }
        self._stats = frame("stats", doc)
        self._broadcast(self._stats)

    def _broadcast(self, text: str) -> None:
        for client in list(self.clients):
            client.send(text)
