"""Memory stays bounded: finished jobs are trimmed as fast as they arrive
(docs/design.md#retention)."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

import taskora
from taskora.backends.base import ClaimOptions, NewJob, Outcome, Terminal
from taskora.backends.redis.backend import RedisBackend
from tests.conftest import AppFactory, wait_until


async def test_completed_and_failed_are_trimmed_by_count(make_app: AppFactory) -> None:
    app = make_app(retention=taskora.Retention(completed_max=50, failed_max=20))

    @app.task(concurrency=20)
    async def work(data: int) -> int:
        if data % 10 == 0:
            raise ValueError("tenth")
        return data

    async with app:
        handles = [work.dispatch(i) for i in range(1000)]
        # thousands of waiters at once, with a retention far smaller than the batch:
        # every waiter still resolves (the result travels with the completion event)
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(h.result for h in handles), return_exceptions=True), 120
        )
    completed = [o for o in outcomes if not isinstance(o, BaseException)]
    failed = [o for o in outcomes if isinstance(o, taskora.JobFailedError)]
    assert len(completed) == 900 and len(failed) == 100
    counts = await app.counts("work")
    assert counts["completed"] <= 50 + 60  # the cap, plus at most one batch in flight
    assert counts["failed"] <= 20 + 60


async def test_age_based_trim_runs_in_the_background(make_app: AppFactory) -> None:
    app = make_app(
        retention=taskora.Retention(completed_age=0.2, failed_age=0.2),
        defaults=taskora.TaskDefaults(stall=taskora.Stall(interval=0.3, lock_ttl=2)),
    )

    @app.task()
    async def work(data: int) -> int:
        return data

    async with app:
        handles = [work.dispatch(i) for i in range(30)]
        assert await asyncio.gather(*(h.result for h in handles)) == list(range(30))
        await wait_until(lambda: _count(app, "completed"), timeout=20)
        assert await handles[0].get_state() is None  # trimmed: the job is gone


async def _count(app: taskora.App, state: str) -> bool:
    return (await app.counts("work"))[state] == 0


async def test_trimmed_jobs_leave_no_keys_behind(redis_url: str, prefix: str) -> None:
    app = taskora.App(redis_url, prefix=prefix, retention=taskora.Retention(completed_max=10))

    @app.task(concurrency=10)
    async def work(data: None, ctx: taskora.Context) -> None:
        ctx.log.info("a log line that must be trimmed with its job")

    async with app:
        await asyncio.gather(*(work.dispatch(None).result for _ in range(300)))
    r = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in r.scan_iter(match=f"taskora:{prefix}:*", count=1000)]
        job_keys = [k for k in keys if k.count(b":") >= 3 and b"-" in k.split(b":")[3]]
        # 10 retained jobs, each a hash and a log list; nothing else per job survives
        assert len(job_keys) <= 2 * (10 + 30), job_keys[:5]
        assert await r.xlen(f"taskora:{prefix}:{{work}}:events") <= 12_000
    finally:
        await r.aclose()


async def test_a_lost_end_message_of_a_trimmed_job_is_read_from_the_done_stream(
    redis_url: str, prefix: str
) -> None:
    """The sweep's side of the waiter's guarantee (Redis: the memory backend has no messages
    to lose). Ordered explicitly: the waiter is subscribed and registered, the job's end
    message is lost (as with a subscription down), retention deletes the job, then the sweep
    runs before any replay: it must read the end from the done stream, not report the job
    missing."""
    app = taskora.App(redis_url, prefix=prefix)
    try:
        backend = await app._connected_backend()
        assert isinstance(backend, RedisBackend)
        waiter = backend.waiter
        job_id = str(uuid.uuid4())
        (created,) = await backend.enqueue("t", [NewJob(id=job_id, data="1")])
        waiting = asyncio.ensure_future(backend.wait_terminal("t", job_id, None, created.event_id))
        await wait_until(lambda: waiter._sweeper is not None)  # checked: still waiting
        assert not waiting.done()
        del waiter._channels[backend.keys("t").done]  # from here on, its messages are lost
        opts = ClaimOptions(lock_ttl_ms=30_000)
        (claimed,) = (await backend.finish_and_claim("t", [], 1, opts, "w")).claimed
        done = Outcome(job_id, claimed.token, "completed", result='"late"')
        await backend.finish_and_claim("t", [done], 0, opts, "w")
        assert await backend.trim("t", taskora.Retention(completed_max=0)) == 1
        assert not waiting.done()  # the message never arrived
        await waiter._sweep([("t", job_id)])
        assert await waiting == Terminal("completed", result='"late"')
    finally:
        await app.close()
