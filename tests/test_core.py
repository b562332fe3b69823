"""Core contract: dispatch, handles, workers, states, progress, logs, retries, cancellation.

Every test runs on both backends (memory and a real redis-server).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

import taskora
from tests.conftest import AppFactory


async def test_dispatch_returns_handle_at_once_with_uuid(make_app: AppFactory) -> None:
    app = make_app()

    @app.task("send-email")
    async def send_email(data: dict[str, str]) -> str:
        return data["to"]

    handle = send_email.dispatch({"to": "user@example.com", "subject": "Welcome!"})
    assert isinstance(handle, taskora.ResultHandle)
    assert str(uuid.UUID(handle.id)) == handle.id
    assert handle.enqueued is None
    job_id = await handle
    assert job_id == handle.id
    assert handle.enqueued is True
    assert await handle.get_state() == taskora.JobState.WAITING
    async with app:
        assert await handle.result == "user@example.com"
    assert await handle.get_state() == taskora.JobState.COMPLETED


async def test_states_waiting_active_completed(make_app: AppFactory) -> None:
    app = make_app()
    started = asyncio.Event()
    release = asyncio.Event()

    @app.task()
    async def slow(data: int) -> int:
        started.set()
        await release.wait()
        return data * 2

    handle = slow.dispatch(21)
    await handle
    assert await handle.get_state() == "waiting"
    async with app:
        await asyncio.wait_for(started.wait(), 20)
        assert await handle.get_state() == "active"
        release.set()
        assert await handle.wait_for(20) == 42
        assert await handle.get_state() == "completed"


async def test_sync_and_async_handlers_with_and_without_ctx(make_app: AppFactory) -> None:
    app = make_app()
    threads: list[str] = []

    @app.task()
    def plain(data: int) -> int:
        threads.append(threading.current_thread().name)
        return data + 1

    @app.task()
    def plain_ctx(data: None, ctx: taskora.Context) -> dict[str, object]:
        return {"id": ctx.id, "attempt": ctx.attempt, "task": ctx.task}

    @app.task()
    async def coro(data: int, ctx: taskora.Context) -> int:
        return data + ctx.attempt

    async with app:
        h1, h2, h3 = plain.dispatch(1), plain_ctx.dispatch(None), coro.dispatch(10)
        assert await h1.wait_for(20) == 2
        assert await h2.wait_for(20) == {"id": h2.id, "attempt": 1, "task": "plain_ctx"}
        assert await h3.wait_for(20) == 11
    assert threads and threads[0] != threading.main_thread().name


async def test_task_called_directly_runs_in_process() -> None:
    app = taskora.App("memory://")

    @app.task()
    async def double(data: int) -> int:
        return data * 2

    @app.task()
    def greet(data: str, ctx: taskora.Context) -> str:
        ctx.log.info("greeting")
        return f"hi {data} #{ctx.attempt}"

    assert await double(4) == 8
    assert greet("bob") == "hi bob #1"


async def test_progress_and_logs(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def work(data: None, ctx: taskora.Context) -> str:
        ctx.log.info("start", step=1)
        await ctx.progress(50)
        ctx.log.warn("halfway")
        await ctx.progress({"stage": "done", "pct": 100})
        ctx.log.error("oops", code=7)
        return "ok"

    @app.task()
    async def quiet(data: None) -> None:
        return None

    async with app:
        handle = work.dispatch(None)
        assert await handle.wait_for(20) == "ok"
        assert await handle.get_progress() == {"stage": "done", "pct": 100}
        logs = await handle.get_logs()
        assert [(e.level, e.message, e.meta) for e in logs] == [
            ("info", "start", {"step": 1}),
            ("warn", "halfway", {}),
            ("error", "oops", {"code": 7}),
        ]
        assert all(e.timestamp > 1_600_000_000_000 for e in logs)
        other = quiet.dispatch(None)
        assert await other.wait_for(20) is None
        assert await other.get_progress() is None
        assert await other.get_logs() == []


async def test_numeric_progress_from_sync_handler(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    def work(data: None, ctx: taskora.Context) -> int:
        ctx.progress(25)
        ctx.progress(75.5)
        ctx.log.info("from a thread")
        return 1

    async with app:
        handle = work.dispatch(None)
        assert await handle.wait_for(20) == 1
        assert await handle.get_progress() == 75.5
        assert [e.message for e in await handle.get_logs()] == ["from a thread"]


async def test_failure_raises_job_failed_error(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def broken(data: None) -> None:
        raise RuntimeError("planned failure")

    async with app:
        handle = broken.dispatch(None)
        with pytest.raises(taskora.JobFailedError) as info:
            await handle.wait_for(20)
        assert info.value.error == "planned failure"
        assert info.value.job_id == handle.id
        assert await handle.get_state() == "failed"


async def test_wait_for_times_out_with_taskora_timeout_error(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def never(data: None) -> None:
        return None

    handle = never.dispatch(None)  # no worker started
    with pytest.raises(taskora.TimeoutError) as info:
        await handle.wait_for(0.3)
    assert isinstance(info.value, TimeoutError)  # also the builtin
    assert info.value.job_id == handle.id


async def test_get_state_of_unknown_job_is_none(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def noop(data: None) -> None:
        return None

    missing = noop.handle(str(uuid.uuid4()))
    assert await missing.get_state() is None
    with pytest.raises(taskora.JobNotFoundError):
        await missing.wait_for(10)


async def test_handle_for_job_dispatched_elsewhere(make_app: AppFactory) -> None:
    producer = make_app()
    worker = make_app()
    for app in (producer, worker):

        @app.task("echo")
        async def echo(data: str) -> str:
            return data.upper()

    job_id = await producer.tasks["echo"].dispatch("abc")
    async with worker:
        handle = worker.tasks["echo"].handle(job_id)
        assert await handle.wait_for(20) == "ABC"


async def test_many_handles_concurrently(make_app: AppFactory) -> None:
    app = make_app()

    @app.task(concurrency=20)
    async def square(data: int) -> int:
        await asyncio.sleep(0.001)
        return data * data

    async with app:
        handles = [square.dispatch(i) for i in range(300)]
        results = await asyncio.wait_for(asyncio.gather(*(h.result for h in handles)), 60)
        assert results == [i * i for i in range(300)]


async def test_dispatch_many(make_app: AppFactory) -> None:
    app = make_app()

    @app.task(concurrency=5)
    async def send(data: dict[str, str]) -> str:
        return data["to"]

    handles = send.dispatch_many(
        [
            {"data": {"to": "alice@example.com", "subject": "Hi"}},
            {"data": {"to": "bob@example.com", "subject": "Hello"}, "options": {"delay": 0.2}},
        ]
    )
    assert len(handles) == 2
    await asyncio.gather(*handles)
    assert await handles[1].get_state() == "delayed"
    async with app:
        assert await handles[0].wait_for(20) == "alice@example.com"
        assert await handles[1].wait_for(20) == "bob@example.com"


async def test_dispatch_many_bad_item_fails_only_itself(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def noop(data: object) -> object:
        return data

    handles = noop.dispatch_many(
        [{"data": 1}, {"data": float("nan")}, {"data": 3, "options": {"priority": -1}}, {"data": 4}]
    )
    assert await handles[0] == handles[0].id
    with pytest.raises(taskora.SerializationError):
        await handles[1]
    with pytest.raises(ValueError, match="priority"):
        await handles[2]
    assert await handles[3] == handles[3].id
    async with app:
        assert await handles[3].wait_for(20) == 4


async def test_delayed_job_runs_after_delay(make_app: AppFactory) -> None:
    app = make_app()
    ran_at: list[float] = []

    @app.task()
    async def later(data: None) -> str:
        ran_at.append(time.monotonic())
        return "done"

    async with app:
        start = time.monotonic()
        handle = later.dispatch(None, delay=0.5)
        await handle
        assert await handle.get_state() == "delayed"
        assert await handle.wait_for(20) == "done"
        assert ran_at[0] - start >= 0.45


async def test_priority_order(make_app: AppFactory) -> None:
    app = make_app()
    order: list[int] = []

    @app.task(concurrency=1)
    async def record(data: int) -> None:
        order.append(data)

    handles = [record.dispatch(p, priority=p) for p in (0, 10, 5, 0, 10)]
    await asyncio.gather(*handles)
    async with app:
        await asyncio.gather(*(h.wait_for(20) for h in handles))
    assert order == [10, 10, 5, 0, 0]


async def test_retry_then_success(make_app: AppFactory) -> None:
    app = make_app()
    attempts: list[int] = []

    @app.task(retry=taskora.Retry(attempts=3, backoff="fixed", delay=0.05))
    async def flaky(data: None, ctx: taskora.Context) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("transient")
        return ctx.attempt

    async with app:
        assert await flaky.dispatch(None).wait_for(20) == 3
    assert attempts == [1, 2, 3]


async def test_retry_exhausted_fails(make_app: AppFactory) -> None:
    app = make_app()

    @app.task(retry=taskora.Retry(attempts=2, delay=0.01, jitter=False))
    async def always(data: None) -> None:
        raise ValueError("bad")

    async with app:
        handle = always.dispatch(None)
        with pytest.raises(taskora.JobFailedError, match="bad"):
            await handle.wait_for(20)


async def test_ctx_retry_with_delay(make_app: AppFactory) -> None:
    app = make_app()
    seen: list[float] = []

    @app.task(retry=taskora.Retry(attempts=2, delay="1h"))
    async def asks(data: None, ctx: taskora.Context) -> int:
        seen.append(time.monotonic())
        if ctx.attempt == 1:
            raise ctx.retry(delay=0.2, reason="not yet")
        return ctx.attempt

    async with app:
        handle = asks.dispatch(None)
        assert await handle.wait_for(20) == 2
    assert seen[1] - seen[0] >= 0.15


async def test_async_handler_timeout_fails_job(make_app: AppFactory) -> None:
    app = make_app()
    cancelled = asyncio.Event()

    @app.task(timeout=0.2)
    async def sleepy(data: None) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with app:
        handle = sleepy.dispatch(None)
        with pytest.raises(taskora.JobFailedError, match="timed out"):
            await handle.wait_for(20)
        assert cancelled.is_set()


async def test_sync_handler_timeout_is_abandoned_and_worker_stays_healthy(
    make_app: AppFactory,
) -> None:
    app = make_app()
    stop = threading.Event()

    @app.task(timeout=0.2, concurrency=1)
    def stuck(data: str, ctx: taskora.Context) -> str:
        if data == "hang":
            stop.wait(30)  # ignores ctx.cancelled on purpose
            return "late"
        return data

    try:
        async with app:
            first = stuck.dispatch("hang")
            with pytest.raises(taskora.JobFailedError, match="timed out"):
                await first.wait_for(20)
            assert await stuck.dispatch("next").wait_for(20) == "next"
            stop.set()
            await asyncio.sleep(0.1)
            assert await first.get_state() == "failed"
    finally:
        stop.set()


async def test_cancel_waiting_and_delayed(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def noop(data: None) -> None:
        return None

    waiting = noop.dispatch(None)
    delayed = noop.dispatch(None, delay=60)
    await asyncio.gather(waiting, delayed)
    await waiting.cancel(reason="changed my mind")
    await delayed.cancel()
    assert await waiting.get_state() == "cancelled"
    assert await delayed.get_state() == "cancelled"
    with pytest.raises(taskora.JobCancelledError) as info:
        await waiting.wait_for(10)
    assert info.value.reason == "changed my mind"
    async with app:
        # nothing left to run; a fresh job still runs
        assert await noop.dispatch(None).wait_for(20) is None
    assert await waiting.get_state() == "cancelled"


async def test_cancel_active_async_job(make_app: AppFactory) -> None:
    app = make_app()
    started = asyncio.Event()
    seen: list[str] = []

    async def on_cancel(data: None, ctx: taskora.Context) -> None:
        seen.append(f"on_cancel:{ctx.cancelled}")

    @app.task(on_cancel=on_cancel)
    async def long(data: None) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("handler saw CancelledError")
            raise

    async with app:
        handle = long.dispatch(None)
        await asyncio.wait_for(started.wait(), 20)
        await handle.cancel(reason="user")
        with pytest.raises(taskora.JobCancelledError) as info:
            await handle.wait_for(20)
        assert info.value.reason == "user"
    assert seen == ["handler saw CancelledError", "on_cancel:True"]
    assert await handle.get_state() == "cancelled"


async def test_cancel_active_sync_job_sees_flag(make_app: AppFactory) -> None:
    app = make_app()
    started = threading.Event()
    hooks: list[str] = []

    def on_cancel(data: None, ctx: taskora.Context) -> None:
        hooks.append("on_cancel")

    @app.task(on_cancel=on_cancel)
    def cooperative(data: None, ctx: taskora.Context) -> str:
        started.set()
        deadline = time.monotonic() + 30
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        return "stopped" if ctx.cancelled else "timeout"

    async with app:
        handle = cooperative.dispatch(None)
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 20)
        await handle.cancel()
        with pytest.raises(taskora.JobCancelledError):
            await handle.wait_for(20)
    assert hooks == ["on_cancel"]


async def test_cancel_finished_job_is_noop(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def noop(data: None) -> int:
        return 1

    async with app:
        handle = noop.dispatch(None)
        assert await handle.wait_for(20) == 1
        await handle.cancel()
        assert await handle.get_state() == "completed"
        assert await handle.wait_for(5) == 1


async def test_close_waits_for_active_jobs(make_app: AppFactory) -> None:
    app = make_app()
    started = asyncio.Event()
    finished: list[int] = []

    @app.task()
    async def slow(data: int) -> int:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(data)
        return data

    await app.start()
    handle = slow.dispatch(7)
    await asyncio.wait_for(started.wait(), 20)
    await app.close()
    assert finished == [7]
    assert await handle.get_state() == "completed"


async def test_close_timeout_releases_running_job(make_app: AppFactory) -> None:
    app = make_app()
    started = asyncio.Event()

    @app.task()
    async def stubborn(data: None) -> None:
        started.set()
        await asyncio.sleep(60)

    await app.start()
    handle = stubborn.dispatch(None)
    await asyncio.wait_for(started.wait(), 20)
    t0 = time.monotonic()
    await app.close(timeout=0.2)
    assert time.monotonic() - t0 < 5
    assert await handle.get_state() == "waiting"  # released, not lost


async def test_bad_input_raises_before_any_write(make_app: AppFactory) -> None:
    app = make_app(max_payload_bytes=1000)

    @app.task()
    async def noop(data: object) -> None:
        return None

    bad_data = [float("nan"), float("inf"), {1, 2}, object(), b"bytes", {"x": "y" * 2000}]
    for data in bad_data:
        with pytest.raises(taskora.SerializationError):
            noop.dispatch(data)
    bad_options = [
        {"delay": -1},
        {"delay": float("nan")},
        {"delay": float("inf")},
        {"priority": 1.5},
        {"priority": -1},
        {"ttl": 0},
        {"ttl": "soon"},
        {"concurrency_key": "k", "concurrency_limit": 0},
        {"concurrency_limit": 2},
    ]
    for options in bad_options:
        with pytest.raises(ValueError):
            noop.dispatch(1, **options)  # type: ignore[arg-type]
    counts = await app.backend.counts("noop") if app._connected else None
    assert counts is None or sum(counts.values()) == 0


@pytest.mark.parametrize("name", ["a*", "b{c}", "d?", "e[f]", "g h", "tab\t", ""])
def test_bad_task_names_and_prefixes_rejected(name: str) -> None:
    with pytest.raises(taskora.ConfigError):
        taskora.App("memory://", prefix=name or "x:y")
    app = taskora.App("memory://")
    with pytest.raises(taskora.ConfigError):
        app.task(name)(lambda data: None)


def test_invalid_task_options_rejected_at_definition() -> None:
    app = taskora.App("memory://")
    for options in [
        {"concurrency": 0},
        {"timeout": -1},
        {"retry": 3},
        {"concurrency_limit": 0},
        {"ttl": "1 fortnight"},
    ]:
        with pytest.raises(ValueError):
            app.task("t" + uuid.uuid4().hex[:6], **options)(lambda data: None)
    with pytest.raises(ValueError):
        taskora.Retry(attempts=0)
    with pytest.raises(ValueError):
        taskora.Retry(backoff="quadratic")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        taskora.Stall(interval=0)


def test_sync_dispatch_and_blocking_get() -> None:
    app = taskora.App("memory://")

    @app.task()
    async def add(data: list[int]) -> int:
        return sum(data)

    handle = add.dispatch([1, 2, 3])
    assert handle.sync.wait_enqueued() == handle.id
    assert handle.sync.get_state() == "waiting"

    async def serve() -> int:
        async with app:
            return await add.dispatch([4, 5]).wait_for(20)

    # the portal loop owned the app until now; a worker in a new loop takes it over
    assert asyncio.run(serve()) == 9
    asyncio.run(app.close())


async def test_large_results_reach_early_and_late_waiters(make_app: AppFactory) -> None:
    app = make_app()

    @app.task(concurrency=4)
    async def big(data: int) -> str:
        return str(data) * 5000  # far above what travels inline with the completion

    async with app:
        early = [big.dispatch(i) for i in range(5)]
        assert [await h.wait_for(20) for h in early] == [str(i) * 5000 for i in range(5)]
        late = [big.dispatch(i) for i in range(5, 10)]
        await asyncio.gather(*late)
        await asyncio.sleep(0.3)  # they finish before anyone waits
        assert [await h.wait_for(20) for h in late] == [str(i) * 5000 for i in range(5, 10)]
