"""The shared result reader: one XREAD connection serves every waiting handle in a process.

Terminal events (``completed``, ``failed``, ``cancelled``, ``expired``, ``debounced``) are
read from each watched task's event stream and resolve the matching waiters; small results
travel inside the ``completed`` event, so most results cost no extra round trip.

Correctness without polling each job:
- When a task's stream is first watched, its last entry id is read in the same pipeline as
  the job's state, so an end that happened earlier shows in the state and one that happens
  later shows in the stream.
- A job this process enqueued carries its creation event id; if the stream was already
  watched from before that id, the reader is guaranteed to see the job end, and the state
  check is skipped (a finished job read before the waiter registered sits in ``_recent``).
- A sweep re-checks, in one pipeline, the state of every waiter older than a few seconds:
  that catches what no event announces (trimmed jobs, data lost with a Redis restart, an
  event stream that was trimmed while the reader was away), so nothing waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ...errors import BackendError
from ..base import Terminal
from .resp import ReplyError, RespClient

if TYPE_CHECKING:
    from .backend import RedisBackend

_IO_ERRORS = (ReplyError, ConnectionError, OSError, asyncio.TimeoutError)

__all__ = ["ResultWaiter"]

RECENT_MAX = 20_000
SWEEP_EVERY_S = 2.0
SWEEP_CHUNK = 2_000
READ_BLOCK_MS = 5_000
IDLE_UNWATCH_S = 30.0
_TERMINAL_STATES = {"completed", "failed", "cancelled", "expired"}
_FIELDS = ("state", "result", "error", "cancelReason", "expireAt")

Key = tuple[str, str]


class ResultWaiter:
    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend
        self._cursors: dict[str, str] = {}
        self._since: dict[str, tuple[int, int]] = {}
        self._pending: dict[Key, list[asyncio.Future[Terminal]]] = {}
        self._registered: dict[Key, float] = {}
        self._recent: OrderedDict[Key, Terminal] = OrderedDict()
        self._reader: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._reader_conn: RespClient | None = None
        self._past_reads = 0
        self._checks: list[Key] = []
        self._checks_done: asyncio.Future[None] | None = None

    # -- public -------------------------------------------------------------------------
    async def wait(
        self, task: str, job_id: str, timeout: float | None, event_id: str | None
    ) -> Terminal | None:
        key = (task, job_id)
        hit = self._recent.get(key)
        if hit is not None and (hit.state != "completed" or hit.result is not None):
            return hit
        future: asyncio.Future[Terminal] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(future)
        self._registered.setdefault(key, time.monotonic())
        try:
            # The job was created (event_id, on the events stream) strictly after the last
            # ms the done stream had reached when reading began: its end is still ahead of
            # the reader. Sequence numbers of two streams do not compare, hence the ms.
            since = self._since.get(task)
            if (
                hit is not None
                or since is None
                or event_id is None
                or _sid(event_id)[0] <= since[0]
            ):
                await self._check(task, job_id)
            self._ensure_running()
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
        for task in (self._reader, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._reader = self._sweeper = None
        for futures in self._pending.values():
            for future in futures:
                if not future.done():
                    future.set_exception(BackendError("the backend was closed while waiting"))
        self._pending.clear()
        self._registered.clear()
        self._cursors.clear()

    # -- bookkeeping --------------------------------------------------------------------
    def _forget(self, key: Key, future: asyncio.Future[Terminal]) -> None:
        futures = self._pending.get(key)
        if futures is None:
            return
        with contextlib.suppress(ValueError):
            futures.remove(future)
        if not futures:
            del self._pending[key]
            self._registered.pop(key, None)

    def _remember(self, key: Key, terminal: Terminal) -> None:
        self._recent[key] = terminal
        if len(self._recent) > RECENT_MAX:
            self._recent.popitem(last=False)

    def _resolve(self, key: Key, terminal: Terminal) -> None:
        if terminal.state != "missing":
            self._remember(key, terminal)
        for future in self._pending.get(key, ()):
            if not future.done():
                future.set_result(terminal)

    def _ensure_running(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_loop(), name="taskora-result-reader")
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="taskora-result-sweeper")

    def _restart_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
        self._reader = asyncio.create_task(self._read_loop(), name="taskora-result-reader")

    # -- state checks ---------------------------------------------------------------------
    async def _check(self, task: str, job_id: str) -> None:
        """Queue a state check; checks requested together go out as one pipeline."""
        if self._checks_done is None or self._checks_done.done():
            self._checks_done = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._start_checks)
        self._checks.append((task, job_id))
        done = self._checks_done
        await done

    def _start_checks(self) -> None:
        batch, self._checks = self._checks, []
        done, self._checks_done = self._checks_done, None
        runner = asyncio.ensure_future(self._run_checks(batch))
        runner.add_done_callback(lambda r: _settle(done, r))

    async def _run_checks(self, batch: list[Key]) -> None:
        backend = self._backend
        new_tasks = sorted({task for task, _ in batch if task not in self._cursors})
        commands: list[tuple[Any, ...]] = [
            ("XREVRANGE", backend.keys(task).done, "+", "-", "COUNT", 1) for task in new_tasks
        ]
        commands += [("HMGET", backend.keys(task).job(job_id), *_FIELDS) for task, job_id in batch]
        with backend.errors():
            replies = await backend.client.pipeline(commands)
        for task, last in zip(new_tasks, replies, strict=False):
            if task not in self._cursors:
                cursor = "0-0" if isinstance(last, Exception) or not last else last[0][0].decode()
                self._cursors[task] = cursor
                self._since[task] = _sid(cursor)
        if new_tasks:
            self._restart_reader()
        await self._settle(batch, replies[len(new_tasks) :])

    async def _settle(self, keys: list[Key], rows: list[Any]) -> None:
        """Resolve waiters whose job has ended; end jobs whose ttl passed unclaimed."""
        now = self._backend.now_ms()
        due: dict[str, list[str]] = {}
        for key, reply in zip(keys, rows, strict=True):
            terminal = _from_fields(reply)
            if terminal is not None:
                self._resolve(key, terminal)
            elif _expire_at(reply) <= now:
                due.setdefault(key[0], []).append(key[1])
        for task, ids in due.items():
            expired = await self._backend.expire_due(task, ids)
            for job_id in expired:
                self._resolve((task, job_id), Terminal("expired"))

    async def _sweep_loop(self) -> None:
        while self._pending:
            await asyncio.sleep(SWEEP_EVERY_S)
            cutoff = time.monotonic() - SWEEP_EVERY_S
            due = [key for key, since in self._registered.items() if since <= cutoff]
            for start in range(0, len(due), SWEEP_CHUNK):
                chunk = due[start : start + SWEEP_CHUNK]
                try:
                    await self._sweep(chunk)
                except (BackendError, *_IO_ERRORS):
                    break

    async def _sweep(self, keys: list[Key]) -> None:
        backend = self._backend
        commands = [("HMGET", backend.keys(task).job(job_id), *_FIELDS) for task, job_id in keys]
        with backend.errors():
            replies = await backend.client.pipeline(commands)
        await self._settle(keys, replies)

    # -- the stream reader -------------------------------------------------------------------
    async def _read_loop(self) -> None:
        conn: RespClient = self._backend._new_client("waiter", blocking=True)
        self._reader_conn = conn
        backoff = 0.05
        idle_since = time.monotonic()
        try:
            while self._cursors:
                if self._pending:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > IDLE_UNWATCH_S:
                    self._cursors.clear()  # nobody waits: stop reading; a later wait re-checks
                    self._since.clear()
                    return
                tasks = list(self._cursors)
                streams = [self._backend.keys(t).done for t in tasks]
                cursors = [self._cursors[t] for t in tasks]
                try:
                    reply = await conn.execute(
                        "XREAD",
                        "COUNT",
                        1000,
                        "BLOCK",
                        READ_BLOCK_MS,
                        "STREAMS",
                        *streams,
                        *cursors,
                    )
                except _IO_ERRORS:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    self._age_all()  # events may have been missed: let the sweep look now
                    continue
                backoff = 0.05
                if reply:
                    await self._deliver(reply)
        finally:
            self._past_reads += conn.round_trips
            self._reader_conn = None
            await conn.close()

    @property
    def round_trips(self) -> int:
        """XREAD calls made by the stream reader(s) so far."""
        current = self._reader_conn.round_trips if self._reader_conn is not None else 0
        return self._past_reads + current

    def _age_all(self) -> None:
        for key in self._registered:
            self._registered[key] = 0.0

    async def _deliver(self, reply: Any) -> None:
        fetch: list[tuple[Key, str]] = []
        by_stream = {self._backend.keys(t).done: t for t in self._cursors}
        for stream, entries in _items(reply):
            task = by_stream.get(stream.decode())
            if task is None:
                continue
            for entry_id, fields in entries:
                self._cursors[task] = entry_id.decode()
                if fields.get(b"state") == b"waiting":  # it starts over (a dead letter retried)
                    self._recent.pop((task, _str(fields.get(b"jobId"))), None)
                    continue
                found = _from_done(fields)
                if found is None:
                    continue
                job_id, terminal = found
                key = (task, job_id)
                if terminal.state == "completed" and terminal.result is None:
                    self._remember(key, terminal)  # a later waiter fetches the result itself
                    if key in self._pending:
                        fetch.append((key, job_id))
                    continue
                self._resolve(key, terminal)
        if fetch:
            backend = self._backend
            commands = [
                ("HGET", backend.keys(task).job(job_id), "result") for (task, _), job_id in fetch
            ]
            try:
                results = await backend.client.pipeline(commands)
            except _IO_ERRORS:
                return  # the sweep will pick these up
            for (key, _), result in zip(fetch, results, strict=True):
                if isinstance(result, bytes):
                    self._resolve(key, Terminal("completed", result=result.decode()))


def _settle(done: asyncio.Future[None] | None, runner: asyncio.Future[None]) -> None:
    if done is None or done.done():
        return
    if runner.cancelled():
        done.cancel()
    elif runner.exception() is not None:
        done.set_exception(runner.exception())  # type: ignore[arg-type]
    else:
        done.set_result(None)


def _items(reply: Any) -> list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]:
    """XREAD reply -> [(stream, [(entry id, {field: value})])]."""
    out = []
    for stream, entries in reply:
        rows = []
        for entry_id, flat in entries:
            rows.append((entry_id, dict(zip(flat[::2], flat[1::2], strict=True))))
        out.append((stream, rows))
    return out


def _from_done(fields: dict[bytes, bytes]) -> tuple[str, Terminal] | None:
    """An entry of a task's ``done`` stream: jobId, state, and result/error/reason."""
    job, state = fields.get(b"jobId"), fields.get(b"state")
    if job is None or state is None:
        return None
    text = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
    kind = text["state"]
    if kind == "completed":
        return text["jobId"], Terminal("completed", result=text.get("result"))
    if kind == "failed":
        return text["jobId"], Terminal("failed", error=text.get("error") or None)
    if kind == "cancelled":
        return text["jobId"], Terminal("cancelled", reason=text.get("reason") or None)
    if kind == "expired":
        return text["jobId"], Terminal("expired")
    detail = text.get("reason") or kind
    return text["jobId"], Terminal("missing", reason=detail)


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


def _str(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw is not None else ""


def _expire_at(reply: Any) -> float:
    """The stored expireAt of an HMGET row (infinity when none or unreadable)."""
    if isinstance(reply, Exception) or reply[4] is None:
        return float("inf")
    try:
        return float(reply[4])
    except ValueError:
        return float("inf")


def _sid(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return (0, 0)
