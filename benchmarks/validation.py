"""What schema validation costs: dispatch of a small pydantic model, and jobs/s with and
without validation, on the in-memory backend (the Redis round trip is the same either way:
validation adds CPU only). Prints figures; asserts nothing.

    .venv/bin/python benchmarks/validation.py [--jobs 20000] [--url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import pydantic

import taskora

PAYLOAD = {"to": "user@example.com", "subject": "Welcome!"}


class Email(pydantic.BaseModel):
    to: str
    subject: str
    priority: int = 0


class Sent(pydantic.BaseModel):
    message_id: str


def build(url: str) -> tuple[taskora.App, dict[str, taskora.Task[Any, Any]]]:
    keep = taskora.Retention(completed_max=1_000_000)  # results are read after the run
    app = taskora.App(url, prefix="bench" + uuid.uuid4().hex[:8], retention=keep)

    @app.task("plain")
    async def plain(data: dict, ctx: taskora.Context) -> dict:  # type: ignore[type-arg]
        return {"message_id": ctx.id}

    @app.task("typed")
    async def typed(data: Email, ctx: taskora.Context) -> Sent:
        return Sent(message_id=ctx.id)

    return app, {"plain": plain, "typed": typed}


def dispatch_cost(tasks: dict[str, taskora.Task[Any, Any]], n: int) -> dict[str, float]:
    """Microseconds per call of the synchronous part of dispatch (build + submit)."""
    out: dict[str, float] = {}
    schema = tasks["typed"].input
    assert schema is not None
    for label, fn in (
        ("validate+dump only", lambda: schema.to_json(PAYLOAD)),
        ("validate+dump a model instance", lambda: schema.to_json(Email(**PAYLOAD))),
    ):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        out[label] = (time.perf_counter() - start) / n * 1e6
    return out


async def enqueue_rate(task: taskora.Task[Any, Any], n: int, data: Any) -> float:
    start = time.perf_counter()
    handles = [task.dispatch(data) for _ in range(n)]
    for handle in handles:
        await handle
    return n / (time.perf_counter() - start)


async def process_rate(app: taskora.App, task: taskora.Task[Any, Any], n: int) -> float:
    handles = [task.dispatch(PAYLOAD) for _ in range(n)]
    for handle in handles:
        await handle
    start = time.perf_counter()
    await app.start(tasks=[task.name], concurrency=50)
    for handle in handles:
        await handle.result
    rate = n / (time.perf_counter() - start)
    await app.close()
    return rate


async def main(url: str, jobs: int, repeat: int) -> None:
    print(f"backend {url}, {jobs} jobs, median of {repeat}")
    _, tasks = build(url)
    for label, us in dispatch_cost(tasks, jobs).items():
        print(f"  {label:38s} {us:7.2f} us")
    for name, data in (("plain", PAYLOAD), ("typed", PAYLOAD), ("typed", Email(**PAYLOAD))):
        rates = []
        for _ in range(repeat):
            app, fresh = build(url)
            rates.append(await enqueue_rate(fresh[name], jobs, data))
            await app.close()
        what = f"dispatch {name} ({type(data).__name__})"
        print(f"  {what:38s} {statistics.median(rates):9,.0f} jobs/s")
    for name in ("plain", "typed"):
        rates = []
        for _ in range(repeat):
            app, fresh = build(url)
            rates.append(await process_rate(app, fresh[name], jobs))
        label = f"process {name} (c=50, result awaited)"
        print(f"  {label:38s} {statistics.median(rates):9,.0f} jobs/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.jobs, args.repeat))
