"""Hand-off to an idle worker (docs/design.md#hand-off), on a private redis-server.

A worker blocked idle registers in the task's ``idle`` zset; a plain job that finds nothing
waiting is claimed for it by the enqueue script and delivered in its inbox, which the wait
watches before the marker: no claim script runs for it. A registration that expired (a dead
worker) is never used, a job handed to a worker that died is recovered as stalled, and a job
handed to a wait that was dropped is taken back from the inbox.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import taskora
from taskora.backends.base import ClaimOptions
from taskora.backends.redis import RedisBackend
from tests.redis_server import RedisServer


@pytest.fixture
def server() -> Iterator[RedisServer]:
    s = RedisServer()
    yield s
    s.close()


def _calls(server: RedisServer, command: str) -> int:
    with server.client() as r:
        stats: dict[str, Any] = r.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def _block_writes(app: taskora.App, task: str) -> int:
    assert isinstance(app.backend, RedisBackend)
    return app.backend.round_trips()[f"block:{task}"]


def _base(prefix: str, task: str) -> str:
    return f"taskora:{prefix}:{{{task}}}:"


async def test_an_idle_worker_gets_each_job_handed_off(server: RedisServer) -> None:
    """Sequential round trips to an idle worker: every job is handed off (it never waits in
    the queue, no claim pops it), and its hash and events are those a claim writes."""
    prefix = "ho" + uuid.uuid4().hex[:6]
    worker = taskora.App(server.url, prefix=prefix)
    producer = taskora.App(server.url, prefix=prefix)
    for app in (worker, producer):
        app.task("echo", concurrency=1)(lambda data: data)
    echo = producer.tasks["echo"]
    async with worker:
        await echo.dispatch(0).wait_for(20)  # the worker is now idle, registered
        rpop, zpopmax = _calls(server, "rpop"), _calls(server, "zpopmax")
        handles = []
        for i in range(1, 31):
            handle = echo.dispatch(i)
            assert await handle.wait_for(20) == i
            handles.append(handle)
        # no claim popped the wait list: each job went straight to the worker's inbox
        assert _calls(server, "rpop") == rpop
        assert _calls(server, "zpopmax") - zpopmax == 30
    await producer.close()
    base = _base(prefix, "echo")
    with server.client() as r:
        job = handles[-1].id
        fields = r.hgetall(base + job)
        assert fields[b"state"] == b"completed"
        assert b"processedOn" in fields and fields[b"attempt"] == b"1"
        events = [
            e[1][b"event"] for e in r.xrange(base + "events") if e[1].get(b"jobId") == job.encode()
        ]
        assert events == [b"waiting", b"active", b"completed"]
        assert r.llen(base + "wait") == 0 and r.llen(base + "active") == 0
        assert r.keys(base + "inbox:*") == []


async def test_an_expired_registration_is_never_used(server: RedisServer) -> None:
    prefix = "ho" + uuid.uuid4().hex[:6]
    app = taskora.App(server.url, prefix=prefix)
    noop = app.task("noop")(lambda data: None)
    base = _base(prefix, "noop")
    await app.backend.connect()
    with server.client() as r:
        r.zadd(base + "idle", {"0:30000:0:deadworker": app.backend.now_ms() - 1})
    handle = noop.dispatch(None)
    await handle
    assert await handle.get_state() == "waiting"
    with server.client() as r:
        assert r.exists(base + "idle", base + "inbox:deadworker") == 0
        assert r.lrange(base + "wait", 0, -1) == [handle.id.encode()]
    await app.close()


async def test_a_job_handed_to_a_dead_worker_is_recovered(server: RedisServer) -> None:
    """A worker that died blocked, its registration not yet expired: the job handed to it is
    active under its lock; once the lock expires, the stall check recovers it and a live
    worker runs it."""
    prefix = "ho" + uuid.uuid4().hex[:6]
    stall = taskora.Stall(interval="100ms", max_count=1, lock_ttl="300ms")
    app = taskora.App(server.url, prefix=prefix, defaults=taskora.TaskDefaults(stall=stall))
    app.task("echo", concurrency=1)(lambda data: data)
    echo = app.tasks["echo"]
    base = _base(prefix, "echo")
    await app.backend.connect()
    with server.client() as r:  # the dead worker's entry: lock ttl 300 ms, any version
        r.zadd(base + "idle", {"7:300:0:deadworker": app.backend.now_ms() + 60_000})
    handle = echo.dispatch("x")
    await handle
    assert await handle.get_state() == "active"
    with server.client() as r:
        assert r.get(base + handle.id + ":lock") == b"deadworker:7"
        assert r.zcard(base + "inbox:deadworker") == 1
        assert r.zcard(base + "idle") == 0
    async with app:  # a live worker: the stall check recovers the job, then it runs
        assert await handle.wait_for(30) == "x"
    with server.client() as r:
        recovered = [
            e[1]
            for e in r.xrange(base + "events")
            if e[1].get(b"jobId") == handle.id.encode() and e[1][b"event"] == b"stalled"
        ]
        assert recovered and recovered[0][b"action"] == b"recovered"
    await app.close()


async def test_a_job_handed_to_a_dropped_wait_is_taken_back(server: RedisServer) -> None:
    """A wait cancelled after it registered (a worker stopping): the job handed to it lands
    in the inbox, and take_handoffs returns it, claimed, and clears the registration."""
    prefix = "ho" + uuid.uuid4().hex[:6]
    app = taskora.App(server.url, prefix=prefix)
    noop = app.task("noop")(lambda data: None)
    await app.backend.connect()
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    base = _base(prefix, "noop")
    options = ClaimOptions(lock_ttl_ms=30_000)
    wait = asyncio.ensure_future(backend.wait_for_work("noop", 5.0, 1, options, "me"))
    for _ in range(500):  # until the registration reached Redis (bounded)
        if await backend.client.execute("ZCARD", base + "idle") == 1:
            break
        await asyncio.sleep(0.01)
    wait.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wait
    handle = noop.dispatch(None)  # the registration is still there: handed off
    await handle
    assert await handle.get_state() == "active"
    taken = await backend.take_handoffs("noop")
    assert [job.id for job in taken] == [handle.id]
    job = taken[0]
    assert job.token.startswith("me:") and not job.reserved and job.attempt == 1
    data: Any = job.data  # bytes, as a claim's reply gives it
    assert data == b"null"
    with server.client() as r:
        assert r.get(base + handle.id + ":lock") == job.token.encode()
        assert r.exists(base + "idle", base + "inbox:me") == 0
    assert await backend.take_handoffs("noop") == ()
    await app.close()


async def test_a_stopped_worker_leaves_no_registration(server: RedisServer) -> None:
    """A worker stopping while idle drops its wait and its registration with it: a job
    dispatched right after waits in the queue for the next worker, not in a dead inbox."""
    prefix = "ho" + uuid.uuid4().hex[:6]
    worker = taskora.App(server.url, prefix=prefix)
    producer = taskora.App(server.url, prefix=prefix)
    for app in (worker, producer):
        app.task("echo", concurrency=1)(lambda data: data)
    echo = producer.tasks["echo"]
    base = _base(prefix, "echo")
    async with worker:
        assert await echo.dispatch(1).wait_for(20) == 1
        for _ in range(500):  # until the worker's next wait registered it (bounded)
            with server.client() as r:
                if r.zcard(base + "idle") == 1:
                    break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the idle worker never registered")
    with server.client() as r:
        assert r.zcard(base + "idle") == 0
    handle = echo.dispatch(2)
    await handle
    assert await handle.get_state() == "waiting"
    async with worker:
        assert await handle.wait_for(20) == 2
    await producer.close()


async def test_jobs_behind_a_handed_off_one_come_in_the_same_wake_up(
    server: RedisServer,
) -> None:
    """Five jobs dispatched together to an idle worker with five slots: the first is handed
    off, the other four queue behind it, and the claim queued behind the same wake-up takes
    them: no second wait is sent before all five run (the handlers wait until they do)."""
    prefix = "ho" + uuid.uuid4().hex[:6]
    worker = taskora.App(server.url, prefix=prefix)
    producer = taskora.App(server.url, prefix=prefix)
    running = 0
    all_in = asyncio.Event()
    writes: list[int] = []

    @worker.task("burst", concurrency=5)
    async def burst(data: int) -> int:
        nonlocal running
        if data == 0:  # the warm-up
            return 0
        running += 1
        if running == 5:
            writes.append(_block_writes(worker, "burst"))
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 20)
        return data

    producer.task("burst", concurrency=5)(lambda data: data)
    task = producer.tasks["burst"]
    base = _base(prefix, "burst")
    async with worker:
        await task.dispatch(0).wait_for(20)
        for _ in range(500):  # until the worker's next wait registered it (bounded)
            with server.client() as r:
                if r.zcard(base + "idle") == 1:
                    break
            await asyncio.sleep(0.01)
        writes.append(_block_writes(worker, "burst"))
        handles = task.dispatch_many([{"data": i} for i in range(1, 6)])
        await asyncio.wait_for(all_in.wait(), 20)
        assert writes[1] == writes[0]  # no second wait was sent for the four
        assert [await h.wait_for(20) for h in handles] == [1, 2, 3, 4, 5]
    await producer.close()
