"""A job seen active by one stall check, then finished and removed by retention before the
next check, is simply gone: the check must not resurrect it as a failed 'malformed' job
(found by the soak test: its waiter got JobFailedError instead of the result)."""

from __future__ import annotations

import asyncio

import redis

import taskora
from tests.conftest import wait_until


async def test_finished_and_trimmed_job_is_not_failed_by_the_stall_check(
    redis_url: str, prefix: str
) -> None:
    app = taskora.App(
        redis_url,
        prefix=prefix,
        retention=taskora.Retention(completed_max=1),
        defaults=taskora.TaskDefaults(stall=taskora.Stall(interval=0.3, lock_ttl=30)),
    )

    @app.task("job", concurrency=1)
    async def job(data: float) -> float:
        await asyncio.sleep(data)
        return data

    base = f"taskora:{prefix}:{{job}}:"
    async with app:
        slow = job.dispatch(1.0)  # seen active by a few stall checks
        assert await asyncio.wait_for(slow.result, timeout=20) == 1.0
        quick = job.dispatch(0)  # its completion trims the slow one (completed_max=1)
        assert await asyncio.wait_for(quick.result, timeout=20) == 0
        with redis.Redis.from_url(redis_url) as r:
            await wait_until(lambda: not r.exists(base + slow.id), timeout=20)
            await asyncio.sleep(1.0)  # three more stall checks
            assert not r.exists(base + slow.id), r.hgetall(base + slow.id)
            assert r.zscore(base + "failed", slow.id) is None
            assert r.scard(base + "stalled") == 0
