"""Child processes for the multi-process collect test (tests/test_collect_multiprocess.py).

Usage:
  python -m tests.procs.collect_procs produce <url> <prefix> <index> <count> <ready> <go>
      Connect, write <ready>, wait for <go>, then dispatch <count> items {"p": index, "n": i}
      to the collect task "batch" in small bursts (so appends meet flushes), awaiting each
      burst's handles.
  python -m tests.procs.collect_procs worker <url> <prefix> <ready>
      Run "batch" until SIGTERM. Each handler run first appends {"id", "items"} to the Redis
      list obs:<prefix>:runs, then holds for HOLD_S (a window to be killed in).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

import taskora

HOLD_S = 0.2
COLLECT = taskora.Collect(
    key=lambda d: f"k{d['n'] % 2}", delay="50ms", max_size=40, max_wait="300ms"
)


def build(url: str, prefix: str) -> tuple[taskora.App, dict[str, aioredis.Redis]]:
    app = taskora.App(
        url,
        prefix=prefix,
        defaults=taskora.TaskDefaults(stall=taskora.Stall(interval=1, lock_ttl=2)),
    )
    observer: dict[str, aioredis.Redis] = {}

    @app.task("batch", collect=COLLECT, concurrency=2)
    async def batch(items: list[dict[str, Any]], ctx: taskora.Context) -> int:
        client = observer.get("client")
        if client is None:
            client = observer["client"] = aioredis.Redis.from_url(url)
        await client.rpush(f"obs:{prefix}:runs", json.dumps({"id": ctx.id, "items": items}))
        await asyncio.sleep(HOLD_S)
        return len(items)

    return app, observer


async def _wait_for_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear within {timeout}s")
        await asyncio.sleep(0.002)


async def produce(url: str, prefix: str, index: int, count: int, ready: str, go: str) -> None:
    app, _ = build(url, prefix)
    task = app.tasks["batch"]
    try:
        await app._connected_backend()
        Path(ready).write_text(str(os.getpid()))
        await _wait_for_file(Path(go), 60)
        for start in range(0, count, 25):
            handles = [
                task.dispatch({"p": index, "n": n}) for n in range(start, min(count, start + 25))
            ]
            await asyncio.gather(*handles)
            await asyncio.sleep(0.01)
    finally:
        await app.close()


async def work(url: str, prefix: str, ready: str) -> None:
    app, observer = build(url, prefix)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    try:
        Path(ready).write_text(str(os.getpid()))
        await stop.wait()
    finally:
        await app.close(timeout=10)
        if "client" in observer:
            await observer["client"].aclose()


def main(argv: list[str]) -> int:
    mode, url, prefix = argv[0], argv[1], argv[2]
    if mode == "produce":
        asyncio.run(produce(url, prefix, int(argv[3]), int(argv[4]), argv[5], argv[6]))
    elif mode == "worker":
        asyncio.run(work(url, prefix, argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
