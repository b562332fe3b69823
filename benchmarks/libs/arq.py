"""arq adapter (asyncio). arq polls: the worker polls the queue and `job.result()` polls for the
result, both every 0.5 s by default; both are lowered to 10 ms here (see the report notes)."""

from __future__ import annotations

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker, func

from libs import common
from libs.common import FAST_POLL_S, PAYLOAD, QUEUE_NAME, TASK_NAME


class Producer(common.Producer):
    async def open(self) -> None:
        self.pool = await create_pool(
            RedisSettings.from_dsn(self.url), default_queue_name=QUEUE_NAME
        )

    async def close(self) -> None:
        await self.pool.aclose()

    async def enqueue(self) -> None:
        await self.pool.enqueue_job(TASK_NAME, PAYLOAD)

    async def round_trip(self) -> None:
        job = await self.pool.enqueue_job(TASK_NAME, PAYLOAD)
        await job.result(timeout=30, poll_delay=FAST_POLL_S)


async def noop(ctx: dict, payload: dict) -> None:
    common.DRAIN.hit()


async def run_worker(url: str, concurrency: int, results: bool) -> None:
    worker = Worker(
        functions=[func(noop, name=TASK_NAME)],
        redis_settings=RedisSettings.from_dsn(url),
        queue_name=QUEUE_NAME,
        max_jobs=concurrency,
        poll_delay=FAST_POLL_S,
        handle_signals=False,
    )
    common.DRAIN.start()
    await worker.main()


if __name__ == "__main__":
    common.main(Producer, run_worker)
