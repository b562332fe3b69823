"""A worker process of quick (no-op) jobs, for the claim-ahead tests.

Usage: python -m tests.mp.quick_worker <url> <prefix> <ledger> <concurrency>
Task "quick": data {"n": int, "sleep": seconds (optional)}. Each handler start appends
"start <id> <pid> <n>" to the ledger (O_APPEND: lines never interleave, and a SIGKILLed
process leaves what it wrote; no fsync, so the jobs stay quick enough to be claimed ahead).
"""

from __future__ import annotations

import asyncio
import os
import sys

import taskora

STALL = taskora.Stall(interval=1, lock_ttl=2, max_count=1)


def build(url: str, prefix: str, ledger: str) -> taskora.App:
    app = taskora.App(url, prefix=prefix, defaults=taskora.TaskDefaults(stall=STALL))
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @app.task("quick")
    async def quick(data: dict[str, float], ctx: taskora.Context) -> int:
        os.write(fd, f"start {ctx.id} {os.getpid()} {int(data['n'])}\n".encode())
        if data.get("sleep"):
            await asyncio.sleep(data["sleep"])
        return int(data["n"])

    return app


if __name__ == "__main__":
    url, prefix, ledger, concurrency = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    build(url, prefix, ledger).run(concurrency=concurrency)
