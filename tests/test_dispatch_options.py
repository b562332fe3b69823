"""Dispatch options contract: delay, priority, ttl, concurrency_key/limit, singleton, bad input.

Every test runs on both backends (memory and a real redis-server) unless marked otherwise.
Waits are for events (a result, a state, the backend clock passing a time) with generous
deadlines, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis

import taskora
from taskora.backends.base import ClaimOptions, NewJob
from tests.conftest import AppFactory, wait_until
from tests.stored import Store, _base, _connected, backend_now_ms, clock_passes, fields

# -- helpers ---------------------------------------------------------------------------


async def next_ms(app: taskora.App) -> None:
    """Wait for the backend clock to tick, so the next dispatch gets a later timestamp."""
    backend = await _connected(app)
    start = backend.now_ms()
    await wait_until(lambda: backend.now_ms() > start + 1, interval=0.001)


class Tracker:
    """Counts handlers running at once, per key, inside the handlers themselves."""

    def __init__(self) -> None:
        self.now: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.order: list[tuple[str, Any]] = []  # (key, item) in start order

    async def run(self, key: str, item: Any, hold: float = 0.05) -> None:
        self.now[key] += 1
        self.peak[key] = max(self.peak[key], self.now[key])
        self.order.append((key, item))
        try:
            await asyncio.sleep(hold)  # overlap window for other jobs, not a correctness wait
        finally:
            self.now[key] -= 1


# -- delay ---------------------------------------------------------------------------------


async def test_delayed_job_is_delayed_until_due(make_app: AppFactory) -> None:
    app = make_app()
    ran: list[float] = []

    @app.task()
    async def later(data: None) -> str:
        ran.append(time.monotonic())
        return "done"

    async with app:
        start = time.monotonic()
        handle = later.dispatch(None, delay=0.6)
        await handle
        assert await handle.get_state() == "delayed"
        stored = await fields(app, "later", handle.id)
        assert stored["delay"] == "600"
        assert await handle.wait_for(20) == "done"
    assert ran[0] - start >= 0.55


async def _claim_when_ready(backend: Any, task: str, timeout: float) -> tuple[list[str], int]:
    """Claim like a worker does: try, else block for work; returns ids and blocking calls."""
    options = ClaimOptions(lock_ttl_ms=30_000)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    blocks = 0
    while loop.time() < deadline:
        report = await backend.finish_and_claim(task, [], 1, options, "w")
        if report.claimed:
            return [c.id for c in report.claimed], blocks
        blocks += 1
        claimed = await backend.wait_for_work(task, 15.0, 1, options, "w")
        if claimed:  # claimed the moment it fell due
            return [c.id for c in claimed], blocks
    return [], blocks


async def test_blocked_worker_wakes_when_the_earliest_delayed_job_falls_due(
    make_app: AppFactory,
) -> None:
    app = make_app()

    @app.task()
    async def later(data: None) -> None:
        return None

    backend = await _connected(app)
    late, soon = str(uuid.uuid4()), str(uuid.uuid4())
    await backend.enqueue("later", [NewJob(late, "null", delay_ms=3_600_000)])
    loop = asyncio.get_running_loop()
    start = loop.time()
    claimer = asyncio.create_task(_claim_when_ready(backend, "later", 30))
    await asyncio.sleep(0)  # let it block on the hour-long job first
    await backend.enqueue("later", [NewJob(soon, "null", delay_ms=800)])
    claimed, blocks = await claimer
    elapsed = loop.time() - start
    assert claimed == [soon]
    # woken at the due time, not at the end of a 15 s block, and without spinning
    assert 0.6 <= elapsed < 10, elapsed
    assert blocks <= 6


async def test_delay_is_measured_on_the_redis_server_clock(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = taskora.App(redis_url, prefix=prefix)
    rdb = aioredis.Redis.from_url(redis_url)

    @app.task()
    async def later(data: None) -> None:
        return None

    try:
        await app._connected_backend()
        before = await rdb.time()
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 7200)  # this host runs 2 h ahead
        handle = later.dispatch(None, delay=5)
        await handle
        monkeypatch.setattr(time, "time", real)
        after = await rdb.time()
        low = before[0] * 1000 + before[1] // 1000
        high = after[0] * 1000 + after[1] // 1000
        score = await rdb.zscore(_base(app, "later") + "delayed", handle.id)
        stored = await fields(app, "later", handle.id)
        assert low <= int(stored["ts"]) <= high
        assert score is not None and low + 5000 <= score <= high + 5000
    finally:
        await app.close()
        await rdb.aclose()


async def test_memory_backend_due_times_follow_its_clock() -> None:
    now = [1_800_000_000_000]
    backend = taskora.MemoryBackend(clock=lambda: now[0])
    job = str(uuid.uuid4())
    await backend.enqueue("t", [NewJob(job, "1", delay_ms=10_000)])
    options = ClaimOptions(lock_ttl_ms=30_000)
    assert (await backend.finish_and_claim("t", [], 1, options, "w")).claimed == ()
    now[0] += 9_999
    assert (await backend.finish_and_claim("t", [], 1, options, "w")).claimed == ()
    now[0] += 1
    claimed = (await backend.finish_and_claim("t", [], 1, options, "w")).claimed
    assert [c.id for c in claimed] == [job]


# -- priority ------------------------------------------------------------------------------


async def test_priority_bands_claim_order(make_app: AppFactory) -> None:
    app = make_app()
    order: list[tuple[int, int]] = []

    @app.task(concurrency=1)
    async def record(data: list[int]) -> None:
        order.append((data[0], data[1]))

    priorities = [0, 1, 5, 10, 100, 5, 0, 100, 1, 10, 0, 5]
    handles = []
    for index, priority in enumerate(priorities):
        handle = record.dispatch([priority, index], priority=priority)
        await handle
        handles.append(handle)
        await next_ms(app)  # distinct dispatch times: the in-band order is defined
    async with app:
        await asyncio.gather(*(h.wait_for(20) for h in handles))
    expected = sorted(((p, i) for i, p in enumerate(priorities)), key=lambda x: (-x[0], x[1]))
    assert order == expected


async def test_promoted_delayed_job_outranks_waiting_lower_priority(make_app: AppFactory) -> None:
    app = make_app()
    order: list[str] = []

    @app.task(concurrency=1)
    async def record(data: str) -> None:
        order.append(data)

    plain = [record.dispatch(f"p0-{i}") for i in range(3)]
    urgent = record.dispatch("p10-delayed", priority=10, delay=0.3)
    await asyncio.gather(*plain, urgent)
    stored = await fields(app, "record", urgent.id)
    await clock_passes(app, int(stored["ts"]) + 300)
    async with app:
        await asyncio.gather(*(h.wait_for(20) for h in [*plain, urgent]))
    assert order == ["p10-delayed", "p0-0", "p0-1", "p0-2"]


async def _retrying(handle: taskora.ResultHandle[Any]) -> bool:
    """Its failed attempt is recorded (waiting: already promoted, its retry due)."""
    return await handle.get_state() in (taskora.JobState.RETRYING, taskora.JobState.WAITING)


async def test_retried_job_keeps_its_priority(make_app: AppFactory) -> None:
    app = make_app()
    order: list[tuple[str, int]] = []
    retry_ms = 300

    @app.task(
        concurrency=1, retry=taskora.Retry(attempts=2, backoff="fixed", delay=0.3, jitter=False)
    )
    async def record(data: str, ctx: taskora.Context) -> str:
        order.append((data, ctx.attempt))
        if data == "urgent" and ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        if data == "gate":  # hold the only slot until the retry is due: its failure is
            # recorded (due = that moment + retry_ms, on the backend's clock) before now
            await wait_until(lambda: _retrying(urgent))
            await clock_passes(app, await backend_now_ms(app) + retry_ms)
        return data

    urgent = record.dispatch("urgent", priority=10)
    gate = record.dispatch("gate", priority=5)
    rest = [record.dispatch(f"p0-{i}") for i in range(2)]
    handles = [urgent, gate, *rest]
    await asyncio.gather(*handles)
    async with app:
        await asyncio.gather(*(h.wait_for(20) for h in handles))
    assert order == [("urgent", 1), ("gate", 1), ("urgent", 2), ("p0-0", 1), ("p0-1", 1)]


# -- ttl -----------------------------------------------------------------------------------


async def test_ttl_passed_while_no_worker_ran_ends_expired(make_app: AppFactory) -> None:
    app = make_app()
    runs: list[str] = []

    @app.task()
    async def job(data: str) -> str:
        runs.append(data)
        return data

    short = job.dispatch("short", ttl=0.3)
    long = job.dispatch("long", ttl="1h")
    await asyncio.gather(short, long)
    stored = await fields(app, "job", short.id)
    assert int(stored["expireAt"]) == int(stored["ts"]) + 300
    waiter = asyncio.create_task(short.wait_for(30))
    await clock_passes(app, int(stored["expireAt"]))
    async with app:
        assert await long.wait_for(20) == "long"
        with pytest.raises(taskora.JobExpiredError):
            await waiter
        with pytest.raises(taskora.JobExpiredError):
            await short.wait_for(20)
    assert runs == ["long"]
    assert await short.get_state() == "expired"
    assert (await app.counts("job"))["expired"] == 1


async def test_task_ttl_is_the_default_and_dispatch_ttl_overrides_it(
    make_app: AppFactory,
) -> None:
    app = make_app()
    runs: list[str] = []

    @app.task(ttl=0.3)
    async def job(data: str) -> str:
        runs.append(data)
        return data

    default = job.dispatch("default")
    override = job.dispatch("override", ttl="1h")
    await asyncio.gather(default, override)
    default_fields = await fields(app, "job", default.id)
    override_fields = await fields(app, "job", override.id)
    assert int(default_fields["expireAt"]) == int(default_fields["ts"]) + 300
    assert int(override_fields["expireAt"]) == int(override_fields["ts"]) + 3_600_000
    await clock_passes(app, int(default_fields["expireAt"]))
    async with app:
        assert await override.wait_for(20) == "override"
        with pytest.raises(taskora.JobExpiredError):
            await default.wait_for(20)
    assert runs == ["override"]


async def test_delayed_job_past_its_ttl_expires_when_due(make_app: AppFactory) -> None:
    app = make_app()
    runs: list[str] = []

    @app.task()
    async def job(data: str) -> str:
        runs.append(data)
        return data

    async with app:
        handle = job.dispatch("late", delay=0.4, ttl=0.1)
        with pytest.raises(taskora.JobExpiredError):
            await handle.wait_for(20)
        assert await job.dispatch("fresh").wait_for(20) == "fresh"
    assert runs == ["fresh"]


async def test_waiter_of_an_expired_job_ends_without_any_worker(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def job(data: None) -> None:
        return None

    handle = job.dispatch(None, ttl=0.2)
    await handle
    with pytest.raises(taskora.JobExpiredError):
        await handle.wait_for(8)


# -- concurrency key -------------------------------------------------------------------------


async def test_concurrency_limit_per_key_is_never_exceeded(
    make_app: AppFactory, store: Store
) -> None:
    app = make_app()
    tracker = Tracker()

    @app.task(concurrency=10)
    async def work(data: list[Any]) -> None:
        await tracker.run(data[0], data[1])

    handles = [work.dispatch(["a", i], concurrency_key="a", concurrency_limit=2) for i in range(8)]
    handles += [work.dispatch(["b", i], concurrency_key="b", concurrency_limit=3) for i in range(8)]
    handles += [work.dispatch(["free", i]) for i in range(6)]
    await asyncio.gather(*handles)
    async with app:
        await asyncio.gather(*(h.wait_for(30) for h in handles))
    assert tracker.peak["a"] == 2
    assert tracker.peak["b"] == 3
    assert tracker.peak["free"] > 3  # unkeyed jobs ran alongside
    assert await store.conc_counters(app, "work") == {}  # no slot leaked


async def test_concurrency_limit_holds_across_workers(make_app: AppFactory, store: Store) -> None:
    tracker = Tracker()
    apps = [make_app(), make_app()]  # one keyspace, two workers
    tasks = []
    for app in apps:

        @app.task("work", concurrency=4)
        async def work(data: int) -> None:
            await tracker.run("k", data)

        tasks.append(work)
    handles = [tasks[0].dispatch(i, concurrency_key="k", concurrency_limit=2) for i in range(12)]
    await asyncio.gather(*handles)
    async with apps[0], apps[1]:
        await asyncio.gather(*(h.wait_for(30) for h in handles))
    assert tracker.peak["k"] == 2
    assert await store.conc_counters(apps[0], "work") == {}


async def test_a_job_blocked_by_its_key_does_not_block_jobs_behind_it(
    make_app: AppFactory,
) -> None:
    app = make_app()
    release = asyncio.Event()
    started: list[str] = []
    first_started = asyncio.Event()

    @app.task(concurrency=3)
    async def work(data: str) -> str:
        started.append(data)
        if data == "x1":
            first_started.set()
            await release.wait()
        return data

    async with app:
        try:
            x1 = work.dispatch("x1", concurrency_key="x", concurrency_limit=1)
            await asyncio.wait_for(first_started.wait(), 20)
            x2 = work.dispatch("x2", concurrency_key="x", concurrency_limit=1)
            await x2
            free = work.dispatch("free")
            assert await free.wait_for(20) == "free"  # ran past the blocked x2
            assert await x2.get_state() == "waiting"
            assert "x2" not in started
            release.set()
            assert await x1.wait_for(20) == "x1"
            assert await x2.wait_for(20) == "x2"
        finally:
            release.set()
    assert started == ["x1", "free", "x2"]


async def test_concurrency_slot_released_on_failure_retry_and_cancel(
    make_app: AppFactory, store: Store
) -> None:
    app = make_app()
    hold = asyncio.Event()
    holding = asyncio.Event()

    @app.task(concurrency=4, retry=taskora.Retry(attempts=2, delay="1h", jitter=False))
    async def work(data: str, ctx: taskora.Context) -> str:
        if data == "retry" and ctx.attempt == 1:
            raise RuntimeError("later")
        if data == "hold":
            holding.set()
            await hold.wait()
        return data

    def keyed(data: str) -> taskora.ResultHandle[Any]:
        return work.dispatch(data, concurrency_key="k", concurrency_limit=1)

    async with app:
        try:
            retrying = keyed("retry")
            await wait_until(lambda: _state_is(retrying, "retrying"))
            assert await keyed("after-retry").wait_for(20) == "after-retry"
            held = keyed("hold")
            await asyncio.wait_for(holding.wait(), 20)
            waiting = keyed("after-cancel")
            await waiting
            assert await waiting.get_state() == "waiting"
            await held.cancel(reason="free the slot")
            with pytest.raises(taskora.JobCancelledError):
                await held.wait_for(20)
            assert await waiting.wait_for(20) == "after-cancel"
            assert await store.conc_counters(app, "work") == {}
            await retrying.cancel()
        finally:
            hold.set()
    assert await store.conc_counters(app, "work") == {}


async def test_concurrency_slot_released_on_permanent_failure(
    make_app: AppFactory, store: Store
) -> None:
    app = make_app()

    @app.task(concurrency=2)
    async def work(data: str) -> str:
        if data == "fail":
            raise ValueError("broken")
        return data

    async with app:
        failing = work.dispatch("fail", concurrency_key="k", concurrency_limit=1)
        with pytest.raises(taskora.JobFailedError):
            await failing.wait_for(20)
        after = work.dispatch("after", concurrency_key="k", concurrency_limit=1)
        assert await after.wait_for(20) == "after"
    assert await store.conc_counters(app, "work") == {}


async def _state_is(handle: taskora.ResultHandle[Any], state: str) -> bool:
    return await handle.get_state() == state


async def test_concurrency_limit_one_serializes_a_key(
    make_app: AppFactory,
) -> None:
    app = make_app()
    tracker = Tracker()

    @app.task(concurrency=5)
    async def work(data: list[Any]) -> None:
        await tracker.run(data[0], data[1], hold=0.02)

    handles = []
    for i in range(8):
        handles.append(work.dispatch(["s", i], concurrency_key="user:1", concurrency_limit=1))
        handles.append(work.dispatch(["other", i]))
    await asyncio.gather(*handles)
    async with app:
        await asyncio.gather(*(h.wait_for(30) for h in handles))
    assert tracker.peak["s"] == 1
    assert tracker.peak["other"] > 1  # the rest of the task ran concurrently meanwhile
    assert sorted(item for key, item in tracker.order if key == "s") == list(range(8))


async def test_concurrency_limit_defaults(make_app: AppFactory) -> None:
    app = make_app()

    @app.task(concurrency_limit=2)
    async def limited(data: None) -> None:
        return None

    @app.task()
    async def plain(data: None) -> None:
        return None

    a = limited.dispatch(None, concurrency_key="k")
    b = limited.dispatch(None, concurrency_key="k", concurrency_limit=5)
    c = plain.dispatch(None, concurrency_key="k")
    d = plain.dispatch(None)
    await asyncio.gather(a, b, c, d)
    assert (await fields(app, "limited", a.id))["concurrencyLimit"] == "2"
    assert (await fields(app, "limited", b.id))["concurrencyLimit"] == "5"
    assert (await fields(app, "plain", c.id))["concurrencyLimit"] == "1"
    assert "concurrencyKey" not in await fields(app, "plain", d.id)


# -- singleton -----------------------------------------------------------------------------


async def test_singleton_runs_one_job_at_a_time_across_workers(make_app: AppFactory) -> None:
    tracker = Tracker()
    apps = [make_app(), make_app()]
    tasks = []
    for app in apps:

        @app.task("only", singleton=True, concurrency=1)
        async def only(data: int) -> int:
            await tracker.run("only", data)
            return data

        tasks.append(only)
    handles = [tasks[0].dispatch(i) for i in range(6)]
    await asyncio.gather(*handles)
    async with apps[0], apps[1]:
        assert await asyncio.gather(*(h.wait_for(30) for h in handles)) == list(range(6))
    assert tracker.peak["only"] == 1


async def test_singleton_holds_with_worker_concurrency_above_one(make_app: AppFactory) -> None:
    app = make_app()
    tracker = Tracker()

    @app.task(singleton=True, concurrency=4)
    async def only(data: int) -> int:
        await tracker.run("only", data)
        return data

    handles = [only.dispatch(i) for i in range(6)]
    await asyncio.gather(*handles)
    async with app:
        await asyncio.gather(*(h.wait_for(30) for h in handles))
    assert tracker.peak["only"] == 1


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"delay": -1}, "delay"),
        ({"delay": float("nan")}, "delay"),
        ({"delay": float("inf")}, "delay"),
        ({"delay": float("-inf")}, "delay"),
        ({"delay": "-5s"}, "delay"),
        ({"delay": "soon"}, "delay"),
        ({"delay": True}, "delay"),
        ({"ttl": -1}, "ttl"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": float("nan")}, "ttl"),
        ({"ttl": float("inf")}, "ttl"),
        ({"ttl": "1 fortnight"}, "ttl"),
        ({"priority": 1.5}, "priority"),
        ({"priority": "3"}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": float("nan")}, "priority"),
        ({"priority": -1}, "priority"),
        ({"priority": 1001}, "priority"),
        ({"concurrency_key": "k", "concurrency_limit": 0}, "concurrency_limit"),
        ({"concurrency_key": "k", "concurrency_limit": -2}, "concurrency_limit"),
        ({"concurrency_key": "k", "concurrency_limit": 1.5}, "concurrency_limit"),
        ({"concurrency_limit": 2}, "concurrency_limit"),
        ({"concurrency_key": ""}, "concurrency_key"),
        ({"concurrency_key": 5}, "concurrency_key"),
    ],
)
async def test_bad_dispatch_options_raise_naming_the_option_and_write_nothing(
    make_app: AppFactory, options: dict[str, Any], name: str, store: Store
) -> None:
    app = make_app()

    @app.task()
    async def noop(data: int) -> int:
        return data

    with pytest.raises(ValueError, match=name):
        noop.dispatch(1, **options)
    handles = noop.dispatch_many([{"data": 1, "options": options}])
    with pytest.raises(ValueError, match=name):
        await handles[0]
    await store.assert_nothing_written(app, "noop")


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"ttl": -1}, "ttl"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": float("nan")}, "ttl"),
        ({"concurrency_limit": 0}, "concurrency_limit"),
        ({"concurrency_limit": 1.5}, "concurrency_limit"),
        ({"concurrency": 0}, "concurrency"),
    ],
)
def test_bad_task_options_raise_at_definition(options: dict[str, Any], name: str) -> None:
    app = taskora.App("memory://")
    with pytest.raises(ValueError, match=name):
        app.task("t", **options)(lambda data: None)


async def test_dispatch_many_bad_items_fail_alone(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def noop(data: int) -> int:
        return data

    handles = noop.dispatch_many(
        [
            {"data": 1, "options": {"delay": -1}},
            {"data": 2, "options": {"priority": 2}},
            {"data": 3, "options": {"ttl": float("nan")}},
            {"data": 4, "options": {"concurrency_key": "k", "concurrency_limit": 0}},
            {"data": 5},
        ]
    )
    for index in (0, 2, 3):
        with pytest.raises(ValueError):
            await handles[index]
        assert await handles[index].get_state() is None
    assert await handles[1] == handles[1].id and await handles[4] == handles[4].id
    counts = await app.counts("noop")
    assert counts["waiting"] == 2 and sum(counts.values()) == 2


async def test_concurrency_limit_one_keeps_each_keys_dispatch_order(make_app: AppFactory) -> None:
    """The seed: concurrency_limit=1 is how to get strict per-key ordering."""
    app = make_app()
    started: dict[str, list[int]] = {"a": [], "b": []}

    @app.task(concurrency=4)
    async def work(data: list[Any]) -> None:
        key, n = data
        if key in started:
            started[key].append(n)
        await asyncio.sleep(0.01 if n % 2 else 0.03)

    handles = []
    for n in range(12):
        handles.append(work.dispatch(["a", n], concurrency_key="a", concurrency_limit=1))
        handles.append(work.dispatch(["b", n], concurrency_key="b", concurrency_limit=1))
        handles.append(work.dispatch(["free", n]))
    await asyncio.gather(*handles)
    async with app:
        await asyncio.wait_for(asyncio.gather(*(h.result for h in handles)), 60)
    assert started == {"a": list(range(12)), "b": list(range(12))}
    assert (await app.counts("work"))["waiting"] == 0
