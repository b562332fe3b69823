"""What tracing costs: dispatch and end-to-end jobs/s with tracing off, and on with an SDK
provider whose spans go nowhere (span creation, context injection and extraction: what taskora
adds; an exporter's cost is the user's choice). Prints figures; asserts nothing.

    .venv/bin/python benchmarks/tracing.py [--jobs 20000] [--url memory://]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

import taskora


async def one(url: str, jobs: int, tracing: Any) -> tuple[float, float]:
    keep = taskora.Retention(completed_max=1_000_000)
    app = taskora.App(url, prefix="bench" + uuid.uuid4().hex[:8], retention=keep, tracing=tracing)

    @app.task("echo", concurrency=50)
    async def echo(data: dict[str, Any]) -> int:
        return len(data)

    async with app:
        started = time.perf_counter()
        handles = [echo.dispatch({"n": i}) for i in range(jobs)]
        for handle in handles:
            await handle
        dispatched = time.perf_counter() - started
        for handle in handles:
            await handle.wait_for(60)
        total = time.perf_counter() - started
    return jobs / dispatched, jobs / total


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--url", default="memory://")
    args = parser.parse_args()
    print(f"{args.jobs} jobs on {args.url}")
    for label, tracing in (("off", False), ("on (SDK, no exporter)", TracerProvider())):
        dispatch, total = await one(args.url, args.jobs, tracing)
        print(f"tracing {label:24} dispatch {dispatch:9.0f}/s   end-to-end {total:8.0f} jobs/s")


if __name__ == "__main__":
    asyncio.run(main())
