"""taskora adapter, written against the public API (``taskora.__all__``) only."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import taskora
from libs import common
from libs.common import PAYLOAD, TASK_NAME


def make_app(url: str, concurrency: int = 1) -> tuple[Any, Any]:
    # the harness sets TASKORA_BENCH_PREFETCH=0 for "process c=1 strict" (no claim-ahead)
    prefetch = os.environ.get("TASKORA_BENCH_PREFETCH")
    app = taskora.App(url) if prefetch is None else taskora.App(url, prefetch=int(prefetch))

    @app.task(TASK_NAME, concurrency=concurrency)
    async def noop(data: dict) -> None:
        common.DRAIN.hit()

    return app, noop


class Producer(common.Producer):
    async def open(self) -> None:
        self.app, self.task = make_app(self.url)

    async def close(self) -> None:
        await self.app.close()

    async def enqueue(self) -> None:
        await self.task.dispatch(PAYLOAD)

    async def enqueue_batch(self, size: int) -> None:
        for handle in self.task.dispatch_many([{"data": PAYLOAD} for _ in range(size)]):
            await handle

    async def round_trip(self) -> None:
        await self.task.dispatch(PAYLOAD).result


async def run_worker(url: str, concurrency: int, results: bool) -> None:
    app, _ = make_app(url, concurrency)
    common.DRAIN.start()
    async with app:  # connects and starts the worker for every task with a handler here
        await asyncio.Event().wait()


if __name__ == "__main__":
    common.main(Producer, run_worker)
