"""A worker process for fault-injection tests.

Usage: python -m tests.mp.fault_worker <url> <prefix> <ledger> <concurrency> [keep_completed]
Task "job": data {"n": int, "sleep": float, "die": bool}. The ledger gets one line per
handler start and end ("start <id> <pid> <t>", "end <id> <pid> <t>"), written with O_APPEND
and fsync, so a SIGKILLed worker leaves an honest record. ``die`` makes the handler kill its
own process (a poison pill).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import taskora

STALL = taskora.Stall(interval=1, lock_ttl=2, max_count=1)


def _record(ledger: str, what: str, job_id: str) -> None:
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{what} {job_id} {os.getpid()} {time.time():.3f}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def build(url: str, prefix: str, ledger: str, keep_completed: int = 1000) -> taskora.App:
    app = taskora.App(
        url,
        prefix=prefix,
        defaults=taskora.TaskDefaults(stall=STALL, timeout=None),
        retention=taskora.Retention(completed_max=keep_completed),
    )

    @app.task("job")
    async def job(data: dict[str, object], ctx: taskora.Context) -> int:
        _record(ledger, "start", ctx.id)
        if data.get("die"):
            os._exit(1)
        await asyncio.sleep(float(data.get("sleep", 0)))  # type: ignore[arg-type]
        _record(ledger, "end", ctx.id)
        return int(data["n"])  # type: ignore[call-overload]

    return app


if __name__ == "__main__":
    url, prefix, ledger, concurrency = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    keep = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    build(url, prefix, ledger, keep).run(concurrency=concurrency)
