"""The events reader: one blocking ``XREAD`` over the events streams of every watched task.

One reader (and one connection) per process, whatever the number of listeners and tasks.
Per read: one ``XREAD BLOCK`` for all streams, plus, only when the batch holds entries that
lack payload data (``completed``: result, attempt, times; ``failed``/``active``: attempt),
one pipeline of ``HMGET`` on the main connection for the whole batch. Nothing is added to
the producers' or workers' hot paths.

Cursors: a task's stream is read from its last entry when it became watched: ``watch()``
writes ``XREVRANGE … COUNT 1`` on the main connection at once, ahead of anything this
process sends after ``on()`` returns (a dispatch right after it is heard; no history is
replayed; no clock is trusted), then from the last entry handed to the listeners. A
cursor advances only after its batch was delivered: after a lost connection (``CLIENT
KILL``, a Redis restart) or a failed enrichment the same entries are read again, so
nothing is lost and nothing is delivered twice, within the stream's retention
(``MAXLEN ~ 10000``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ...errors import BackendError
from ..base import Deliver, Fields, needed_fields
from .resp import ReplyError, RespClient

if TYPE_CHECKING:
    from .backend import RedisBackend

__all__ = ["EventsReader"]

BLOCK_MS = 5000
BATCH = 500
_IO_ERRORS = (ReplyError, ConnectionError, OSError, asyncio.TimeoutError)


class EventsReader:
    def __init__(
        self,
        backend: RedisBackend,
        deliver: Deliver,
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._backend = backend
        self._deliver = deliver
        self._on_error = on_error
        self._cursors: dict[str, str] = {}  # task -> last entry delivered (or the start)
        self._snapshots: dict[str, asyncio.Future[Any]] = {}  # task -> its XREVRANGE reply
        self._conn: RespClient | None = None
        self._runner: asyncio.Task[None] | None = None
        self._read: asyncio.Future[Any] | None = None
        self.reads = 0  # XREAD calls (for tests and benchmarks)
        self.enrichments = 0  # HMGET pipelines

    def watch(self, tasks: Iterable[str]) -> None:
        wanted = set(tasks)
        changed = False
        for task in wanted - self._cursors.keys():
            self._cursors[task] = ""  # set from the snapshot before the next read
            self._snapshots[task] = self._snapshot(task)
            changed = True
        for task in self._cursors.keys() - wanted:
            del self._cursors[task]
            self._snapshots.pop(task, None)
            changed = True
        if not changed:
            return
        if self._runner is None or self._runner.done():
            if self._cursors:
                self._runner = asyncio.get_running_loop().create_task(
                    self._run(), name="taskora-events-reader"
                )
        elif self._read is not None and not self._read.done():
            self._interrupt()  # the blocked read names the old streams: read again

    def _snapshot(self, task: str) -> asyncio.Future[Any]:
        """The stream's last entry id, asked for now: written before any later command."""
        args = ("XREVRANGE", self._backend.keys(task).events, "+", "-", "COUNT", 1)
        client = self._backend._client
        sent = client.send_now(*args) if client is not None else None
        if sent is None:
            sent = asyncio.ensure_future(self._backend.client.execute(*args))
        sent.add_done_callback(_retrieved)
        return sent

    async def _start_cursors(self) -> None:
        for task, sent in list(self._snapshots.items()):
            try:
                reply = await sent
            except (BackendError, *_IO_ERRORS):
                self._snapshots[task] = self._snapshot(task)  # ask again (nothing read yet)
                raise
            if self._snapshots.get(task) is sent:
                del self._snapshots[task]
                self._cursors[task] = reply[0][0].decode() if reply else "0-0"

    def _interrupt(self) -> None:
        if self._read is not None:
            self._read.cancel()
        if self._conn is not None:
            self._conn.disconnect()  # a blocked command cannot be taken back

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        self._cursors.clear()
        self._snapshots.clear()
        if self._read is not None:
            self._read.cancel()
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(BaseException):
                await runner
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _run(self) -> None:
        backend = self._backend
        conn = self._conn = backend._new_client("events", blocking=True)
        delay = 0.1
        while self._cursors:
            if self._snapshots:
                try:
                    await self._start_cursors()
                except (BackendError, *_IO_ERRORS) as exc:
                    self._on_error(exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
            tasks = [t for t, cursor in self._cursors.items() if cursor]
            if not tasks:
                continue
            streams = [backend.keys(t).events for t in tasks]
            cursors = [self._cursors[t] for t in tasks]
            self.reads += 1
            self._read = asyncio.ensure_future(
                conn.execute(
                    "XREAD", "COUNT", BATCH, "BLOCK", BLOCK_MS, "STREAMS", *streams, *cursors
                )
            )
            self._read.add_done_callback(_retrieved)
            try:
                reply = await asyncio.shield(self._read)
                if reply:
                    await self._handle(dict(zip(streams, tasks, strict=True)), reply)
                delay = 0.1
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if me is not None and me.cancelling() == 0 and self._read.cancelled():
                    continue  # only the read was cancelled, by watch(): the streams changed
                raise
            except (BackendError, *_IO_ERRORS) as exc:
                self._on_error(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                self._read = None

    async def _handle(self, task_of: dict[str, str], reply: list[Any]) -> None:
        batches: list[tuple[str, str, list[tuple[Fields, Fields]]]] = []
        wants: list[tuple[dict[str, str], str, tuple[str, ...]]] = []
        for stream, entries in reply:
            task = task_of.get(stream.decode())
            if task is None or not entries:
                continue
            out: list[tuple[Fields, Fields]] = []
            for _entry_id, flat in entries:
                fields = {
                    k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
                    for k, v in zip(flat[::2], flat[1::2], strict=False)
                }
                job: dict[str, str] = {}
                need = needed_fields(fields)
                if need and "jobId" in fields:
                    wants.append((job, self._backend.keys(task).job(fields["jobId"]), need))
                out.append((fields, job))
            batches.append((task, entries[-1][0].decode(), out))
        if wants:
            self.enrichments += 1
            replies = await self._backend.client.pipeline(
                [("HMGET", key, *need) for _, key, need in wants]
            )
            for (job, _, need), row in zip(wants, replies, strict=True):
                if isinstance(row, Exception):
                    continue  # not a hash (malformed): the payload gets defaults
                for name, value in zip(need, row, strict=True):
                    if value is not None:
                        job[name] = value.decode("utf-8", "replace")
        for task, last, out in batches:
            if task not in self._cursors:
                continue  # unwatched meanwhile
            self._cursors[task] = last
            self._deliver(task, out)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # an error is handled where it is awaited; never "unretrieved"
