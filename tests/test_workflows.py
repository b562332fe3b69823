"""Workflows (docs/design.md#workflows) on both backends: chain, group, chord, nesting,
failure and cancel cascades, retries inside a step. Waits are for results, never sleeps."""

from __future__ import annotations

import asyncio

import pytest

import taskora
from taskora import Retry, chain, chord, group
from tests.conftest import AppFactory


async def test_chain_passes_outputs(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def add(x: int) -> int:
        return x + 1

    @app.task()
    async def double(x: int) -> int:
        return x * 2

    async with app:
        handle = (add.s(1) | double.s() | add.s()).dispatch()
        assert isinstance(await handle, str)
        assert await handle.wait_for(20) == 5
        assert await handle.get_state() == "completed"
        assert await chain(add.s(10), double.s()).dispatch().wait_for(20) == 22


async def test_group_keeps_order_and_chord_gets_the_list(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def slow(x: int) -> int:
        await asyncio.sleep(0.01 * (5 - x))  # finish in reverse order
        return x * 10

    @app.task()
    async def total(xs: list[int]) -> int:
        return sum(xs)

    async with app:
        assert await group(*(slow.s(i) for i in range(5))).dispatch().wait_for(20) == [
            0,
            10,
            20,
            30,
            40,
        ]
        assert await chord([slow.s(i) for i in range(5)], total.s()).dispatch().wait_for(20) == 100


async def test_nested(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def inc(x: int) -> int:
        return x + 1

    @app.task()
    async def total(xs: list[object]) -> int:
        flat = [v for x in xs for v in (x if isinstance(x, list) else [x])]
        return sum(int(v) for v in flat)  # type: ignore[call-overload]

    async with app:
        flow = inc.s(0) | group(inc.s() | inc.s(), group(inc.s(), inc.s())) | total.s()
        # 1 -> [3, [2, 2]] -> 7
        assert await flow.dispatch().wait_for(20) == 7


async def test_failure_fails_the_workflow_and_cancels_the_rest(make_app: AppFactory) -> None:
    app = make_app()
    started = asyncio.Event()
    ran_after: list[int] = []

    @app.task()
    async def boom(x: int) -> int:
        await started.wait()
        raise RuntimeError("boom")

    @app.task()
    async def hang(x: int) -> int:
        started.set()
        await asyncio.sleep(60)
        return x

    @app.task()
    async def after(xs: list[int]) -> int:
        ran_after.append(1)
        return 0

    async with app:
        handle = chord([boom.s(1), hang.s(2)], after.s()).dispatch()
        with pytest.raises(taskora.JobFailedError, match="boom"):
            await handle.wait_for(20)
        assert await handle.get_state() == "failed"
        wf = await handle
        # the running root step is cancelled too
        hang_handle = hang.handle(f"wf-{wf}-1")
        with pytest.raises(taskora.JobCancelledError):
            await hang_handle.wait_for(20)
    assert ran_after == []


async def test_cancel_cascades(make_app: AppFactory) -> None:
    app = make_app()
    started = asyncio.Event()
    later: list[int] = []

    @app.task()
    async def hang(x: int) -> int:
        started.set()
        await asyncio.sleep(60)
        return x

    @app.task()
    async def nxt(x: int) -> int:
        later.append(x)
        return x

    async with app:
        handle = (hang.s(1) | nxt.s()).dispatch()
        await asyncio.wait_for(started.wait(), 20)
        await handle.cancel(reason="stop")
        with pytest.raises(taskora.JobCancelledError):
            await handle.wait_for(20)
        assert await handle.get_state() == "cancelled"
        with pytest.raises(taskora.JobCancelledError):
            await hang.handle(f"wf-{await handle}-0").wait_for(20)
    assert later == []


async def test_a_retrying_step_retries_inside_the_step(make_app: AppFactory) -> None:
    app = make_app()
    attempts: list[int] = []

    @app.task()
    async def first(x: int) -> int:
        return x + 1

    @app.task(retry=Retry(attempts=3, backoff="fixed", delay="10ms"))
    async def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) < 3:
            raise RuntimeError("again")
        return x * 100

    @app.task()
    async def last(x: int) -> int:
        return x + 1

    async with app:
        assert await (first.s(1) | flaky.s() | last.s()).dispatch().wait_for(20) == 201
    assert attempts == [2, 2, 2]


async def test_a_root_step_needs_data(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def inc(x: int) -> int:
        return x + 1

    with pytest.raises(ValueError, match="needs data"):
        (inc.s() | inc.s()).dispatch()
    with pytest.raises(ValueError):
        group()


async def test_test_runner_runs_workflows_in_virtual_time() -> None:
    from taskora.testing import TestRunner

    app = taskora.App()

    @app.task(retry=Retry(attempts=2, backoff="fixed", delay="10m", jitter=False))
    async def flaky(x: int) -> int:
        flaky_calls.append(x)
        if len(flaky_calls) == 1:
            raise RuntimeError("once")
        return x + 1

    @app.task()
    async def total(xs: list[int]) -> int:
        return sum(xs)

    flaky_calls: list[int] = []
    async with TestRunner(app) as runner:
        handle = chord([flaky.s(1), flaky.s(2)], total.s()).dispatch()
        await handle
        await runner.advance("11m")  # over the backoff, without waiting for it
        assert await handle.get_state() == "completed"
        assert await handle.result == 5
