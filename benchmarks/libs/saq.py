"""SAQ adapter (asyncio; Redis queue; job updates pushed over one shared pub/sub per process).

Round trip: SAQ's `apply()` polls every 0.5 s, and `job.refresh(until_complete=)` subscribes only
after reading the job (a completion in between is missed). So the waiter subscribes with the public
`queue.listen()` before enqueueing, while a long-lived listen keeps SAQ's pub/sub multiplexer up.
"""

from __future__ import annotations

import asyncio
import contextlib

from saq import Job, Queue, Worker
from saq.job import TERMINAL_STATUSES

from libs import common
from libs.common import PAYLOAD, QUEUE_NAME, TASK_NAME


class Producer(common.Producer):
    no_bulk_reason = "no bulk API (map/batch enqueue one by one)"

    async def open(self) -> None:
        self.queue = Queue.from_url(self.url, name=QUEUE_NAME)
        await self.queue.connect()
        self._keepalive: asyncio.Task | None = None
        if self.results:
            self._keepalive = asyncio.create_task(
                self.queue.listen(["bench-keepalive"], lambda *_: False, timeout=None)
            )
            await asyncio.sleep(0.2)  # untimed: let the multiplexer's PSUBSCRIBE land

    async def close(self) -> None:
        if self._keepalive:
            self._keepalive.cancel()
            with contextlib.suppress(BaseException):
                await self._keepalive
        await self.queue.disconnect()

    async def enqueue(self) -> None:
        await self.queue.enqueue(TASK_NAME, **PAYLOAD)

    async def round_trip(self) -> None:
        job = Job(function=TASK_NAME, kwargs=dict(PAYLOAD))
        waiter = asyncio.create_task(
            self.queue.listen(
                [job.key], lambda _key, status: status in TERMINAL_STATUSES, timeout=30
            )
        )
        await asyncio.sleep(0)  # the waiter registers its subscription
        await self.queue.enqueue(job)
        await waiter


async def noop(ctx: dict, **kwargs: str) -> None:
    common.DRAIN.hit()


async def run_worker(url: str, concurrency: int, results: bool) -> None:
    queue = Queue.from_url(url, name=QUEUE_NAME)
    worker = Worker(queue, functions=[(TASK_NAME, noop)], concurrency=concurrency)
    common.DRAIN.start()
    await worker.start()


if __name__ == "__main__":
    common.main(Producer, run_worker)
