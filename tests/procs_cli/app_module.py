"""An App for `taskora worker tests.procs_cli.app_module:app`.

The backend comes from ``TASKORA_URL`` (memory when unset) and the key prefix from
``TASKORA_TEST_PREFIX``, so a test can share one Redis keyspace with its worker process.
"""

from __future__ import annotations

import os

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
