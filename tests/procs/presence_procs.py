"""A worker process for the worker-registry tests (tests/test_workers.py).

Usage: python -m tests.procs.presence_procs <url> <prefix> <task> <concurrency>
Runs one task named <task> with a short heartbeat (HEARTBEAT s) until SIGTERM.
"""

from __future__ import annotations

import sys

import taskora

HEARTBEAT = 0.25


def main(url: str, prefix: str, task: str, concurrency: int) -> None:
    app = taskora.App(url, prefix=prefix, heartbeat=HEARTBEAT)

    @app.task(task, concurrency=concurrency)
    async def work(data: int) -> int:
        return data

    app.run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
