"""Dramatiq adapter (synchronous producer; RedisBroker). The worker is `dramatiq.Worker` in one
process with N worker threads. Results (the `Results` middleware with its Redis backend) are enabled
only for the round trip; `message.get_result(block=True)` waits with a blocking list pop."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from libs import common
from libs.common import PAYLOAD, QUEUE_NAME, TASK_NAME


def make_actor(url: str, results: bool) -> tuple[RedisBroker, Any]:
    broker = RedisBroker(url=url)
    options: dict[str, Any] = {}
    if results:
        broker.add_middleware(Results(backend=RedisBackend(url=url)))
        options["store_results"] = True
    dramatiq.set_broker(broker)

    @dramatiq.actor(actor_name=TASK_NAME, queue_name=QUEUE_NAME, broker=broker, **options)
    def noop(payload: dict) -> None:
        common.DRAIN.hit()

    return broker, noop


class Producer(common.Producer):
    no_bulk_reason = "no bulk API (group.run() sends one message each)"

    def open(self) -> None:
        self.broker, self.actor = make_actor(self.url, self.results)

    def close(self) -> None:
        self.broker.close()

    def enqueue(self) -> None:
        self.actor.send(PAYLOAD)

    def round_trip(self) -> None:
        self.actor.send(PAYLOAD).get_result(block=True, timeout=30_000)


def run_worker(url: str, concurrency: int, results: bool) -> None:
    broker, _ = make_actor(url, results)
    worker = dramatiq.Worker(broker, worker_threads=concurrency)
    common.DRAIN.start()
    worker.start()
    while True:  # the worker runs in its own threads
        worker.join()


if __name__ == "__main__":
    common.main(Producer, run_worker)
