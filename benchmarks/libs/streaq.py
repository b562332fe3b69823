"""streaq adapter (anyio on asyncio; Redis streams; coredis client). Producers use the same `Worker`
object as a client (`async with worker:`), as streaq documents. Defaults throughout."""

from __future__ import annotations

from typing import Any

from streaq import Worker

from libs import common
from libs.common import PAYLOAD, QUEUE_NAME, TASK_NAME


def make_worker(url: str, concurrency: int = 16) -> tuple[Worker, Any]:
    worker = Worker(redis_url=url, queue_name=QUEUE_NAME, concurrency=concurrency)

    @worker.task(name=TASK_NAME)
    async def noop(payload: dict) -> None:
        common.DRAIN.hit()

    return worker, noop


class Producer(common.Producer):
    async def open(self) -> None:
        self.worker, self.task = make_worker(self.url)
        self._ctx = self.worker.__aenter__
        await self.worker.__aenter__()

    async def close(self) -> None:
        await self.worker.__aexit__(None, None, None)

    async def enqueue(self) -> None:
        await self.task.enqueue(PAYLOAD)

    async def enqueue_batch(self, size: int) -> None:
        await self.worker.enqueue_many([self.task.enqueue(PAYLOAD) for _ in range(size)])

    async def round_trip(self) -> None:
        handle = await self.task.enqueue(PAYLOAD)
        result = await handle.result(timeout=30)
        if not result.success:
            raise RuntimeError(f"streaq task failed: {result.exception!r}")


async def run_worker(url: str, concurrency: int, results: bool) -> None:
    worker, _ = make_worker(url, concurrency)
    common.DRAIN.start()
    await worker.run_async()


if __name__ == "__main__":
    common.main(Producer, run_worker)
