"""Coalescing of dispatches into backend round trips.

``dispatch()`` must return at once, so the enqueue happens in the background: the job joins
a batch that is flushed on the next turn of the event loop. Everything dispatched in the same
turn shares one round trip (a burst of a thousand costs one call), and a batch is written
to the connection straight from the flush callback, without creating a task, when the
backend is connected (``Backend.enqueue_now``); its reply settles the handles' futures
from the connection's reader, with no future or loop turn of its own. Jobs from one
process reach the backend in dispatch order: batches are written in order to one
connection. A batch whose fast send failed (a lost connection, a flushed script cache) is
sent again by the ordinary, retrying path; enqueue is idempotent by job id, so nothing is
created twice. Collect items are
batched the same way (``Backend.collect_push``: one round trip per task per turn, in
dispatch order; docs/design.md#collect).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from .backends.base import Backend, EnqueueResult, Flow, NewJob

__all__ = ["Enqueuer"]

_Item = tuple[str, NewJob, asyncio.Future[EnqueueResult]]


class Enqueuer:
    """Per-loop batcher in front of ``Backend.enqueue``."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Backend]],
        connected: Callable[[], Backend | None],
    ) -> None:
        self._connect = connect
        self._connected = connected
        self._pending: list[_Item] = []
        self._collect: list[tuple[str, NewJob, Flow, asyncio.Future[EnqueueResult]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Future[Any]] = set()
        self._inflight = 0  # fast sends whose reply has not come yet
        self._idle: asyncio.Future[None] | None = None  # what drain waits on for them

    def submit(
        self,
        task: str,
        job: NewJob,
        flow: Flow | None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> asyncio.Future[EnqueueResult]:
        if loop is None:
            loop = asyncio.get_running_loop()
        future: asyncio.Future[EnqueueResult] = loop.create_future()
        if flow is None:
            self._pending.append((task, job, future))
        elif flow.kind == "collect":
            self._collect.append((task, job, flow, future))
        else:
            self._track(asyncio.ensure_future(self._send_flow(task, job, flow, future)))
            return future
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _track(self, future: asyncio.Future[Any]) -> None:
        self._tasks.add(future)
        future.add_done_callback(self._tasks.discard)

    def _flush(self) -> None:
        self._scheduled = False
        if self._collect:
            collect, self._collect = self._collect, []
            per_task: dict[str, list[tuple[NewJob, Flow, asyncio.Future[EnqueueResult]]]] = {}
            for task, job, flow, future in collect:
                per_task.setdefault(task, []).append((job, flow, future))
            for task, entries in per_task.items():
                self._track(asyncio.ensure_future(self._send_collect(task, entries)))
        batch, self._pending = self._pending, []
        if not batch:
            return
        backend = self._connected()
        task = batch[0][0]
        if len(batch) == 1 or all(item[0] == task for item in batch):  # one task: no grouping
            self._send_now(backend, task, batch)
            return
        by_task: dict[str, list[_Item]] = {}
        for item in batch:
            by_task.setdefault(item[0], []).append(item)
        for task, items in by_task.items():
            self._send_now(backend, task, items)

    def _send_now(self, backend: Backend | None, task: str, items: list[_Item]) -> None:
        """Write the batch at once; its reply settles the handles' futures straight from
        the connection's reader (no task, no future of its own, no extra loop turn)."""
        if backend is not None:
            self._inflight += 1
            settle = functools.partial(self._settle, task, items)
            if backend.enqueue_now(task, [item[1] for item in items], settle):
                return
            self._inflight -= 1
        self._track(asyncio.ensure_future(self._send(task, items)))

    def _settle(
        self, task: str, items: list[_Item], results: list[EnqueueResult] | BaseException
    ) -> None:
        self._inflight -= 1
        if isinstance(results, BaseException):
            self._track(asyncio.ensure_future(self._send(task, items)))  # the retrying path
        else:
            for (_, _, future), result in zip(items, results, strict=True):
                if not future.done():
                    future.set_result(result)
        if not self._inflight and self._idle is not None:
            idle, self._idle = self._idle, None
            if not idle.done():
                idle.set_result(None)

    async def _send(self, task: str, items: list[_Item]) -> None:
        try:
            backend = await self._connect()
            results = await backend.enqueue(task, [item[1] for item in items])
        except BaseException as exc:  # connect failed, Redis refused, or we were cancelled
            for _, _, future in items:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, _, future), result in zip(items, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _send_flow(
        self, task: str, job: NewJob, flow: Flow, future: asyncio.Future[EnqueueResult]
    ) -> None:
        try:
            backend = await self._connect()
            result = await backend.enqueue_flow(task, job, flow)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if not future.done():
            future.set_result(result)

    async def _send_collect(
        self, task: str, entries: list[tuple[NewJob, Flow, asyncio.Future[EnqueueResult]]]
    ) -> None:
        try:
            backend = await self._connect()
            results = await backend.collect_push(task, [(job, flow) for job, flow, _ in entries])
        except BaseException as exc:
            for _, _, future in entries:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, _, future), result in zip(entries, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def drain(self) -> None:
        """Wait until every submitted job has been sent (used by ``App.close``)."""
        if self._scheduled:
            self._flush()
        while self._tasks or self._inflight:
            if self._inflight:  # fast sends waiting for their reply (a failed one is retried
                if self._idle is None:  # by a task: the loop goes round for it)
                    self._idle = asyncio.get_running_loop().create_future()
                await asyncio.shield(self._idle)
                continue
            sending = list(self._tasks)
            await asyncio.gather(*sending, return_exceptions=True)
            # their own discard callbacks may not have run yet: on 3.12 gather of futures
            # already done returns without a loop turn, and this loop would spin forever
            self._tasks.difference_update(sending)
