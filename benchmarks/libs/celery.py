"""Celery adapter (synchronous producer; Redis broker). The worker is one process with the `threads`
pool (`--pool threads -c N`; the default prefork pool would be N+1 processes). Mingle, gossip and
heartbeat (cluster chatter that only costs start-up time) are off. The Redis result backend is
configured only for the round trip, where `AsyncResult.get()` waits on pub/sub."""

from __future__ import annotations

from celery import Celery

from libs import common
from libs.common import PAYLOAD, QUEUE_NAME, TASK_NAME


def make_app(url: str, results: bool) -> tuple[Celery, object]:
    app = Celery("bench", broker=url, backend=url if results else None)
    app.conf.update(
        task_default_queue=QUEUE_NAME,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_ignore_result=not results,
    )

    @app.task(name=TASK_NAME)
    def noop(payload: dict) -> None:
        common.DRAIN.hit()

    return app, noop


class Producer(common.Producer):
    no_bulk_reason = "no bulk API (group/chunks publish one message each)"

    def open(self) -> None:
        self.app, self.task = make_app(self.url, self.results)

    def close(self) -> None:
        self.app.close()

    def enqueue(self) -> None:
        self.task.delay(PAYLOAD)

    def round_trip(self) -> None:
        self.task.delay(PAYLOAD).get(timeout=30)


def run_worker(url: str, concurrency: int, results: bool) -> None:
    app, _ = make_app(url, results)
    common.DRAIN.start()
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            "--loglevel=WARNING",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-Q",
            QUEUE_NAME,
        ]
    )


if __name__ == "__main__":
    common.main(Producer, run_worker)
