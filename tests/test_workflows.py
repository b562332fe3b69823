"""Workflows (docs/design.md#workflows) on both backends: chain, group, chord, nesting,
failure and cancel cascades, retries inside a step. Waits are for results, never sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

import taskora
from taskora import Retry, chain, chord, group
from taskora.backends.base import WorkflowPlan
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


async def test_map_and_chunk(make_app: AppFactory) -> None:
    app = make_app()
    events: list[tuple[str, int]] = []

    @app.task()
    async def inc(x: int) -> int:
        events.append(("start", x))
        await asyncio.sleep(0)
        events.append(("end", x))
        return x + 1

    async with app:
        assert await inc.map([1, 2, 3]).dispatch().wait_for(20) == [2, 3, 4]
        events.clear()
        assert await inc.chunk(range(7), size=3).dispatch().wait_for(20) == [1, 2, 3, 4, 5, 6, 7]
    # each chunk starts only when the previous one has completed
    for lo in (3, 6):
        first_start = min(i for i, (kind, x) in enumerate(events) if kind == "start" and x >= lo)
        last_end = max(i for i, (kind, x) in enumerate(events) if kind == "end" and x < lo)
        assert last_end < first_start
    assert sorted(x for kind, x in events if kind == "start") == list(range(7))


async def test_nesting_in_any_combination(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def inc(x: int) -> int:
        return x + 1

    @app.task()
    async def total(xs: list[object]) -> int:
        def flat(v: object) -> int:
            return sum(flat(x) for x in v) if isinstance(v, list) else int(v)  # type: ignore[call-overload]

        return flat(xs)

    async with app:
        flows = [
            # a map then a chunk of the same items, summed
            (chain(inc.map([1, 2]), total.s()) | inc.s(), 6),
            (inc.chunk([1, 2, 3], size=2) | total.s(), 9),
            # a chord whose header holds a chunk, a chain and a map
            (
                chord([inc.chunk([0, 1], size=1), inc.s(5) | inc.s(), inc.map([10])], total.s()),
                1 + 2 + 7 + 11,
            ),
            # a group of chords and maps after a step, then a step over all of it
            (
                inc.s(0)
                | group(chord([inc.s(), inc.s()], total.s()), inc.map([3, 4]), inc.s())
                | total.s(),
                4 + 9 + 2,
            ),
            # a chunk after a step (its items are its own data: the step only sequences it)
            (inc.s(100) | inc.chunk([1, 2], size=1), [2, 3]),
        ]
        handles = [flow.dispatch() for flow, _ in flows]
        for handle, (_, expected) in zip(handles, flows, strict=True):
            assert await handle.wait_for(20) == expected


async def test_bad_input_raises_at_declaration_or_dispatch_and_writes_nothing(
    make_app: AppFactory, is_redis: bool, prefix: str, backend_url: str
) -> None:
    app = make_app()
    other = taskora.App("memory://")

    @app.task()
    async def inc(x: int) -> int:
        return x + 1

    @other.task("elsewhere")
    async def elsewhere(x: int) -> int:
        return x

    @app.task()
    async def batchless(x):  # type: ignore[no-untyped-def]  # no schema: only JSON is checked
        return x

    @app.task(collect=taskora.Collect(key="k", delay="1s"))
    async def batch(xs: list[int]) -> int:
        return len(xs)

    with pytest.raises(ValueError, match="needs data"):
        (inc.s() | inc.s()).dispatch()
    with pytest.raises(ValueError, match="at least one step"):
        group()
    with pytest.raises(ValueError, match="at least one step"):
        chain()
    with pytest.raises(ValueError, match="at least one step"):
        chord([], inc.s())
    with pytest.raises(ValueError, match="unknown task 'elsewhere'"):
        (inc.s(1) | elsewhere.s()).dispatch()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="collects its dispatches"):
        (inc.s(1) | batch.s()).dispatch()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="map needs at least one item"):
        inc.map([])
    with pytest.raises(ValueError, match="iterable"):
        inc.map(3)  # type: ignore[arg-type]
    for size in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="chunk size"):
            inc.chunk([1], size=size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk needs at least one item"):
        inc.chunk([], size=2)
    for ttl in (0, -1, "soon"):
        with pytest.raises(ValueError, match="ttl"):
            inc.s(1).dispatch(ttl=ttl)
    with pytest.raises(taskora.ValidationError):
        inc.s("not a number").dispatch()  # checked against the input schema, as a dispatch's
    with pytest.raises(taskora.SerializationError):
        chain(inc.s(1), batchless.s({1, 2})).dispatch()
    async with app:
        pass
    if is_redis:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(backend_url)
        try:
            assert [k async for k in client.scan_iter(f"taskora:{prefix}:*")] == [
                f"taskora:{prefix}:meta".encode()
            ]
        finally:
            await client.aclose()
    else:
        backend = app.backend
        assert isinstance(backend, taskora.MemoryBackend)
        assert backend.workflows._records == {}
        assert all(not t.jobs for t in backend._tasks.values())


async def test_ttl_cancels_the_workflow_and_its_running_steps(make_app: AppFactory) -> None:
    # the ttl is enforced by the workers' sweep (with their stall check), not this process
    app = make_app(defaults=taskora.TaskDefaults(stall=taskora.Stall(interval="50ms")))
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
        # long enough for "hang" to be running when it passes, on a loaded machine too
        handle = (hang.s(1) | nxt.s()).dispatch(ttl="1s")
        with pytest.raises(taskora.JobCancelledError, match="ttl"):
            await handle.wait_for(20)
        assert started.is_set()
        assert await handle.get_state() == "cancelled"
        with pytest.raises(taskora.JobCancelledError):
            await hang.handle(f"wf-{await handle}-0").wait_for(20)
        # a workflow that ends in time is not touched by its deadline (it ends in ms; the
        # deadline leaves a loaded machine room)
        quick = nxt.s(5).dispatch(ttl="10s")
        assert await quick.wait_for(20) == 5
    assert later == [5]


async def test_finished_records_follow_retention(
    make_app: AppFactory, is_redis: bool, backend_url: str, prefix: str
) -> None:
    app = make_app(retention=taskora.Retention(completed_age="1h", failed_age="2h"))

    @app.task()
    async def inc(x: int) -> int:
        return x + 1

    @app.task()
    async def boom(x: int) -> int:
        raise RuntimeError("no")

    release = asyncio.Event()

    @app.task()
    async def gate(x: int) -> int:
        await release.wait()
        return x

    async with app:
        ok = inc.s(1).dispatch()
        bad = (inc.s(1) | boom.s()).dispatch()
        assert await ok.wait_for(20) == 2
        with pytest.raises(taskora.JobFailedError):
            await bad.wait_for(20)
        running = gate.s(1).dispatch()
        await running
        if is_redis:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(backend_url)
            try:
                # a running record lives until it ends; one whose roots were never enqueued
                # (its dispatcher died) only for its lease
                assert await client.pttl(f"taskora:{prefix}:{{:wf}}:{await running}") == -1
                backend = await app._connected_backend()
                await backend.workflow_create("orphan", WorkflowPlan("o", (), "[]", 0, 5000))
                assert 0 < await client.pttl(f"taskora:{prefix}:{{:wf}}:orphan") <= 5000
                assert (
                    3_000_000
                    < await client.pttl(f"taskora:{prefix}:{{:wf}}:{await ok}")
                    <= 3_600_000
                )
                assert (
                    3_600_000
                    < await client.pttl(f"taskora:{prefix}:{{:wf}}:{await bad}")
                    <= 7_200_000
                )
            finally:
                await client.aclose()
        else:
            backend = app.backend
            assert isinstance(backend, taskora.MemoryBackend)
            records = backend.workflows._records
            now = backend.now_ms()
            assert 3_000_000 < records[await ok].expire_at - now <= 3_600_000
            assert 3_600_000 < records[await bad].expire_at - now <= 7_200_000
            assert records[await running].expire_at == 0
        release.set()
        assert await running.wait_for(20) == 1


async def test_unknown_workflow(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def inc(x: int) -> int:
        return x + 1

    async with app:
        handle = inc.s(1).dispatch()
        assert await handle.wait_for(20) == 2
        ghost = taskora.WorkflowHandle(app, "0" * 32, None)
        ghost._started = asyncio.get_running_loop().create_future()
        ghost._started.set_result(None)
        with pytest.raises(taskora.WorkflowError):
            await ghost.get_state()
        with pytest.raises(taskora.WorkflowError):
            await ghost.wait_for(5)


async def test_wait_for_times_out_with_taskora_timeout(make_app: AppFactory) -> None:
    app = make_app()
    release = asyncio.Event()

    @app.task()
    async def slow(x: int) -> int:
        await release.wait()
        return x

    async with app:
        handle = slow.s(1).dispatch()
        with pytest.raises(taskora.TimeoutError):
            await handle.wait_for(0.05)
        release.set()
        assert await handle.wait_for(20) == 1


async def test_the_result_is_pushed_not_polled(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The waiter's safety sweep (a re-check of old waiters) is pushed out of the way: the
    # result must arrive with no command at all from the waiting side.
    from taskora.backends.keys import WORKFLOWS
    from taskora.backends.redis import waiter

    monkeypatch.setattr(waiter, "SWEEP_EVERY_S", 600.0)
    worker_app = taskora.App(redis_url, prefix=prefix)
    producer = taskora.App(redis_url, prefix=prefix)
    release = asyncio.Event()
    started = asyncio.Event()

    @worker_app.task("step")
    async def step(x: int) -> int:
        started.set()
        await release.wait()
        return x * 2

    @producer.task("step")
    async def step_p(x: int) -> int:
        raise AssertionError("the producer runs no worker")

    async with worker_app:
        try:
            handle = (step_p.s(1) | step_p.s() | step_p.s()).dispatch()
            await handle
            waiting = asyncio.ensure_future(handle.wait_for(20))
            backend = producer.backend
            assert isinstance(backend, taskora.RedisBackend)
            await asyncio.wait_for(started.wait(), 20)
            from tests.conftest import wait_until

            # registered and its first state check answered: from now on, nothing is polled
            await wait_until(lambda: WORKFLOWS in backend.waiter._since)
            before = backend.round_trips()["main"]
            release.set()
            assert await waiting == 8
            assert backend.round_trips()["main"] == before
        finally:
            await producer.close()


async def test_the_record_advances_and_ends_idempotently(make_app: AppFactory) -> None:
    """The storage contract on both backends: a repeated advance returns the unblocked steps
    not completed yet again; a repeated end returns the cascade to the same ender only."""
    from taskora.backends.base import WorkflowPlan, WorkflowStep

    app = make_app()
    async with app:
        backend = await app._connected_backend()

        def step(waits: int, then: tuple[int, ...], data: str | None = None) -> WorkflowStep:
            return WorkflowStep("t", 1, 1, data, "" if data else "[#0,#1]", waits, then)

        # two roots joined by a third node, then a fourth after it
        plan = WorkflowPlan(
            "p",
            (step(0, (2,), "1"), step(0, (2,), '"x"'), step(2, (3,)), step(1, ())),
            "#3",
        )
        plan = dataclasses.replace(
            plan,
            steps=(*plan.steps[:3], dataclasses.replace(plan.steps[3], inputs="#2")),
        )
        assert await backend.workflow_create("w1", plan)
        assert not await backend.workflow_create("w1", plan)
        await backend.workflow_started("w1")
        first = await backend.workflow_advance("w1", 0, "10", 60_000)
        assert (first.state, first.ready) == ("running", ())
        again = await backend.workflow_advance("w1", 0, "11", 60_000)
        assert (again.state, again.ready) == ("running", ())
        joined = await backend.workflow_advance("w1", 1, '{"a":[1]}', 60_000)
        assert [(r.node, r.data) for r in joined.ready] == [(2, '[10,{"a":[1]}]')]
        replay = await backend.workflow_advance("w1", 1, "0", 60_000)
        assert replay.ready == joined.ready  # enqueued again after a crash: a no-op
        assert (await backend.workflow_advance("w1", 2, "null", 60_000)).ready[0].data == "null"
        # an end by a step that completed does nothing
        assert await backend.workflow_end("w1", "failed", 2, "late", 60_000) == []
        # node 3 is queued: a handle's cancel returns it, again for the handle only
        assert await backend.workflow_end("w1", "cancelled", -1, "stop", 60_000) == [(3, "t")]
        assert await backend.workflow_end("w1", "cancelled", -1, "stop", 60_000) == [(3, "t")]
        assert await backend.workflow_end("w1", "failed", 3, "x", 60_000) == []
        assert await backend.workflow_end("w1", "cancelled", -2, "ttl", 60_000) == []
        done = await backend.workflow_advance("w1", 3, "1", 60_000)
        assert (done.state, done.ready) == ("cancelled", ())
        info = await backend.workflow_read("w1")
        assert info is not None and (info.state, info.reason) == ("cancelled", "stop")
        end = await backend.workflow_wait("w1", 5)
        assert end is not None and (end.state, end.reason) == ("cancelled", "stop")
        assert await backend.workflow_read("nope") is None
        assert (await backend.workflow_advance("nope", 0, "1", 1)).state == "missing"
        assert await backend.workflow_end("nope", "failed", 0, "x", 1) == []


async def test_a_failure_deep_inside_cancels_running_and_queued_steps(
    make_app: AppFactory,
) -> None:
    app = make_app()
    running = asyncio.Event()
    ran: list[str] = []

    @app.task()
    async def inc(x: int) -> int:
        ran.append("inc")
        return x + 1

    @app.task()
    async def boom(x: int) -> int:
        await running.wait()  # fail only once the sibling is running
        raise RuntimeError("deep")

    @app.task()
    async def hang(x: int) -> int:
        running.set()
        await asyncio.sleep(60)
        return x

    @app.task(concurrency=1)
    async def gate(x: int) -> int:
        await asyncio.sleep(60)
        return x

    async with app:
        # after a first step: a group of a failing step, a running one, and a chain whose
        # second step waits behind a busy task (queued, not running)
        flow = inc.s(1) | group(boom.s(), hang.s(), gate.s() | inc.s(), gate.s())
        handle = flow.dispatch()
        with pytest.raises(taskora.JobFailedError, match="deep"):
            await handle.wait_for(20)
        wf = await handle
        for task, node in ((hang, 2), (gate, 3), (gate, 5)):
            with pytest.raises(taskora.JobCancelledError, match="workflow failed"):
                await task.handle(f"wf-{wf}-{node}").wait_for(20)
        assert await handle.get_state() == "failed"
    assert ran == ["inc"]  # the step after the gate never ran


async def test_workflows_on_a_cluster(redis_cluster: Any, prefix: str) -> None:
    """Every workflow script stays in the ``{:wf}`` slot, where its sharded end publish must
    stay too: a chord over tasks spread across three masters completes with its result pushed,
    and a failing step fails its workflow (both refused by Redis when a record had a slot of its
    own and its end went to ``{:wf}``)."""
    app = taskora.App(redis_cluster.url, prefix=prefix)
    names = [f"step-{i}" for i in range(6)]  # six task slots over the three masters
    runs: list[str] = []

    def make(name: str) -> taskora.Task[int, int]:
        @app.task(name)
        async def step(x: int, ctx: taskora.Context) -> int:
            runs.append(ctx.id)
            return x + 1

        return step

    steps = [make(n) for n in names]

    @app.task("sum-all")
    async def sum_all(xs: list[int]) -> int:
        return sum(xs)

    @app.task("boom", retry=Retry(attempts=1))
    async def boom(x: int) -> int:
        raise ValueError("no")

    @app.task("stuck", concurrency=6)
    async def stuck(x: int) -> int:
        await asyncio.sleep(60)
        return x

    async with app:
        flows = [
            chord([s.s(i) | steps[(i + k) % 6].s() for i, s in enumerate(steps)], sum_all.s())
            for k in range(1, 7)  # six workflows: records on every master if they had own slots
        ]
        handles = [flow.dispatch() for flow in flows]
        for handle in handles:
            assert await handle.wait_for(30) == sum(i + 2 for i in range(6))
        assert len(runs) == len(set(runs)) == 72  # each step once: every advance went through
        failing = [(steps[0].s(1) | boom.s() | steps[1].s()).dispatch() for _ in range(6)]
        for handle in failing:
            with pytest.raises(taskora.JobFailedError):
                await handle.wait_for(30)
            assert await handle.get_state() == "failed"
        blocked = [(stuck.s(1) | steps[2].s()).dispatch() for _ in range(6)]
        for handle in blocked:
            await handle
            await handle.cancel("not needed")
            assert await handle.get_state() == "cancelled"


async def test_a_step_cancelled_before_it_ran_ends_its_workflow(make_app: AppFactory) -> None:
    """No executor sees a step that is cancelled while it waits: the cancel itself ends the
    workflow and cancels the rest, whether it comes from a handle or the inspector."""
    app = make_app()
    ran: list[int] = []

    @app.task()
    async def step(x: int) -> int:
        ran.append(x)
        return x

    by_inspector = (step.s(1) | step.s()).dispatch()
    by_handle = group(step.s(2), step.s(3)).dispatch()
    first, second = await by_inspector, await by_handle
    assert await app.inspect().cancel(f"wf-{first}-0", reason="not needed") == "cancelled"
    await step.handle(f"wf-{second}-1").cancel(reason="not needed")
    for handle in (by_inspector, by_handle):
        with pytest.raises(taskora.JobCancelledError):
            await handle.wait_for(20)
    info = await app.inspect().workflow(second)
    assert info is not None and info.state == "cancelled"
    assert [s.state for s in info.steps] == ["cancelled", "cancelled"]
    async with app:  # a worker now finds nothing of either workflow to run
        assert await step.dispatch(4).result == 4
    assert ran == [4]
