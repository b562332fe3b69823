"""Child processes for the multi-process flow-control tests (tests/test_flow_multiprocess.py).

Usage:
  python -m tests.procs.flow_procs produce <url> <prefix> <kind> <count> <out> <ready> <go>
      Connect, write the file <ready>, wait for the file <go> to exist (so every producer
      bursts at once), fire <count> dispatches of task "burst" under <kind> ("throttle" or
      "dedup") without awaiting them one by one, then write one JSON line per dispatch to
      <out>: {"id", "enqueued", "existing_id"}.
  python -m tests.procs.flow_procs worker <url> <prefix> <concurrency> <ready>
      Run task "limited" until SIGTERM. Each handler run counts itself in the Redis key
      obs:<prefix>:<concurrency key> while it runs, and appends "<key> <count> <pid>" to the
      list obs:<prefix>:log, so the test sees how many ran at once across processes.
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

THROTTLE = {"key": "burst-key", "max": 10, "window": "1h"}
DEDUP = {"key": "burst-key"}
HOLD_S = 0.15  # how long a limited job stays inside its handler (an overlap window)


def build(url: str, prefix: str) -> tuple[taskora.App, dict[str, aioredis.Redis]]:
    app = taskora.App(
        url,
        prefix=prefix,
        defaults=taskora.TaskDefaults(stall=taskora.Stall(interval=1, lock_ttl=2)),
    )
    observer: dict[str, aioredis.Redis] = {}

    @app.task("burst")
    async def burst(data: int) -> int:
        return data

    @app.task("limited")
    async def limited(data: dict[str, Any]) -> int:
        client = observer.get("client")
        if client is None:
            client = observer["client"] = aioredis.Redis.from_url(url)
        key = data["key"]
        counter = f"obs:{prefix}:{key}"
        running = int(await client.incr(counter))
        try:
            await client.rpush(f"obs:{prefix}:log", f"{key} {running} {os.getpid()}")
            await asyncio.sleep(HOLD_S)
        finally:
            await client.decr(counter)
        return os.getpid()

    return app, observer


async def _wait_for_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear within {timeout}s")
        await asyncio.sleep(0.002)


async def produce(
    url: str, prefix: str, kind: str, count: int, out: str, ready: str, go: str
) -> None:
    app, _ = build(url, prefix)
    task = app.tasks["burst"]
    try:
        await app._connected_backend()  # connected before the start line: a real burst
        Path(ready).write_text(str(os.getpid()))
        await _wait_for_file(Path(go), 60)
        if kind == "throttle":
            handles = [task.dispatch(i, throttle=THROTTLE) for i in range(count)]
        else:
            handles = [task.dispatch(i, deduplicate=DEDUP) for i in range(count)]
        await asyncio.gather(*handles)
        lines = [
            json.dumps({"id": h.id, "enqueued": h.enqueued, "existing_id": h.existing_id})
            for h in handles
        ]
        Path(out).write_text("\n".join(lines) + "\n")
    finally:
        await app.close()


async def work(url: str, prefix: str, concurrency: int, ready: str) -> None:
    app, observer = build(url, prefix)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start(tasks=["limited"], concurrency=concurrency)
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
        kind, count, out, ready, go = argv[3], int(argv[4]), argv[5], argv[6], argv[7]
        asyncio.run(produce(url, prefix, kind, count, out, ready, go))
    elif mode == "worker":
        asyncio.run(work(url, prefix, int(argv[3]), argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
