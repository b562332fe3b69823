"""RQ adapter (synchronous). Workers are `SimpleWorker`s: one process, jobs run in-process, one at a
time (RQ has no in-process concurrency; its default `Worker` forks a child per job)."""

from __future__ import annotations

from redis import Redis
from rq import Queue, SimpleWorker

from libs import common
from libs.common import PAYLOAD, QUEUE_NAME

#: By dotted path: the adapter runs as __main__, the worker imports the handler from libs.rq.
FUNC = "libs.rq.noop"


def noop(payload: dict) -> None:
    common.DRAIN.hit()


class Producer(common.Producer):
    def open(self) -> None:
        self.redis = Redis.from_url(self.url)
        self.queue = Queue(QUEUE_NAME, connection=self.redis)

    def close(self) -> None:
        self.redis.close()

    def enqueue(self) -> None:
        self.queue.enqueue(FUNC, PAYLOAD)

    def enqueue_batch(self, size: int) -> None:
        self.queue.enqueue_many([Queue.prepare_data(FUNC, (PAYLOAD,)) for _ in range(size)])

    def round_trip(self) -> None:
        job = self.queue.enqueue(FUNC, PAYLOAD)
        result = job.latest_result(timeout=30)
        if result is None:
            raise TimeoutError("no RQ result within 30 s")


def run_worker(url: str, concurrency: int, results: bool) -> None:
    redis = Redis.from_url(url)
    worker = SimpleWorker([Queue(QUEUE_NAME, connection=redis)], connection=redis)
    common.DRAIN.start()
    worker.work(burst=False, logging_level="WARNING", with_scheduler=False)


if __name__ == "__main__":
    common.main(Producer, run_worker)
