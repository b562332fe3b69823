"""An App for `taskora worker tests.procs_cli.app_module:app`.

The backend comes from ``TASKORA_URL`` (memory when unset) and the key prefix from
``TASKORA_TEST_PREFIX``, so a test can share one Redis keyspace with its worker process.
"""

from __future__ import annotations

import asyncio
import os
import time

import taskora

app = taskora.App(
    os.environ.get("TASKORA_URL") or "memory://",
    prefix=os.environ.get("TASKORA_TEST_PREFIX") or None,
)


@app.task("double")
async def double(data: dict[str, int], ctx: taskora.Context) -> int:
    await ctx.progress(50)
    return data["n"] * 2


not_an_app = {"this": "is a dict, not a taskora.App"}


@app.task("boom", retry=taskora.Retry(attempts=2, delay="10ms"))
async def boom(data: dict[str, str], ctx: taskora.Context) -> None:
    if ctx.attempt == 1 and data.get("retry"):
        raise ctx.retry(delay="10ms", reason="not yet")
    raise ValueError(data.get("message", "boom"))


@app.task("sleepy")
async def sleepy(data: dict[str, int], ctx: taskora.Context) -> int:
    """Sleeps far longer than any test waits: only a shutdown ends it."""
    await ctx.progress(1)  # the test's sign that the handler runs
    await asyncio.sleep(600)
    return data["n"]


@app.task("sleepy-sync")
def sleepy_sync(data: dict[str, int], ctx: taskora.Context) -> int:
    """The same in a thread, which nothing can interrupt."""
    ctx.progress(1)
    time.sleep(600)
    return data["n"]


# Bound to an address where nothing listens: only `--url` can make it work.
elsewhere = taskora.App("redis://127.0.0.1:9/0")
elsewhere.task("boom", retry=taskora.Retry(attempts=2, delay="10ms"))(boom.handler)
elsewhere.task("double")(double.handler)
