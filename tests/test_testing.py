"""taskora.testing: TestRunner drives an app's tasks in virtual time (docs/design.md#testing)."""

from __future__ import annotations

import time
from typing import Any

import pytest

import taskora
from taskora import App, Collect, Debounce, Retry, Throttle
from taskora.backends.memory import MemoryBackend
from taskora.testing import TestRunner


async def test_execute_retries_with_backoff_without_waiting() -> None:
    app = App("memory://")
    calls: list[int] = []

    @app.task(retry=Retry(attempts=4, backoff="exponential", delay="10m"))
    async def flaky(n: int, ctx: taskora.Context) -> int:
        calls.append(ctx.attempt)
        ctx.log.info("attempt", n=ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("not yet")
        return n * 2

    async with TestRunner(app) as runner:
        start = runner.now_ms
        wall = time.perf_counter()
        execution = await runner.execute(flaky, 21)
        assert time.perf_counter() - wall < 60  # a sanity bound, far above: no 30 m wait
        assert execution.state == "completed"
        assert execution.result == 42
        assert execution.attempts == 3
        assert calls == [1, 2, 3]
        assert [entry["message"] for entry in execution.logs][-1] == "attempt"
        assert runner.now_ms - start >= 10 * 60_000  # virtual time jumped over the backoff


async def test_execute_reports_a_final_failure() -> None:
    app = App("memory://")

    @app.task(retry=Retry(attempts=2, delay="1s"))
    async def broken(_: Any) -> None:
        raise ValueError("boom")

    async with TestRunner(app) as runner:
        execution = await runner.execute(broken, None)
        assert execution.state == "failed"
        assert execution.attempts == 2
        assert execution.error is not None and "boom" in execution.error


async def test_delay_and_ttl_move_with_advance() -> None:
    app = App("memory://")
    seen: list[str] = []

    @app.task
    async def note(text: str) -> None:
        seen.append(text)

    async with TestRunner(app) as runner:
        late = runner.dispatch(note, "late", delay="5m")
        gone = runner.dispatch(note, "gone", delay="10m", ttl="5m")
        await runner.advance("4m")
        assert seen == []
        assert await late.get_state() == "delayed"
        await runner.advance("1m")
        assert seen == ["late"]
        await runner.advance("10m")
        assert seen == ["late"]
        assert await gone.get_state() == "expired"
        assert {j.id: j.state for j in runner.jobs} == {late.id: "completed", gone.id: "expired"}


async def test_debounce_and_throttle_windows() -> None:
    app = App("memory://")
    seen: list[int] = []

    @app.task
    async def save(n: int) -> None:
        seen.append(n)

    async with TestRunner(app) as runner:
        for n in range(3):
            runner.dispatch(save, n, debounce=Debounce("doc", "30s"))
            await runner.advance("10s")
        assert seen == []  # each dispatch pushed the window on
        await runner.advance("30s")
        assert seen == [2]

        seen.clear()
        handles = [runner.dispatch(save, n, throttle=Throttle("t", 2, "1m")) for n in range(3)]
        await runner.run_until_idle()
        assert seen == [0, 1]
        assert [(await h.get_state()) for h in handles][2] is None  # the third was dropped
        await runner.advance("61s")
        runner.dispatch(save, 9, throttle=Throttle("t", 2, "1m"))
        await runner.run_until_idle()
        assert seen == [0, 1, 9]  # a new window


async def test_collect_flushes_by_advance() -> None:
    app = App("memory://")
    batches: list[list[int]] = []

    @app.task(collect=Collect(key="k", delay="2s", max_size=100))
    async def batch(items: list[int]) -> int:
        batches.append(items)
        return len(items)

    async with TestRunner(app) as runner:
        for n in range(3):
            runner.dispatch(batch, n)
        await runner.advance("1s")
        assert batches == []
        await runner.advance("1s")
        assert batches == [[0, 1, 2]]


async def test_a_task_dispatching_another_stays_in_the_runner() -> None:
    app = App("memory://")
    got: list[str] = []

    @app.task
    async def child(text: str) -> None:
        got.append(text)

    @app.task
    async def parent(text: str) -> str:
        await child.dispatch(text.upper(), delay="1h")
        return text

    async with TestRunner(app) as runner:
        execution = await runner.execute(parent, "hi")
        assert execution.result == "hi"
        assert got == []
        await runner.advance("1h")
        assert got == ["HI"]
        assert sorted(j.task for j in runner.jobs) == ["child", "parent"]


async def test_thirty_virtual_days_of_an_every_minute_schedule() -> None:
    app = App("memory://")
    fired = 0

    @app.task(schedule={"every": "1m"})
    async def tick(_: Any) -> None:
        nonlocal fired
        fired += 1

    async with TestRunner(app, start_ms=1_700_000_000_000) as runner:
        await runner.run_until_idle()  # stores the schedule: first fire one minute on
        wall = time.perf_counter()
        await runner.advance("30d")
        took = time.perf_counter() - wall
        print(f"\n30 virtual days, {fired} fires of an every-minute schedule: {took:.2f} s wall")
        assert fired == 30 * 24 * 60


async def test_run_goes_through_validation_middleware_and_inline_retries() -> None:
    app = App("memory://")
    order: list[str] = []

    async def app_mw(ctx: taskora.Context, call_next: Any) -> Any:
        order.append("app")
        return await call_next()

    async def task_mw(ctx: taskora.Context, call_next: Any) -> Any:
        order.append("task")
        return await call_next()

    app.use(app_mw)

    @app.task(middleware=[task_mw], retry=Retry(attempts=3, delay="1h"))
    async def add(n: int, ctx: taskora.Context) -> int:
        if ctx.attempt < 2:
            raise RuntimeError("again")
        return n + 1

    async with TestRunner(app) as runner:
        assert await runner.run(add, 1) == 2
        assert order == ["app", "task", "app", "task"]
        with pytest.raises(taskora.ValidationError):
            await runner.run(add, "not a number")


async def test_dispose_restores_the_app() -> None:
    original = MemoryBackend()
    app = App(original)
    seen: list[int] = []

    @app.task
    async def job(n: int) -> None:
        seen.append(n)

    runner = TestRunner(app)
    assert app.backend is runner.backend
    await runner.execute(job, 1)
    await runner.dispose()
    assert app.backend is original
    handle = job.dispatch(2)
    await handle
    assert await original.get_snapshot("job", handle.id) == (await handle._snapshot())
    assert (await original.get_snapshot("job", handle.id)).state == "waiting"
    assert await original.counts("job") == {**await original.counts("job"), "waiting": 1}
    async with app:
        assert await handle.wait_for(10) is None
    assert seen == [1, 2]
