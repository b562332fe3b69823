"""Apps run in child processes by the multi-process tests.

Usage: python -m tests.mp.apps worker <url> <prefix> <ledger> [concurrency]
       python -m tests.mp.apps produce <url> <prefix> <count> <ids-file>
The worker appends one line per handler run to the ledger (O_APPEND: lines never interleave).
The producer is a plain synchronous script: dispatch() without an event loop.
"""

from __future__ import annotations

import os
import sys
import time

import taskora


def build(url: str, prefix: str, ledger: str | None = None) -> taskora.App:
    stall = taskora.Stall(interval=1, lock_ttl=2)
    app = taskora.App(url, prefix=prefix, defaults=taskora.TaskDefaults(stall=stall))

    @app.task("record")
    async def record(data: dict[str, int], ctx: taskora.Context) -> int:
        if ledger is not None:
            fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{ctx.id} {os.getpid()}\n".encode())
            finally:
                os.close(fd)
        return data["n"] * 2

    return app


def main(argv: list[str]) -> int:
    mode, url, prefix = argv[0], argv[1], argv[2]
    if mode == "worker":
        concurrency = int(argv[4]) if len(argv) > 4 else 8
        build(url, prefix, argv[3]).run(concurrency=concurrency)
        return 0
    count, ids_file = int(argv[3]), argv[4]
    app = build(url, prefix)
    task = app.tasks["record"]
    handles = [task.dispatch({"n": i}) for i in range(count)]
    ids = [h.sync.wait_enqueued() for h in handles]
    with open(ids_file, "w") as out:
        out.write("\n".join(ids) + "\n")
    if len(argv) > 5 and argv[5] == "wait":
        results = [h.get(timeout=60) for h in handles]
        assert results == [i * 2 for i in range(count)], "wrong results"
    time.sleep(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
