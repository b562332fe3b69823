"""Events: task.on / app.on, on both backends, delivered from the per-task events streams."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

import taskora
from taskora.events import (
    ActiveEvent,
    CancelledEvent,
    CompletedEvent,
    DelayedEvent,
    FailedEvent,
    ProgressEvent,
    RetryingEvent,
    StalledEvent,
    WaitingEvent,
    WorkerEvent,
)
from tests.conftest import AppFactory, wait_until

Recorded = list[tuple[str, Any]]


def record(task: taskora.Task[Any, Any], *names: str) -> Recorded:
    seen: Recorded = []
    for name in names:
        task.on(name, lambda e, n=name: seen.append((n, e)))
    return seen


def kinds(seen: Recorded, job_id: str | None = None) -> list[str]:
    return [n for n, e in seen if job_id is None or e.id == job_id]


ALL = ("waiting", "delayed", "active", "progress", "completed", "failed", "retrying", "cancelled")


async def test_completed_with_result_duration_attempt_and_order(make_app: AppFactory) -> None:
    app = make_app()

    @app.task("evt")
    async def evt(data: int, ctx: taskora.Context) -> dict[str, int]:
        await ctx.progress(10)
        await ctx.progress({"pct": 90})
        await asyncio.sleep(0.02)
        return {"double": data * 2}

    seen = record(evt, *ALL)
    await app.start()
    job = await evt.dispatch(21)
    await wait_until(lambda: "completed" in kinds(seen, job))
    assert kinds(seen, job) == ["waiting", "active", "progress", "progress", "completed"]
    by = {n: e for n, e in seen if e.id == job}
    done = by["completed"]
    assert isinstance(done, CompletedEvent)
    assert done.result == {"double": 42} and done.attempt == 1 and done.task == "evt"
    assert 0.015 <= done.duration < 10
    progress = [e for n, e in seen if n == "progress"]
    assert all(isinstance(e, ProgressEvent) for e in progress)
    assert [e.progress for e in progress] == [10, {"pct": 90}]
    assert isinstance(by["active"], ActiveEvent) and by["active"].attempt == 1
    assert isinstance(by["waiting"], WaitingEvent)
    with pytest.raises(dataclass_frozen_error()):
        done.result = 1  # type: ignore[misc]


def dataclass_frozen_error() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


async def test_retry_gives_failed_will_retry_then_retrying(make_app: AppFactory) -> None:
    app = make_app()
    calls = 0

    @app.task("flaky", retry=taskora.Retry(attempts=2, delay="10ms", jitter=False))
    async def flaky(data: None) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("first try fails")
        return "ok"

    seen = record(flaky, *ALL)
    await app.start()
    job = await flaky.dispatch()
    await wait_until(lambda: "completed" in kinds(seen, job))
    assert kinds(seen, job) == [
        "waiting",
        "active",
        "failed",
        "retrying",
        "active",
        "completed",
    ]
    failed = next(e for n, e in seen if n == "failed")
    retrying = next(e for n, e in seen if n == "retrying")
    assert isinstance(failed, FailedEvent) and failed.will_retry is True
    assert failed.attempt == 2 and "first try fails" in (failed.error or "")
    assert isinstance(retrying, RetryingEvent) and retrying.attempt == 2
    assert isinstance(retrying.next_attempt, datetime)
    assert retrying.next_attempt.tzinfo is not None
    assert "first try fails" in (retrying.error or "")
    completed = next(e for n, e in seen if n == "completed")
    assert completed.attempt == 2


async def test_permanent_failure_and_app_events(make_app: AppFactory) -> None:
    app = make_app()

    @app.task("boom")
    async def boom(data: None) -> None:
        raise ValueError("no good")

    seen = record(boom, *ALL)
    app_seen: Recorded = []
    app.on("task:failed", lambda e: app_seen.append(("task:failed", e)))
    app.on("task:active", lambda e: app_seen.append(("task:active", e)))
    app.on("worker:ready", lambda e: app_seen.append(("worker:ready", e)))
    await app.start()
    job = await boom.dispatch()
    await wait_until(lambda: "failed" in kinds(seen, job))
    await wait_until(lambda: any(n == "task:failed" for n, _ in app_seen))
    assert kinds(seen, job) == ["waiting", "active", "failed"]
    failed = next(e for n, e in seen if n == "failed")
    assert isinstance(failed, FailedEvent)
    assert failed.will_retry is False and failed.attempt == 1 and "no good" in (failed.error or "")
    assert [n for n, _ in app_seen] == ["worker:ready", "task:active", "task:failed"]
    ready = app_seen[0][1]
    assert isinstance(ready, WorkerEvent) and ready.tasks == ("boom",)
    app_failed = app_seen[2][1]
    assert app_failed.task == "boom" and app_failed.id == job


async def test_worker_closing(make_app: AppFactory) -> None:
    app = make_app()

    @app.task("w")
    async def w(data: None) -> None:
        return None

    seen: list[WorkerEvent] = []
    app.on("worker:closing", seen.append)
    await app.start()
    await app.close()
    assert [(e.name, e.tasks) for e in seen] == [("worker:closing", ("w",))]


async def test_delayed_cancelled_and_unsubscribe(make_app: AppFactory) -> None:
    app = make_app()

    @app.task("later")
    async def later(data: None) -> None:
        return None

    seen = record(later, *ALL)
    stop_waiting = later.on("waiting", lambda e: seen.append(("waiting-2", e)))
    await app.start()
    job = await later.dispatch(delay=600)
    await later.handle(job).cancel(reason="changed my mind")
    await wait_until(lambda: "cancelled" in kinds(seen, job))
    assert kinds(seen, job) == ["delayed", "cancelled"]
    delayed, cancelled = (e for _, e in seen)
    assert isinstance(delayed, DelayedEvent)
    assert isinstance(cancelled, CancelledEvent) and cancelled.reason == "changed my mind"
    stop_waiting()
    stop_waiting()  # twice is harmless
    other = await later.dispatch(delay=600)
    await later.handle(other).cancel()
    await wait_until(lambda: "cancelled" in kinds(seen, other))
    assert kinds(seen, other) == ["delayed", "cancelled"]
    assert next(e for n, e in seen if e.id == other and n == "cancelled").reason is None
    assert "waiting-2" not in kinds(seen)


async def test_unknown_event_names_raise_value_error(make_app: AppFactory) -> None:
    app = make_app()

    @app.task("x")
    async def x(data: None) -> None:
        return None

    for bad in ("complete", "task:completed", "", "promoted"):
        with pytest.raises(ValueError, match="unknown event"):
            x.on(bad, print)
    for bad in ("completed", "task:nope", "worker:started", "task:"):
        with pytest.raises(ValueError, match="unknown event"):
            app.on(bad, print)


async def test_raising_listener_is_logged_and_delivery_goes_on(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()

    @app.task("r")
    async def r(data: int) -> int:
        return data

    def bad(event: CompletedEvent) -> None:
        raise RuntimeError(f"listener bug {event.result}")

    async def bad_async(event: CompletedEvent) -> None:
        raise RuntimeError("async listener bug")

    r.on("completed", bad)
    r.on("completed", bad_async)
    seen = record(r, "completed")
    await app.start()
    with caplog.at_level(logging.ERROR, logger="taskora.events"):
        ids = [await r.dispatch(i) for i in range(3)]
        await wait_until(lambda: len(seen) == 3)
        await wait_until(lambda: len(caplog.records) == 6)
    assert [e.id for _, e in seen] == ids
    errors = sorted(str(rec.exc_info[1]) for rec in caplog.records if rec.exc_info)
    assert errors == ["async listener bug"] * 3 + [f"listener bug {i}" for i in range(3)]


async def test_slow_listener_blocks_neither_jobs_nor_other_listeners(
    make_app: AppFactory,
) -> None:
    app = make_app()

    @app.task("s", concurrency=5)
    async def s(data: int) -> int:
        return data

    gate = asyncio.Event()
    slow_seen: list[int] = []

    async def slow(event: CompletedEvent) -> None:
        await gate.wait()
        slow_seen.append(event.result)

    s.on("completed", slow)
    fast = record(s, "completed")
    await app.start()
    handles = s.dispatch_many([{"data": i} for i in range(50)])
    assert sorted([await h.wait_for(20) for h in handles]) == list(range(50))
    await wait_until(lambda: len(fast) == 50)
    assert slow_seen == []
    gate.set()
    await wait_until(lambda: len(slow_seen) == 50)


async def test_listener_added_after_start_is_served(make_app: AppFactory) -> None:
    app = make_app()

    @app.task("a")
    async def a(data: int) -> int:
        return data

    @app.task("b")
    async def b(data: int) -> int:
        return data

    first = record(a, "completed")
    await app.start()
    await a.dispatch(1)
    await wait_until(lambda: len(first) == 1)
    later = record(b, "completed")  # a task the reader did not watch yet
    later_a = record(a, "completed")
    job_b = await b.dispatch(2)
    job_a = await a.dispatch(3)
    await wait_until(lambda: len(later) == 1 and len(later_a) == 1)
    assert later[0][1].id == job_b and later_a[0][1].id == job_a


async def test_stall_recovered_then_failed(make_app: AppFactory, is_redis: bool) -> None:
    """A job whose worker vanished: stalled(recovered), then after max_count stalled(failed)
    followed by failed."""
    app = make_app()

    @app.task("st", stall=taskora.Stall(interval="50ms", max_count=1), timeout=None)
    async def st(data: None) -> None:
        await asyncio.Event().wait()

    seen = record(st, "stalled", "failed", "active")
    backend = app.backend
    job = await st.dispatch()
    from taskora.backends.base import ClaimOptions

    options = ClaimOptions(lock_ttl_ms=30)
    await backend.wait_for_work("st", 1.0, 1, options, "dead")  # a worker that then dies
    await asyncio.sleep(0.06)
    await backend.stalled_check("st", 1)  # marks
    await asyncio.sleep(0.06)
    await backend.stalled_check("st", 1)  # recovers (count 1)
    await backend.wait_for_work("st", 1.0, 1, options, "dead")
    await backend.stalled_check("st", 1)
    await asyncio.sleep(0.06)
    await backend.stalled_check("st", 1)  # count 2 > 1: fails
    await wait_until(lambda: "failed" in kinds(seen, job))
    events = [(n, getattr(e, "action", None), getattr(e, "count", None)) for n, e in seen]
    assert events == [
        ("active", None, None),
        ("stalled", "recovered", 1),
        ("active", None, None),
        ("stalled", "failed", 2),
        ("failed", None, None),
    ]
    stalled = next(e for n, e in seen if n == "stalled")
    assert isinstance(stalled, StalledEvent)
    failed = next(e for n, e in seen if n == "failed")
    assert "stalled" in (failed.error or "")


async def test_both_backends_write_the_same_stream(make_app: AppFactory, is_redis: bool) -> None:
    """The memory backend's events log holds the entries the Lua scripts write."""
    app = make_app()

    @app.task("same", retry=taskora.Retry(attempts=2, delay="10ms", jitter=False))
    async def same(data: int, ctx: taskora.Context) -> int:
        await ctx.progress(5)
        if ctx.attempt == 1:
            raise RuntimeError("again")
        return data

    async with app:
        job = await same.dispatch(1)
        assert await same.handle(job).wait_for(20) == 1
    if is_redis:
        r = aioredis.Redis.from_url(app.backend.url, decode_responses=True)  # type: ignore[attr-defined]
        try:
            entries = [f for _, f in await r.xrange(app.backend.keys("same").events)]  # type: ignore[attr-defined]
        finally:
            await r.aclose()
    else:
        entries = [f for _, f in app.backend._t("same").events]  # type: ignore[attr-defined]
    shape = [(f["event"], sorted(k for k in f if k not in ("event", "jobId"))) for f in entries]
    assert shape == [
        ("waiting", []),
        ("active", []),
        ("progress", ["value"]),
        ("retrying", ["attempt", "error", "nextAttemptAt"]),
        ("promoted", []),
        ("active", []),
        ("progress", ["value"]),
        ("completed", []),
    ]


async def test_many_events_from_four_tasks_reach_three_listeners(make_app: AppFactory) -> None:
    """A smaller scale of 10,000 events/s from 4 tasks to 3 listeners: none lost."""
    app = make_app()
    tasks = []
    for i in range(4):

        async def handler(data: int) -> int:
            return data

        tasks.append(app.task(f"many{i}", concurrency=20)(handler))
    listeners: list[list[str]] = [[], [], []]
    for seen in listeners:
        for t in tasks:
            t.on("completed", lambda e, s=seen: s.append(e.id))
    await app.start()
    handles = []
    for t in tasks:
        handles += t.dispatch_many([{"data": i} for i in range(250)])
    ids = [await h for h in handles]
    for h in handles:
        await h.wait_for(30)
    for seen in listeners:
        await wait_until(lambda s=seen: len(s) >= 1000)
    await asyncio.sleep(0.05)
    for seen in listeners:
        assert sorted(seen) == sorted(ids)


async def test_async_listener_over_its_buffer_drops_and_logs_the_count(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import taskora.events

    monkeypatch.setattr(taskora.events, "LISTENER_BUFFER", 5)
    app = make_app()

    @app.task("buf", concurrency=10)
    async def buf(data: int) -> int:
        return data

    gate = asyncio.Event()
    slow_seen: list[int] = []

    async def slow(event: CompletedEvent) -> None:
        await gate.wait()
        slow_seen.append(event.result)

    buf.on("completed", slow)
    fast = record(buf, "completed")
    await app.start()
    with caplog.at_level(logging.WARNING, logger="taskora.events"):
        handles = buf.dispatch_many([{"data": i} for i in range(30)])
        for h in handles:
            await h.wait_for(20)
        await wait_until(lambda: len(fast) == 30)
        gate.set()
        await wait_until(lambda: "dropped" in caplog.text)
    # five waited in the buffer (plus the one in hand, if the listener had started on it
    # before the rest arrived); the others were dropped and counted
    await asyncio.sleep(0.05)
    assert len(slow_seen) in (5, 6)
    assert "too slow" in caplog.text and f"dropped {30 - len(slow_seen)} events" in caplog.text


async def test_app_listener_hears_tasks_registered_later(make_app: AppFactory) -> None:
    app = make_app()

    @app.task("early")
    async def early(data: int) -> int:
        return data

    seen: list[Any] = []
    app.on("task:waiting", seen.append)
    await app.start()
    await early.dispatch(1)
    await wait_until(lambda: len(seen) == 1)

    @app.task("late")
    async def late(data: int) -> int:
        return data

    job = await late.dispatch(1)
    await wait_until(lambda: len(seen) == 2)
    assert (seen[1].task, seen[1].id) == ("late", job)


def test_a_new_event_loop_neither_loses_nor_repeats_events(backend_url: str, prefix: str) -> None:
    """A script may call asyncio.run twice with one App (the first loop ends unclosed)."""
    app = taskora.App(backend_url, prefix=prefix)

    @app.task("loops")
    async def loops(data: int) -> int:
        return data

    seen: list[str] = []
    loops.on("waiting", lambda e: seen.append(e.id))

    async def once(close: bool) -> str:
        job = await loops.dispatch(1)
        await wait_until(lambda: job in seen)
        await asyncio.sleep(0.05)
        if close:
            await app.close()
        return job

    first = asyncio.run(once(close=False))
    second = asyncio.run(once(close=True))
    assert seen == [first, second]
