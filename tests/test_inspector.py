"""The inspector (app.inspect()): the reference's orders, paging, counts, one job's story,
throughput and task discovery, on both backends; deep pages on Redis cost a fixed number of
round trips (docs/design.md#inspector)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
import redis

import taskora
from taskora.backends.keys import task_base
from tests.conftest import AppFactory, wait_until


async def test_waiting_delayed_orders_paging_and_stats(make_app: AppFactory) -> None:
    app = make_app()
    other = make_app()  # a process that has no tasks registered (the CLI's view)

    @app.task()
    async def queued(data: int) -> int:  # no worker is started: jobs stay where they are
        return data

    plain = [queued.dispatch(i) for i in range(5)]
    await asyncio.gather(*plain)
    low = queued.dispatch(100, priority=1)
    high = queued.dispatch(200, priority=9)
    late = queued.dispatch(300, delay=600)
    soon = queued.dispatch(400, delay=300)
    await asyncio.gather(low, high, late, soon)

    insp = app.inspect()
    waiting = await insp.waiting("queued", limit=50)
    assert [j.id for j in waiting] == [high.id, low.id] + [h.id for h in plain]
    assert [j.data for j in waiting] == [200, 100, 0, 1, 2, 3, 4]
    for offset in range(8):  # every page agrees with the whole list
        page = await insp.waiting("queued", limit=3, offset=offset)
        assert [j.id for j in page] == [j.id for j in waiting[offset : offset + 3]]
    assert [j.id for j in await insp.delayed("queued")] == [soon.id, late.id]
    assert await insp.active("queued") == []

    stats = await insp.stats("queued")
    assert stats == {
        "waiting": 7,
        "active": 0,
        "delayed": 2,
        "completed": 0,
        "failed": 0,
        "expired": 0,
        "cancelled": 0,
    }
    assert (await insp.migrations("queued")).by_version == {1: 9}  # waiting + delayed

    # a process without the task in its registry finds it in the store
    assert "queued" in await other.inspect().tasks()
    found = await other.inspect().find(high.id)
    assert found is not None and found.task == "queued" and found.data == 200
    assert found.state == taskora.JobState.WAITING
    assert found.created_at is not None and found.created_at.tzinfo is not None
    assert [state for state, _ in found.timeline] == ["waiting"]
    assert (await other.inspect().stats())["waiting"] >= 7
    assert await other.inspect().find("no-such-job") is None
    assert await other.inspect().find("queued", "no-such-job") is None


async def test_finished_lists_find_throughput_and_purge(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def work(data: int, ctx: taskora.Context) -> int:
        ctx.log.info("working", n=data)
        if data % 4 == 0:
            raise ValueError(f"bad {data}")
        return data * 10

    async with app:
        handles = [work.dispatch(i) for i in range(24)]
        for h in handles:
            try:
                await h.wait_for(30)
            except taskora.JobFailedError:
                pass

    insp = app.inspect()
    stats = await insp.stats()
    assert stats["completed"] == 18 and stats["failed"] == 6
    completed = await insp.completed("work", limit=100)
    assert len(completed) == 18
    ends = [j.finished_at for j in completed]
    assert all(a is not None for a in ends)
    assert ends == sorted(ends, reverse=True)  # newest first
    pages = [j.id for off in range(0, 18, 5) for j in await insp.completed("work", 5, off)]
    assert pages == [j.id for j in completed]
    failed = await insp.failed("work")
    assert sorted(j.data for j in failed) == [0, 4, 8, 12, 16, 20]
    assert all(j.error and j.error.startswith("bad ") for j in failed)
    assert [j.id for j in await app.dead_letters.list("work", limit=100)] == [j.id for j in failed]

    job = await insp.find(handles[3].id)
    assert job is not None
    assert (job.task, job.state, job.data, job.result, job.attempt, job.version) == (
        "work",
        taskora.JobState.COMPLETED,
        3,
        30,
        1,
        1,
    )
    assert job.created_at and job.started_at and job.finished_at
    assert job.created_at <= job.started_at <= job.finished_at
    assert [state for state, _ in job.timeline] == ["waiting", "active", "completed"]
    assert [at for _, at in job.timeline] == sorted(at for _, at in job.timeline)
    assert job.logs and job.logs[0]["message"] == "working"
    bad = await insp.find("work", handles[4].id)
    assert bad is not None and bad.state == taskora.JobState.FAILED
    assert bad.timeline[-1][0] == "failed"

    minutes = await insp.throughput("work", minutes=3)
    assert len(minutes) == 3
    assert all(m["minute"].tzinfo is UTC for m in minutes)
    assert sum(m["completed"] for m in minutes) == 18
    assert sum(m["failed"] for m in minutes) == 6

    assert await insp.purge("work", "completed", 3_600_000) == 0  # none is an hour old
    assert await insp.purge("work", "completed", 0) == 18
    assert (await insp.stats("work"))["completed"] == 0
    assert (await insp.stats("work"))["failed"] == 6
    assert await insp.find(handles[3].id) is None
    with pytest.raises(ValueError):
        await insp.purge("work", "waiting", 0)


async def test_active_jobs_oldest_first(make_app: AppFactory) -> None:
    app = make_app()
    release = asyncio.Event()
    started: list[int] = []

    @app.task(concurrency=3)
    async def slow(data: int) -> int:
        started.append(data)
        await release.wait()
        return data

    first = slow.dispatch(1)
    await first
    await asyncio.sleep(0.005)  # distinct dispatch times
    second = slow.dispatch(2)
    await second
    await asyncio.sleep(0.005)
    third = slow.dispatch(3)
    await third
    async with app:
        insp = app.inspect()

        async def all_active() -> bool:
            return len(await insp.active("slow")) == 3

        await wait_until(all_active)
        assert [j.id for j in await insp.active("slow")] == [first.id, second.id, third.id]
        assert [j.id for j in await insp.active("slow", limit=1, offset=1)] == [second.id]
        release.set()
        await asyncio.gather(first, second, third)
        for h in (first, second, third):
            await h.wait_for(20)


# -- Redis: deep pages, discovery by SCAN ---------------------------------------------------
def _commands(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name[len("cmdstat_") :]: int(v["calls"]) for name, v in stats.items()}


async def test_deep_page_of_twenty_thousand_finished_jobs(redis_url: str, prefix: str) -> None:
    base = task_base(prefix, "bulk")
    client = redis.Redis.from_url(redis_url)
    n = 20_000
    now = int(time.time() * 1000) - n
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        job_id = f"job-{i:05d}"
        pipe.hset(
            base + job_id,
            mapping={
                "ts": now + i - 5,
                "processedOn": now + i - 2,
                "finishedOn": now + i,
                "state": "completed",
                "data": str(i),
                "result": str(i * 2),
                "attempt": 1,
                "_v": 1,
            },
        )
        pipe.zadd(base + "completed", {job_id: now + i})
    pipe.xadd(base + "events", {"event": "completed", "jobId": "job-00000"})
    pipe.execute()

    app = taskora.App(redis_url, prefix=prefix)  # no task registered: found by SCAN
    try:
        insp = app.inspect()
        before = _commands(client)
        assert await insp.tasks() == ["bulk"]
        scans = _commands(client)["scan"] - before.get("scan", 0)
        print(f"\ntask discovery over {client.dbsize()} keys: {scans} SCAN calls")
        before = _commands(client)
        trips = app.backend.round_trips()["main"]  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        page = await insp.completed("bulk", limit=20, offset=15_000)
        elapsed = time.perf_counter() - t0
        used = app.backend.round_trips()["main"] - trips  # type: ignore[attr-defined]
        after = _commands(client)
        # newest first: offset 15,000 from the newest is job n-1-15000
        assert [j.id for j in page] == [f"job-{n - 1 - 15_000 - k:05d}" for k in range(20)]
        assert [j.data for j in page] == [n - 1 - 15_000 - k for k in range(20)]
        assert used == 2  # the ids, then one pipeline of hashes
        sent = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        assert sent.get("zrevrange", 0) == 1
        assert sent.get("hgetall", 0) == 20
        print(f"\npage of 20 at offset 15,000 of {n}: {used} round trips, {elapsed * 1000:.1f} ms")
    finally:
        await app.close()
        client.close()


async def test_task_discovery_sees_only_its_prefix(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        # streams of a longer prefix that starts with ours: not our tasks
        client.xadd(task_base(prefix + "x", "stranger"), {"event": "waiting", "jobId": "1"})
        client.xadd(task_base(prefix, "mine") + "events", {"event": "waiting", "jobId": "1"})
        client.xadd(f"taskora:{prefix}x:{{other}}:events", {"event": "waiting", "jobId": "1"})
        app = taskora.App(redis_url, prefix=prefix)
        try:
            assert await app.inspect().tasks() == ["mine"]
        finally:
            await app.close()
    finally:
        client.close()


def test_timeline_uses_the_hash_when_the_stream_lost_the_entries() -> None:
    info = taskora.JobInfo.from_fields(
        "t",
        "j",
        {"state": "failed", "ts": "1000", "processedOn": "2000", "finishedOn": "3000"},
        events=[(1000, "waiting"), (1500, "progress"), (2000, "active")],
    )
    assert info.timeline == [
        ("waiting", datetime.fromtimestamp(1, UTC)),
        ("active", datetime.fromtimestamp(2, UTC)),
        ("failed", datetime.fromtimestamp(3, UTC)),
    ]
