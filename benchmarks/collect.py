"""What batch collect costs: appends/s (each one script call, no extra round trip), the round
trips per append, and items/s from the first append to the last batch finished, against
plain dispatch of the same items. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/collect.py [--items 20000] [--url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import taskora
from taskora import Collect


async def run(url: str, items: int, max_size: int) -> None:
    app = taskora.App(url, prefix="bench" + uuid.uuid4().hex[:8])
    done = asyncio.Event()
    seen = [0]

    @app.task("batch", collect=Collect(key="k", delay="50ms", max_size=max_size))
    async def batch(data: list[int]) -> None:
        seen[0] += len(data)
        if seen[0] >= items:
            done.set()

    await app._connected_backend()
    backend: Any = app.backend
    trips = backend.round_trips()["main"] if hasattr(backend, "round_trips") else None
    start = time.perf_counter()
    for lo in range(0, items, 1000):
        await asyncio.gather(*[batch.dispatch(i) for i in range(lo, min(items, lo + 1000))])
    appended = time.perf_counter() - start
    if trips is not None:
        trips = backend.round_trips()["main"] - trips
    async with app:
        await asyncio.wait_for(done.wait(), 300)
    total = time.perf_counter() - start
    per = f" in {trips} round trips" if trips is not None else ""
    print(
        f"{url.split(':')[0]:6} max_size={max_size:<5} {items} items: appends "
        f"{items / appended:,.0f}/s{per}; first append to last batch done "
        f"{items / total:,.0f} items/s"
    )
    await app.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--url", default="memory://")
    args = parser.parse_args()
    for max_size in (100, 1000):
        asyncio.run(run(args.url, args.items, max_size))


if __name__ == "__main__":
    main()
