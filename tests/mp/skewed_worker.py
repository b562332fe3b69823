"""A worker process whose host clock is off: ``time.time`` (and ``time.time_ns``) are shifted
by ``skew`` seconds before taskora is imported, as on a host with a wrong clock.

Usage: python -m tests.mp.skewed_worker <url> <prefix> <skew_s> <ledger>
Task "job": data {"n": int, "hold": bool}. The ledger gets "start <id> <pid>" per handler
start. A ``hold`` job sleeps a minute the first time it starts anywhere (a marker file next
to the ledger says it started), so its worker can be killed mid-job; its re-run is quick.
"""

from __future__ import annotations

import sys
import time

_real_time, _real_time_ns = time.time, time.time_ns
SKEW_S = float(sys.argv[3]) if __name__ == "__main__" else 0.0
time.time = lambda: _real_time() + SKEW_S
time.time_ns = lambda: _real_time_ns() + int(SKEW_S * 1e9)

import asyncio  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

import taskora  # noqa: E402

STALL = taskora.Stall(interval=1, lock_ttl=2, max_count=3)


def build(url: str, prefix: str, ledger: str) -> taskora.App:
    app = taskora.App(
        url,
        prefix=prefix,
        defaults=taskora.TaskDefaults(stall=STALL),
        retention=taskora.Retention(completed_age="1s"),
    )

    @app.task("job")
    async def job(data: dict[str, object], ctx: taskora.Context) -> int:
        with open(ledger, "a") as out:
            out.write(f"start {ctx.id} {os.getpid()}\n")
        marker = Path(ledger + ".held")
        if data.get("hold") and not marker.exists():
            marker.write_text(ctx.id)
            await asyncio.sleep(60)
        return int(data["n"])  # type: ignore[call-overload]

    return app


if __name__ == "__main__":
    build(sys.argv[1], sys.argv[2], sys.argv[4]).run(concurrency=4)
