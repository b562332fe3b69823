"""A worker process for the workflow fault tests (tests/test_workflow_faults.py).

Usage: python -m tests.procs.workflow_procs <url> <prefix> <ledger> <max_stalls> [tasks]

``tasks``: the comma-separated tasks to run (default: all).

Tasks: "a" (x + 1), "b" (x * 10), "c" (x + 5), "die" (SIGKILLs its own process), "hang"
(waits until cancelled), "after" (x). Every handler start appends "<task> <job id> <pid>" to
the ledger (O_APPEND, fsync: a SIGKILLed process leaves an honest record). The environment
variable TASKORA_TEST_KILL_AFTER_ADVANCE=<node> makes the process kill itself right after the
advance of that node is recorded, before what it unblocked is enqueued (taskora/workflow.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import taskora


def _record(ledger: str, task: str, job_id: str) -> None:
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{task} {job_id} {os.getpid()}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def build(url: str, prefix: str, ledger: str | None = None, max_stalls: int = 1) -> taskora.App:
    stall = taskora.Stall(interval="200ms", lock_ttl="1s", max_count=max_stalls)
    app = taskora.App(url, prefix=prefix, defaults=taskora.TaskDefaults(stall=stall, timeout=None))

    def record(task: str, ctx: taskora.Context) -> None:
        if ledger is None:
            raise AssertionError("this app only dispatches")
        _record(ledger, task, ctx.id)

    @app.task("a")
    async def a(x: int, ctx: taskora.Context) -> int:
        record("a", ctx)
        return x + 1

    @app.task("b")
    async def b(x: int, ctx: taskora.Context) -> int:
        record("b", ctx)
        return x * 10

    @app.task("c")
    async def c(x: int, ctx: taskora.Context) -> int:
        record("c", ctx)
        return x + 5

    @app.task("die")
    async def die(x: int, ctx: taskora.Context) -> int:
        record("die", ctx)
        os.kill(os.getpid(), signal.SIGKILL)
        return x

    @app.task("hang")
    async def hang(x: int, ctx: taskora.Context) -> int:
        record("hang", ctx)
        await asyncio.sleep(3600)
        return x

    @app.task("after")
    async def after(x: object, ctx: taskora.Context) -> object:
        record("after", ctx)
        return x

    return app


if __name__ == "__main__":
    url, prefix, ledger, max_stalls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    tasks = sys.argv[5].split(",") if len(sys.argv) > 5 else None
    build(url, prefix, ledger, max_stalls).run(tasks, concurrency=4)
