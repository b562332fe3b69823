"""The soak test's app (reliability.md T11): quick jobs, with retries, timeouts and
cancellations mixed in. Run as a worker: python -m tests.mp.soak_worker <url> <prefix>

Task "soak": data {"n": int, "kind": str}: "ok" returns n; "retry" fails its first attempt
(retried after 10 ms); "timeout" sleeps past its 200 ms timeout (failed); "linger" sleeps
30 ms (the producer cancels it, waiting or running).
"""

from __future__ import annotations

import asyncio
import sys

import taskora

RETENTION = taskora.Retention(
    completed_age="5s", completed_max=1000, failed_age="5s", failed_max=1000
)


class Flaky(Exception):
    pass


def build(url: str, prefix: str) -> taskora.App:
    app = taskora.App(
        url,
        prefix=prefix,
        retention=RETENTION,
        defaults=taskora.TaskDefaults(stall=taskora.Stall(interval=1, lock_ttl=5)),
    )

    @app.task(
        "soak",
        retry=taskora.Retry(attempts=2, backoff="fixed", delay="10ms", jitter=False),
        timeout="200ms",
        concurrency=32,
    )
    async def soak(data: dict[str, object], ctx: taskora.Context) -> int:
        kind = data["kind"]
        if kind == "retry" and ctx.attempt == 1:
            raise Flaky("first attempt fails")
        if kind == "timeout":
            await asyncio.sleep(0.3)
        if kind == "linger":
            await asyncio.sleep(0.03)
        return int(data["n"])  # type: ignore[call-overload]

    return app


if __name__ == "__main__":
    build(sys.argv[1], sys.argv[2]).run()
