"""taskiq adapter: taskiq-redis `RedisStreamBroker` (the README's broker: acks, redelivery) and, for
round trips, `RedisAsyncResultBackend`. `wait_result()` polls (default every 0.2 s; 10 ms here).
The worker is taskiq's receiver run programmatically in one process (`run_receiver_task`)."""

from __future__ import annotations

from typing import Any

from taskiq.api import run_receiver_task
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from libs import common
from libs.common import FAST_POLL_S, PAYLOAD, QUEUE_NAME, TASK_NAME


def make_broker(url: str, results: bool) -> tuple[Any, Any]:
    broker: Any = RedisStreamBroker(url=url, queue_name=QUEUE_NAME)
    if results:
        broker = broker.with_result_backend(RedisAsyncResultBackend(redis_url=url))

    @broker.task(task_name=TASK_NAME)
    async def noop(payload: dict) -> None:
        common.DRAIN.hit()

    return broker, noop


class Producer(common.Producer):
    async def open(self) -> None:
        # startup() also creates the stream's consumer group, so pre-enqueued jobs are delivered.
        self.broker, self.task = make_broker(self.url, self.results)
        await self.broker.startup()

    async def close(self) -> None:
        await self.broker.shutdown()

    async def enqueue(self) -> None:
        await self.task.kiq(PAYLOAD)

    async def round_trip(self) -> None:
        handle = await self.task.kiq(PAYLOAD)
        result = await handle.wait_result(check_interval=FAST_POLL_S, timeout=30)
        if result.is_err:
            raise RuntimeError(f"taskiq job failed: {result.error}")


async def run_worker(url: str, concurrency: int, results: bool) -> None:
    broker, _ = make_broker(url, results)
    common.DRAIN.start()
    await run_receiver_task(broker, max_async_tasks=concurrency, run_startup=True)


if __name__ == "__main__":
    common.main(Producer, run_worker)
