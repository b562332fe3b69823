"""taskora.testing: TestRunner drives an app's tasks in virtual time (docs/design.md#testing)."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
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
        execution = await runner.execute(flaky, 21)  # a real 20 min wait would hit the timeout
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
        assert sorted(j.task for j in runner.jobs) == ["child", "parent"]
        await runner.advance("1h")
        assert got == ["HI"]
        # the parent, completed an hour ago, is past the default Retention(completed_age="1h")
        assert [j.task for j in runner.jobs] == ["child"]


async def test_thirty_virtual_days_of_an_every_minute_schedule() -> None:
    app = App("memory://")
    fired: list[int] = []  # the virtual time of each run

    @app.task(schedule={"every": "1m"})
    async def tick(_: Any) -> None:
        fired.append(runner.now_ms)

    start = 1_700_000_000_000
    async with TestRunner(app, start_ms=start) as runner:
        await runner.run_until_idle()  # stores the schedule: first fire one minute on
        wall = time.perf_counter()
        await runner.advance("30d")
        took = time.perf_counter() - wall
        print(
            f"\n30 virtual days, {len(fired)} fires of an every-minute schedule: {took:.2f} s "
            f"wall ({took / len(fired) * 1e6:.0f} us a job)"
        )
        assert len(fired) == 30 * 24 * 60
        assert fired[0] == start + 60_000 and fired[-1] == start + 30 * 86_400_000
        assert all(b - a == 60_000 for a, b in itertools.pairwise(fired))
        info = await app.schedules.get("tick")
        assert info is not None and info.last_run is not None and info.next_run is not None
        assert int(info.last_run.timestamp() * 1000) == fired[-1]
        assert int(info.next_run.timestamp() * 1000) == fired[-1] + 60_000


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
    assert not handle.id.startswith("00000000-")  # the runner's counted ids went with it
    assert await original.get_snapshot("job", handle.id) == (await handle._snapshot())
    assert (await original.get_snapshot("job", handle.id)).state == "waiting"
    assert await original.counts("job") == {**await original.counts("job"), "waiting": 1}
    async with app:
        assert await handle.wait_for(10) is None
    assert seen == [1, 2]


async def test_a_three_step_workflow_with_a_retrying_step() -> None:
    app = App("memory://")
    calls: list[tuple[str, int, int]] = []

    @app.task
    async def fetch(url: str, ctx: taskora.Context) -> str:
        calls.append(("fetch", ctx.attempt, runner.now_ms - start))
        return url.upper()

    @app.task(retry=Retry(attempts=3, backoff="fixed", delay="5m", jitter=False))
    async def parse(page: str, ctx: taskora.Context) -> list[str]:
        calls.append(("parse", ctx.attempt, runner.now_ms - start))
        if ctx.attempt < 3:
            raise RuntimeError("upstream busy")
        return page.split("/")

    @app.task
    async def store(parts: list[str], ctx: taskora.Context) -> int:
        calls.append(("store", ctx.attempt, runner.now_ms - start))
        return len(parts)

    async with TestRunner(app) as runner:
        start = runner.now_ms
        execution = await runner.execute(fetch.s("a/b/c") | parse.s() | store.s())
        assert (execution.state, execution.result, execution.error) == ("completed", 3, None)
        assert [(s.state, s.attempts) for s in execution.steps] == [
            ("completed", 1),
            ("completed", 3),
            ("completed", 1),
        ]
        assert execution.steps[1].result == ["A", "B", "C"]
        # each retry waited its 5 virtual minutes, in order; nothing waited in wall time
        assert calls == [
            ("fetch", 1, 0),
            ("parse", 1, 0),
            ("parse", 2, 300_000),
            ("parse", 3, 600_000),
            ("store", 1, 600_000),
        ]
        assert await execution.handle.get_state() == "completed"


async def test_a_workflow_ttl_passes_in_virtual_time() -> None:
    """A workflow whose step keeps retrying past the workflow's ttl is cancelled when the
    virtual clock reaches the ttl (the workers' sweep, run by the runner), not before."""
    app = App("memory://")

    @app.task(retry=Retry(attempts=5, delay="1h"))
    async def flaky(n: int) -> int:
        raise RuntimeError("down")

    @app.task
    async def after(n: int) -> int:
        return n

    async with TestRunner(app) as runner:
        start = runner.now_ms
        handle = (flaky.s(1) | after.s()).dispatch(ttl="90m")
        await handle
        await runner.advance("89m")
        assert await handle.get_state() == "running"
        await runner.advance("2m")
        assert await handle.get_state() == "cancelled"
        assert runner.now_ms - start == 91 * 60_000


async def test_a_failing_workflow_step_ends_the_workflow() -> None:
    app = App("memory://")

    @app.task
    async def double(n: int) -> int:
        return n * 2

    @app.task(retry=Retry(attempts=2, delay="10m"))
    async def reject(n: int) -> int:
        raise ValueError(f"no {n}")

    async with TestRunner(app) as runner:
        flow = taskora.group(double.s(1), reject.s(2)) | double.s()
        execution = await runner.execute(flow)
        assert execution.state == "failed"
        assert execution.error is not None and "no 2" in execution.error
        assert [s.state for s in execution.steps] == ["completed", "failed", None]
        assert [s.attempts for s in execution.steps] == [1, 2, 0]
        with pytest.raises(taskora.ConfigError, match="no dispatch options"):
            await runner.execute(double.s(1), delay="1m")  # type: ignore[call-overload]
        other = App("memory://")

        @other.task
        async def elsewhere(n: int) -> int:
            return n

        with pytest.raises(taskora.ConfigError, match="another App"):
            await runner.execute(elsewhere.s(1))


async def test_due_times_run_in_order_and_every_run_is_the_same() -> None:
    async def one_run() -> list[tuple[str, int]]:
        app = App("memory://")
        order: list[tuple[str, int]] = []

        @app.task
        async def note(text: str) -> None:
            order.append((text, runner.now_ms - start))
            if text == "b":  # dispatched while running: due after what is already there
                await note.dispatch("b-child", delay="1s")

        async with TestRunner(app, start_ms=1_000_000) as runner:
            start = runner.now_ms
            for text, delay in [("c", "3s"), ("a", "1s"), ("b", "2s"), ("a2", "1s"), ("d", 0)]:
                runner.dispatch(note, text, delay=delay)
            await runner.advance("10s")
        return order

    first = await one_run()
    assert first == [
        ("d", 0),
        ("a", 1000),
        ("a2", 1000),  # due at the same instant: in dispatch order
        ("b", 2000),
        ("c", 3000),
        ("b-child", 3000),  # also due at 3 s, dispatched after "c"
    ]
    for _ in range(3):
        assert await one_run() == first


async def test_finished_jobs_are_trimmed_by_age_as_time_moves() -> None:
    app = App("memory://", retention=taskora.Retention(completed_age="1h", failed_age="1d"))

    @app.task
    async def ok(_: Any) -> None:
        return None

    @app.task
    async def bad(_: Any) -> None:
        raise RuntimeError("no")

    async with TestRunner(app) as runner:
        done = await runner.execute(ok, None)
        failed = await runner.execute(bad, None)
        await runner.advance("59m")
        assert {j.id for j in runner.jobs} == {done.id, failed.id}
        await runner.advance("1m")
        assert {j.id for j in runner.jobs} == {failed.id}
        await runner.advance("1d")
        assert runner.jobs == []


async def test_collect_max_wait_flushes_a_key_that_never_goes_quiet() -> None:
    app = App("memory://")
    batches: list[tuple[list[int], int]] = []

    @app.task(collect=Collect(key="k", delay="10s", max_wait="1m"))
    async def batch(items: list[int]) -> None:
        batches.append((items, runner.now_ms - start))

    async with TestRunner(app) as runner:
        start = runner.now_ms
        for n in range(10):  # an item every 8 s: the 10 s quiet delay never passes
            runner.dispatch(batch, n)
            await runner.advance("8s")
        assert batches == [([0, 1, 2, 3, 4, 5, 6, 7], 60_000)]
        await runner.advance("10s")
        assert batches[1] == ([8, 9], 82_000)


async def test_a_cron_schedule_and_a_fire_skipped_while_the_last_job_retries() -> None:
    app = App("memory://")
    runs: list[tuple[int, int]] = []

    @app.task(
        schedule=taskora.Schedule(cron="0 * * * *"),  # on the hour
        retry=Retry(attempts=2, backoff="fixed", delay="90m", jitter=False),
    )
    async def hourly(_: Any, ctx: taskora.Context) -> None:
        runs.append(((runner.now_ms - midnight) // 60_000, ctx.attempt))
        if len(runs) == 1:
            raise RuntimeError("first run fails; its retry is due 90 min later")

    midnight = 1_700_006_400_000  # 2023-11-15 00:00 UTC
    async with TestRunner(app, start_ms=midnight + 30 * 60_000) as runner:
        await runner.advance("4h")
        # 01:00 fails and retries at 02:30, so the 02:00 fire is skipped (overlap=False)
        assert runs == [(60, 1), (150, 2), (180, 1), (240, 1)]
        info = await app.schedules.get("hourly")
        assert info is not None and info.next_run is not None
        assert int(info.next_run.timestamp() * 1000) == midnight + 5 * 3_600_000


async def test_cancel_a_delayed_job_before_it_runs() -> None:
    app = App("memory://")
    seen: list[str] = []

    @app.task
    async def note(text: str) -> None:
        seen.append(text)

    async with TestRunner(app) as runner:
        handle = runner.dispatch(note, "never", delay="1h")
        await runner.advance("30m")
        await handle.cancel("changed my mind")
        await runner.advance("1h")
        assert seen == []
        assert await handle.get_state() == "cancelled"


async def test_the_inspector_and_dead_letters_read_the_runner() -> None:
    app = App("memory://")

    @app.task(retry=Retry(attempts=2, delay="1m"))
    async def fragile(n: int) -> int:
        if n < 0:
            raise ValueError("negative")
        return n

    async with TestRunner(app) as runner:
        await runner.execute(fragile, 1)
        bad = await runner.execute(fragile, -1)
        later = runner.dispatch(fragile, 2, delay="1h")
        insp = app.inspect()
        assert await insp.stats("fragile") == {**await insp.stats("fragile"), "completed": 1}
        assert [j.id for j in await insp.failed("fragile")] == [bad.id]
        assert [j.id for j in await insp.delayed("fragile")] == [later.id]
        assert await app.dead_letters.retry(bad.id)  # back to waiting, attempts start over
        await runner.run_until_idle()  # it fails again, and retries a minute later
        info = await insp.find("fragile", bad.id)
        assert info is not None and (info.state, info.attempt) == ("retrying", 2)


async def test_a_running_job_is_cancelled_as_under_a_worker() -> None:
    app = App("memory://")
    cleaned: list[str] = []

    async def clean_up(data: dict[str, str], ctx: taskora.Context) -> None:
        cleaned.append(data["role"])

    @app.task(concurrency=2, on_cancel=clean_up)
    async def pair(data: dict[str, str], ctx: taskora.Context) -> str:
        if data["role"] == "waits":
            await asyncio.sleep(3600)  # real time: only the cancel ends it
            return "never"
        await pair.handle(data["other"]).cancel("enough")
        return "cancelled the other"

    async with TestRunner(app) as runner:
        waits = runner.dispatch(pair, {"role": "waits"})
        stops = runner.dispatch(pair, {"role": "stops", "other": await waits})
        await runner.run_until_idle()
        assert await waits.get_state() == "cancelled"
        assert await stops.result == "cancelled the other"
        assert cleaned == ["waits"]


async def test_a_job_that_waits_is_a_task_of_its_own_and_jobs_run_together() -> None:
    """The runner runs a job at once (``Executor.run_now``); one that waits still runs in a
    task of its own, as under a worker: ``asyncio.timeout``, ``TaskGroup`` and
    ``current_task`` inside it see the job's task, not the test's, and two jobs of a task
    with concurrency 2 run at the same time (the first waits for the second)."""
    app = App("memory://")
    tasks: list[asyncio.Task[Any] | None] = []
    second_ran = asyncio.Event()

    @app.task(concurrency=2)
    async def step(role: str) -> str:
        tasks.append(asyncio.current_task())
        if role == "second":
            second_ran.set()
            return "second"
        async with asyncio.timeout(60):  # cancels the job's task if it ever fires
            await second_ran.wait()
        async with asyncio.TaskGroup() as group:
            child = group.create_task(asyncio.sleep(0, "child"))
        return child.result()

    async with TestRunner(app) as runner:
        first = runner.dispatch(step, "first")
        second = runner.dispatch(step, "second")
        await runner.run_until_idle()
        assert await first.result == "child"
        assert await second.result == "second"
        assert len(tasks) == 2 and None not in tasks and tasks[0] is not tasks[1]
        assert asyncio.current_task() not in tasks


_WHO = contextvars.ContextVar("_WHO", default="test")


async def test_a_job_run_at_once_keeps_its_own_context() -> None:
    """A handler with no ``await`` runs inline, yet in a context of its own, as a task
    would: what it sets is not seen by the test or the next job; and one whose own end
    waits (its log is written before the outcome) goes on in a task."""
    app = App("memory://")

    @app.task()
    async def tag(name: str, ctx: taskora.Context) -> str:
        before = _WHO.get()
        _WHO.set(name)
        ctx.log.info("tagged", name=name)
        return f"{before}->{_WHO.get()}"

    async with TestRunner(app) as runner:
        one = await runner.execute(tag, "one")
        two = await runner.execute(tag, "two")
        assert (one.result, two.result) == ("test->one", "test->two")
        assert _WHO.get() == "test"
        assert [entry["message"] for entry in two.logs] == ["tagged"]


def test_which_handlers_may_run_on_the_callers_task() -> None:
    """Python 3.11's inline path is taken only for code that cannot suspend: an
    ``async def`` without ``await``, ``async for`` or ``async with``."""
    from taskora.executor import _may_wait

    async def plain(x: int) -> int:
        return x + 1

    async def awaits(x: int) -> None:
        await asyncio.sleep(x)

    async def loops(items: Any) -> None:
        async for _ in items:
            pass

    async def enters(lock: asyncio.Lock) -> None:
        async with lock:
            pass

    def sync(x: int) -> int:
        return x

    class Callable:
        async def __call__(self) -> None:
            return None

    assert not _may_wait(plain)
    assert all(_may_wait(fn) for fn in (awaits, loops, enters, sync, Callable()))
