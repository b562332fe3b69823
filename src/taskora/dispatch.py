"""Coalescing of concurrent dispatches into one backend round trip.

``dispatch()`` must return at once, so the enqueue itself happens in the background. Every
plain job submitted while a previous batch is on the wire joins the next batch, which the
backend sends as one round trip: a sequential ``await dispatch()`` costs exactly one round
trip, and a burst of a thousand costs a handful. Batches go out one at a time, so jobs from
one process reach the backend in dispatch order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .backends.base import Backend, EnqueueResult, Flow, NewJob

__all__ = ["Enqueuer"]

_Item = tuple[str, NewJob, asyncio.Future[EnqueueResult]]


class Enqueuer:
    """Per-loop batcher in front of ``Backend.enqueue``."""

    def __init__(self, backend: Callable[[], Awaitable[Backend]]) -> None:
        self._backend = backend
        self._pending: list[_Item] = []
        self._running = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def submit(self, task: str, job: NewJob, flow: Flow | None) -> asyncio.Future[EnqueueResult]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[EnqueueResult] = loop.create_future()
        if flow is not None:
            self._spawn(self._send_flow(task, job, flow, future))
            return future
        self._pending.append((task, job, future))
        if not self._running:
            self._running = True
            self._spawn(self._drain())
        return future

    def _spawn(self, coro: Any) -> None:
        runner = asyncio.ensure_future(coro)
        self._tasks.add(runner)
        runner.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._send(batch)
        finally:
            self._running = False

    async def _send(self, batch: list[_Item]) -> None:
        try:
            backend = await self._backend()
            by_task: dict[str, list[_Item]] = {}
            for item in batch:
                by_task.setdefault(item[0], []).append(item)
            groups = list(by_task.items())
            replies: list[Any]
            if len(groups) == 1:  # the common case: no extra task, no extra loop iteration
                task, items = groups[0]
                try:
                    replies = [await backend.enqueue(task, [item[1] for item in items])]
                except Exception as exc:
                    replies = [exc]
            else:
                replies = await asyncio.gather(
                    *(backend.enqueue(task, [item[1] for item in items]) for task, items in groups),
                    return_exceptions=True,
                )
        except BaseException as exc:  # connect failed, or this task was cancelled
            _fail(batch, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, items), reply in zip(groups, replies, strict=True):
            if isinstance(reply, BaseException):
                _fail(items, reply)
                continue
            for item, result in zip(items, reply, strict=True):
                if not item[2].done():
                    item[2].set_result(result)

    async def _send_flow(
        self, task: str, job: NewJob, flow: Flow, future: asyncio.Future[EnqueueResult]
    ) -> None:
        try:
            backend = await self._backend()
            result = await backend.enqueue_flow(task, job, flow)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if not future.done():
            future.set_result(result)

    async def drain(self) -> None:
        """Wait until every submitted job has been sent (used by ``App.close``)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _fail(items: list[_Item], exc: BaseException) -> None:
    for _, _, future in items:
        if not future.done():
            future.set_exception(exc)
