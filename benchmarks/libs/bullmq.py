"""bullmq (the Python port) adapter. The port has no `waitUntilFinished`; a round trip waits on its
`QueueEvents` stream for the job's `completed:<id>` event (listener registered before the add)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from bullmq import Queue, QueueEvents, Worker

from libs import common
from libs.common import PAYLOAD, QUEUE_NAME, TASK_NAME


class Producer(common.Producer):
    async def open(self) -> None:
        self.queue = Queue(QUEUE_NAME, {"connection": self.url})
        self.events: QueueEvents | None = None
        if self.results:
            self.events = QueueEvents(QUEUE_NAME, {"connection": self.url})
            await asyncio.sleep(0.2)  # untimed: let its first XREAD (from "$") be issued

    async def close(self) -> None:
        if self.events is not None:
            await self.events.close()
        await self.queue.close()

    async def enqueue(self) -> None:
        await self.queue.add(TASK_NAME, PAYLOAD)

    async def enqueue_batch(self, size: int) -> None:
        await self.queue.addBulk([{"name": TASK_NAME, "data": PAYLOAD} for _ in range(size)])

    async def round_trip(self) -> None:
        assert self.events is not None
        job_id = uuid.uuid4().hex
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def completed(args: dict, _entry: str) -> None:
            if not done.done():
                done.set_result(args.get("returnvalue"))

        def failed(args: dict, _entry: str) -> None:
            if not done.done():
                done.set_exception(RuntimeError(f"bullmq job failed: {args.get('failedReason')}"))

        self.events.on(f"completed:{job_id}", completed)
        self.events.on(f"failed:{job_id}", failed)
        try:
            await self.queue.add(TASK_NAME, PAYLOAD, {"jobId": job_id})
            await asyncio.wait_for(done, 30)
        finally:
            with contextlib.suppress(ValueError):
                self.events.off(f"completed:{job_id}", completed)
                self.events.off(f"failed:{job_id}", failed)


async def process(job: Any, token: str) -> None:
    common.DRAIN.hit()


async def run_worker(url: str, concurrency: int, results: bool) -> None:
    worker = Worker(
        QUEUE_NAME, process, {"connection": url, "concurrency": concurrency, "autorun": False}
    )
    common.DRAIN.start()
    await worker.run()


if __name__ == "__main__":
    common.main(Producer, run_worker)
