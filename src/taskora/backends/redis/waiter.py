"""The shared result reader: one subscription serves every waiting handle in a process.

Every script that ends a job appends it to the task's ``done`` stream and publishes
``"<entry id>\n<job id>\n<state>[\n<detail>]"`` on the channel of the same name (small
results inline). The reader subscribes to the channels of the tasks being waited on and
resolves the matching waiters: a result costs no command at all on the waiting side, and
thousands of waiters share one connection.

Correctness without polling each job:
- When a task is first watched, the subscription is confirmed before the job's state is
  read (one pipeline with the server's ``TIME``): an end before that shows in the state,
  an end after it arrives as a message.
- A job this process enqueued carries its creation time. If it was created after the
  subscription began (a later millisecond than ``TIME`` then), its end will reach us, so the
  state check is skipped; an end that arrived before the waiter registered sits in
  ``_recent``.
- Pub/sub is not durable, the stream is: after a reconnect the reader replays the ``done``
  stream from the last entry it saw. A sweep re-checks, in one pipeline, the state of every
  waiter older than a few seconds, for what no entry announces (data lost with a Redis
  restart, a ttl that passed with no worker), so nothing waits forever.

What a waiter may rely on: an end stays readable for as long as its entry is in the task's
``done`` stream (the last ~10,000 ends), whatever the retention of the job hashes. A check or
sweep that finds no job hash looks the job up in the stream before it reports the job
missing: a job that completed and was trimmed before its waiter first looked (or while the
subscription was down) still gives its result. Only results larger than the inline limit
(4 KiB) live in the job hash alone, and go with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ...errors import BackendError
from ..base import Terminal
from .resp import ReplyError, Subscriber
from .scripts import FindEnds

if TYPE_CHECKING:
    from .backend import RedisBackend

__all__ = ["ResultWaiter"]

RECENT_MAX = 20_000
SWEEP_EVERY_S = 2.0
SWEEP_CHUNK = 2_000
IDLE_UNWATCH_S = 30.0
_TERMINAL_STATES = {"completed", "failed", "cancelled", "expired"}
_FIELDS = ("state", "result", "error", "cancelReason", "expireAt")
_IO_ERRORS = (ReplyError, ConnectionError, OSError, asyncio.TimeoutError)

Key = tuple[str, str]


class ResultWaiter:
    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self._subscriber: Subscriber | None = None
        self._channels: dict[str, str] = {}  # channel -> task
        self._since: dict[str, int] = {}  # task -> server ms when its subscription was live
        self._last_entry: dict[str, str] = {}  # task -> last done-stream entry seen
        self._last_wait: dict[str, float] = {}
        self._pending: dict[Key, list[asyncio.Future[Terminal]]] = {}
        self._registered: dict[Key, float] = {}
        self._created: dict[Key, int] = {}  # server ms of the job's creation, when known
        self._recent: OrderedDict[Key, Terminal] = OrderedDict()
        self._sweeper: asyncio.Task[None] | None = None
        self._checks: list[Key] = []
        self._checks_done: asyncio.Future[None] | None = None
        self._fetching: set[asyncio.Task[None]] = set()

    # -- public -------------------------------------------------------------------------
    async def wait(
        self, task: str, job_id: str, timeout: float | None, event_id: str | None
    ) -> Terminal | None:
        key = (task, job_id)
        hit = self._recent.get(key)
        if hit is not None and (hit.state != "completed" or hit.result is not None):
            return hit
        future: asyncio.Future[Terminal] = asyncio.get_running_loop().create_future()
        now = time.monotonic()
        futures = self._pending.get(key)
        if futures is None:
            self._pending[key] = [future]
            self._registered[key] = now
        else:
            futures.append(future)
        created = None if event_id is None else _ms(event_id)
        if created is not None:
            self._created.setdefault(key, created)
        self._last_wait[task] = now
        try:
            since = self._since.get(task)
            if hit is not None or since is None or created is None or created <= since:
                await self._check(task, job_id)
            sweeper = self._sweeper
            if sweeper is None or sweeper.done():
                self._sweeper = asyncio.create_task(self._sweep_loop(), name="taskora-sweeper")
            if timeout is None:
                return await future
            if not future.done():
                await asyncio.wait_for(asyncio.shield(future), timeout)
            return future.result()
        except TimeoutError:
            return None
        finally:
            self._forget(key, future)

    def forget(self, task: str, job_id: str) -> None:
        """The job starts over (a dead letter retried here): drop its cached end."""
        self._recent.pop((task, job_id), None)

    async def close(self) -> None:
        for task in (self._sweeper, *self._fetching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._sweeper = None
        if self._subscriber is not None:
            await self._subscriber.close()
            self._subscriber = None
        for futures in self._pending.values():
            for future in futures:
                if not future.done():
                    future.set_exception(BackendError("the backend was closed while waiting"))
        self._pending.clear()
        self._registered.clear()
        self._created.clear()
        self._channels.clear()
        self._since.clear()
        self._last_entry.clear()

    @property
    def round_trips(self) -> int:
        """Commands the reader sent on its own connection (none per result)."""
        return 0

    # -- bookkeeping --------------------------------------------------------------------
    def _forget(self, key: Key, future: asyncio.Future[Terminal]) -> None:
        futures = self._pending.get(key)
        if futures is None:
            return
        try:
            futures.remove(future)
        except ValueError:
            pass
        if not futures:
            del self._pending[key]
            self._registered.pop(key, None)
            self._created.pop(key, None)

    def _remember(self, key: Key, terminal: Terminal) -> None:
        self._recent[key] = terminal
        if len(self._recent) > RECENT_MAX:
            self._recent.popitem(last=False)

    def _resolve(self, key: Key, terminal: Terminal) -> None:
        if terminal.state != "missing":
            recent = self._recent
            recent[key] = terminal
            if len(recent) > RECENT_MAX:
                recent.popitem(last=False)
        futures = self._pending.get(key)
        if futures is not None:
            for future in futures:
                if not future.done():
                    future.set_result(terminal)

    # -- messages -------------------------------------------------------------------------
    def _on_message(self, channel: str, data: bytes) -> None:
        task = self._channels.get(channel)
        if task is None:
            return
        parts = data.split(b"\n", 3)  # entry id, job id, state[, detail (may hold newlines)]
        detail = parts.pop() if len(parts) == 4 else None
        entry, job, state = parts if len(parts) == 3 else (*parts, b"", b"")[:3]
        self._last_entry[task] = entry.decode()
        self._deliver(task, job.decode(), state.decode(), detail)

    def _deliver(self, task: str, job_id: str, state: str, detail: bytes | None) -> None:
        key = (task, job_id)
        if state == "completed" and detail is not None:  # the usual end: a small result
            self._resolve(key, Terminal(state, detail.decode("utf-8", "replace")))
            return
        if state == "waiting":  # it starts over (a dead letter retried): forget its old end
            self._recent.pop(key, None)
            return
        text = None if detail is None else detail.decode("utf-8", "replace")
        terminal = _terminal(state, text)
        if state == "completed" and text is None:  # a large result: fetch it if anyone waits
            self._remember(key, terminal)
            if key in self._pending:
                fetch = asyncio.ensure_future(self._fetch(key))
                self._fetching.add(fetch)
                fetch.add_done_callback(self._fetching.discard)
            return
        self._resolve(key, terminal)

    def _on_reconnect(self) -> None:
        """Messages may have been lost: replay the streams, trust no creation time for now."""
        self._since.clear()
        replay = asyncio.ensure_future(self._replay())
        self._fetching.add(replay)
        replay.add_done_callback(self._fetching.discard)

    async def _replay(self) -> None:
        backend = self._backend
        for task, last in list(self._last_entry.items()):
            while True:
                try:
                    entries = await backend.client.execute(
                        "XRANGE", backend.keys(task).done, f"({last}", "+", "COUNT", 1000
                    )
                except _IO_ERRORS:
                    self._age_all()  # the sweep will look at every waiter now
                    return
                for entry_id, flat in entries:
                    fields = dict(zip(flat[::2], flat[1::2], strict=False))
                    last = entry_id.decode()
                    self._last_entry[task] = last
                    job, state = fields.get(b"jobId"), fields.get(b"state")
                    if job is not None and state is not None:
                        self._deliver(task, job.decode(), state.decode(), fields.get(b"detail"))
                if len(entries) < 1000:
                    break

    def _age_all(self) -> None:
        for key in self._registered:
            self._registered[key] = 0.0

    async def _fetch(self, key: Key) -> None:
        backend = self._backend
        with contextlib.suppress(*_IO_ERRORS):  # the sweep catches what this misses
            result = await backend.client.execute(
                "HGET", backend.keys(key[0]).job(key[1]), "result"
            )
            if isinstance(result, bytes):
                self._resolve(key, Terminal("completed", result=result.decode()))

    # -- state checks ---------------------------------------------------------------------
    async def _check(self, task: str, job_id: str) -> None:
        """Queue a state check; checks requested together go out as one pipeline."""
        loop = asyncio.get_running_loop()
        if self._checks_done is None or self._checks_done.done():
            self._checks_done = loop.create_future()
            loop.call_soon(self._start_checks)
        self._checks.append((task, job_id))
        await self._checks_done

    def _start_checks(self) -> None:
        batch, self._checks = self._checks, []
        done, self._checks_done = self._checks_done, None
        runner = asyncio.ensure_future(self._run_checks(batch))
        runner.add_done_callback(lambda r: _settle_future(done, r))

    async def _run_checks(self, batch: list[Key]) -> None:
        backend = self._backend
        for task in sorted({task for task, _ in batch}):
            channel = backend.keys(task).done
            if channel not in self._channels:
                self._channels[channel] = task
                if self._subscriber is None:
                    self._subscriber = backend._new_subscriber(
                        "results", self._on_message, self._on_reconnect
                    )
                with backend.errors():
                    await self._subscriber.subscribe(channel)
        commands: list[tuple[Any, ...]] = [("TIME",)]
        commands += [("HMGET", backend.keys(t).job(j), *_FIELDS) for t, j in batch]
        with backend.errors():
            replies = await backend.client.pipeline(commands)
        now = replies[0]
        if not isinstance(now, Exception):
            server_ms = int(now[0]) * 1000 + int(now[1]) // 1000
            for task in {task for task, _ in batch}:
                self._since.setdefault(task, server_ms)
                self._last_entry.setdefault(task, f"{server_ms}-0")
        await self._settle(batch, replies[1:])

    async def _settle(self, keys: list[Key], rows: list[Any]) -> None:
        """Resolve waiters whose job has ended; end jobs whose ttl passed unclaimed."""
        now = self._backend.now_ms()
        due: dict[str, list[str]] = {}
        gone: dict[str, list[str]] = {}
        for key, reply in zip(keys, rows, strict=True):
            terminal = _from_fields(reply)
            if terminal is not None and terminal.state == "missing":
                gone.setdefault(key[0], []).append(key[1])
            elif terminal is not None:
                self._resolve(key, terminal)
            elif _expire_at(reply) <= now:
                due.setdefault(key[0], []).append(key[1])
        for task, ids in gone.items():
            await self._from_stream(task, ids)
        for task, ids in due.items():
            expired = await self._backend.expire_due(task, ids)
            for job_id in expired:
                self._resolve((task, job_id), Terminal("expired"))

    async def _from_stream(self, task: str, ids: list[str]) -> None:
        """Jobs with no hash: their end may still be in the done stream (trimmed by retention
        before this waiter looked); only a job the stream does not know is missing."""
        backend = self._backend
        starts = [self._created.get((task, job_id)) for job_id in ids]
        known = [ms for ms in starts if ms is not None]
        start = f"{min(known)}-0" if len(known) == len(starts) else "-"  # its end came later
        keys = backend.keys(task)
        with backend.errors():
            found = await FindEnds(keys, start, ids).run(backend.client)
        ends: dict[str, Terminal] = {}
        for job, state, text in found:
            if state == "completed" and text is None:  # a large result went with its job
                ends[job] = Terminal(
                    "missing", reason="completed, but its large result was trimmed"
                )
            elif state != "waiting":  # "waiting": it started over, and is gone since
                ends[job] = _terminal(state, text)
        for job_id in ids:
            self._resolve(
                (task, job_id), ends.get(job_id) or Terminal("missing", reason="no such job")
            )

    async def _sweep_loop(self) -> None:
        while self._pending:
            await asyncio.sleep(SWEEP_EVERY_S)
            cutoff = time.monotonic() - SWEEP_EVERY_S
            due = [key for key, since in self._registered.items() if since <= cutoff]
            for start in range(0, len(due), SWEEP_CHUNK):
                try:
                    await self._sweep(due[start : start + SWEEP_CHUNK])
                except (BackendError, *_IO_ERRORS):
                    break
        await self._unwatch_idle()

    async def _sweep(self, keys: list[Key]) -> None:
        backend = self._backend
        commands = [("HMGET", backend.keys(task).job(job_id), *_FIELDS) for task, job_id in keys]
        with backend.errors():
            replies = await backend.client.pipeline(commands)
        await self._settle(keys, replies)

    async def _unwatch_idle(self) -> None:
        """Tasks nobody has waited on for a while: stop receiving their results."""
        limit = time.monotonic() - IDLE_UNWATCH_S
        for channel, task in list(self._channels.items()):
            if self._last_wait.get(task, 0.0) < limit and self._subscriber is not None:
                del self._channels[channel]
                self._since.pop(task, None)
                self._last_entry.pop(task, None)
                with contextlib.suppress(*_IO_ERRORS):
                    await self._subscriber.unsubscribe(channel)


def _settle_future(done: asyncio.Future[None] | None, runner: asyncio.Future[None]) -> None:
    if done is None or done.done():
        return
    if runner.cancelled():
        done.cancel()
    elif runner.exception() is not None:
        done.set_exception(runner.exception())  # type: ignore[arg-type]
    else:
        done.set_result(None)


def _terminal(state: str, detail: str | None) -> Terminal:
    if state == "completed":
        return Terminal("completed", result=detail)
    if state == "failed":
        return Terminal("failed", error=detail or None)
    if state == "cancelled":
        return Terminal("cancelled", reason=detail or None)
    if state == "expired":
        return Terminal("expired")
    return Terminal("missing", reason=detail or state)


def _from_fields(reply: Any) -> Terminal | None:
    """Terminal from an HMGET of _FIELDS: 'missing' if there is no job, None if running."""
    if isinstance(reply, Exception):
        return None
    state, result, error, reason = (
        None if v is None else v.decode("utf-8", "replace") for v in reply[:4]
    )
    if state is None:
        return Terminal("missing", reason="no such job")
    if state not in _TERMINAL_STATES:
        return None
    return Terminal(state, result=result, error=error, reason=reason or None)


def _expire_at(reply: Any) -> float:
    """The stored expireAt of an HMGET row (infinity when none or unreadable)."""
    if isinstance(reply, Exception) or reply[4] is None:
        return float("inf")
    try:
        return float(reply[4])
    except ValueError:
        return float("inf")


def _ms(stream_id: str) -> int:
    try:
        return int(stream_id.partition("-")[0])
    except ValueError:
        return 0
