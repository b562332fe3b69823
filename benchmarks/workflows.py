"""What a workflow costs: a 1,000-step group and a 100-step chain on one worker, time from
dispatch to result, and Redis round trips (client commands, every connection of the
process) and commands the server ran per step. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/workflows.py [--url redis://127.0.0.1:6379/0] [--width 1000]
        [--length 100] [--concurrency 50]

Without --url it starts its own redis-server on a free loopback port (tests/redis_server.py).
The worker and the dispatcher share one process, so the round trips are all of taskora's:
dispatch, claims, advances, enqueues, acks and the pushed result.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import taskora  # noqa: E402


def _trips(backend: Any) -> int:
    return sum(backend.round_trips().values())


async def _server_commands(url: str) -> int:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        info = await client.info("stats")
        return int(info["total_commands_processed"])
    finally:
        await client.aclose()


async def run(url: str, width: int, length: int, concurrency: int) -> None:
    app = taskora.App(url, prefix="bench" + uuid.uuid4().hex[:8])

    @app.task("inc", concurrency=concurrency)
    async def inc(x: int) -> int:
        return x + 1

    async with app:
        await app._connected_backend()
        backend: Any = app.backend
        # warm up: scripts loaded, subscriptions made
        await (inc.s(0) | inc.s()).dispatch().wait_for(60)
        await taskora.group(inc.s(0), inc.s(1)).dispatch().wait_for(60)
        for label, flow, steps in (
            (f"group of {width}", taskora.group(*(inc.s(i) for i in range(width))), width),
            (f"chain of {length}", taskora.chain(inc.s(0), *(inc.s() for _ in range(length - 1))), length),
        ):
            trips, server = _trips(backend), await _server_commands(url)
            start = time.perf_counter()
            result = await flow.dispatch().wait_for(600)
            took = time.perf_counter() - start
            trips = _trips(backend) - trips
            server = await _server_commands(url) - server - 1  # less the INFO itself
            check = len(result) if isinstance(result, list) else result
            print(
                f"{label:>14}: {took:6.3f} s ({steps / took:,.0f} steps/s), "
                f"{trips / steps:.2f} round trips/step, {server / steps:.2f} server "
                f"commands/step (result {check})"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args.url, args.width, args.length, args.concurrency))
        return
    from tests.redis_server import RedisServer

    server = RedisServer()
    try:
        asyncio.run(run(server.url, args.width, args.length, args.concurrency))
    finally:
        server.close()


if __name__ == "__main__":
    main()
