"""Middleware: app -> task -> handler onion, data/result replacement, errors, timeout, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
import pytest

import taskora
from taskora import MiddlewareContext
from tests.conftest import AppFactory, wait_until

Next = Callable[[], Awaitable[Any]]


def tracer(log: list[str], name: str) -> Callable[[MiddlewareContext, Next], Awaitable[None]]:
    async def mw(ctx: MiddlewareContext, call_next: Next) -> None:
        log.append(f"{name}>")
        await call_next()
        log.append(f"<{name}")

    mw.__name__ = name
    return mw


@pytest.mark.parametrize("sync_handler", [False, True])
async def test_onion_order_app_then_task_then_handler(
    make_app: AppFactory, sync_handler: bool
) -> None:
    app = make_app()
    log: list[str] = []
    app.use(tracer(log, "app1"))
    app.use(tracer(log, "app2"))

    def body(data: None) -> str:
        log.append("handler")
        return "ok"

    async def async_body(data: None) -> str:
        return body(data)

    task = app.task("t", middleware=[tracer(log, "task1"), tracer(log, "task2")])(
        body if sync_handler else async_body
    )
    other = app.task("other")(async_body)
    async with app:
        assert await task.dispatch(None).wait_for(20) == "ok"
        inner = ["task1>", "task2>", "handler", "<task2", "<task1"]
        assert log == ["app1>", "app2>", *inner, "<app2", "<app1"]
        log.clear()
        await other.dispatch(None).wait_for(20)  # app middleware wraps every task
        assert log == ["app1>", "app2>", "handler", "<app2", "<app1"]


async def test_data_and_result_replacement_and_job_identity(make_app: AppFactory) -> None:
    app = make_app()
    seen: dict[str, Any] = {}

    async def enrich(ctx: MiddlewareContext, call_next: Next) -> None:
        seen.update(id=ctx.id, attempt=ctx.attempt, task=ctx.task)
        ctx.data = {**ctx.data, "added": True}
        result = await call_next()
        assert result == ctx.result
        ctx.result = {"wrapped": ctx.result}

    @app.task("t", middleware=[enrich])
    async def t(data: dict) -> dict:  # type: ignore[type-arg]
        return {"got": data}

    async with app:
        handle = t.dispatch({"n": 1})
        assert await handle.wait_for(20) == {"wrapped": {"got": {"n": 1, "added": True}}}
    assert seen == {"id": handle.id, "attempt": 1, "task": "t"}


class Out(pydantic.BaseModel):
    value: int


async def test_output_validation_applies_to_the_final_result(make_app: AppFactory) -> None:
    app = make_app()

    async def fix(ctx: MiddlewareContext, call_next: Next) -> None:
        await call_next()
        ctx.result = {"value": "7"}  # replaced after the handler: this is validated, stored

    @app.task("t", middleware=[fix])
    async def t(data: None) -> Out:
        return "garbage"  # type: ignore[return-value]

    async with app:
        assert await t.dispatch(None).wait_for(20) == Out(value=7)


async def test_errors_fail_the_job_under_retry_rules_and_can_be_swallowed(
    make_app: AppFactory,
) -> None:
    app = make_app()
    attempts: list[int] = []

    async def flaky(ctx: MiddlewareContext, call_next: Next) -> None:
        attempts.append(ctx.attempt)
        if ctx.attempt < 2:
            raise RuntimeError("middleware broke")
        await call_next()

    async def swallow(ctx: MiddlewareContext, call_next: Next) -> None:
        try:
            await call_next()
        except ValueError:
            ctx.result = "recovered"

    @app.task("retried", retry=taskora.Retry(attempts=2, delay="10ms"), middleware=[flaky])
    async def retried(data: None) -> str:
        return "done"

    @app.task("failing", middleware=[swallow])
    async def failing(data: None) -> str:
        raise ValueError("handler broke")

    @app.task("hard", middleware=[flaky])
    async def hard(data: None) -> str:
        return "never"

    async with app:
        assert await retried.dispatch(None).wait_for(20) == "done"
        assert attempts == [1, 2]
        assert await failing.dispatch(None).wait_for(20) == "recovered"
        with pytest.raises(taskora.JobFailedError, match="middleware broke"):
            await hard.dispatch(None).wait_for(20)


async def test_call_next_twice_raises(make_app: AppFactory) -> None:
    app = make_app()
    runs: list[int] = []

    async def twice(ctx: MiddlewareContext, call_next: Next) -> None:
        await call_next()
        await call_next()

    @app.task("t", middleware=[twice])
    async def t(data: None) -> None:
        runs.append(1)

    async with app:
        with pytest.raises(taskora.JobFailedError, match="call_next\\(\\) called more than once"):
            await t.dispatch(None).wait_for(20)
    assert runs == [1]


async def test_middleware_runs_inside_the_timeout(make_app: AppFactory) -> None:
    app = make_app()
    saw: list[str] = []

    async def slow(ctx: MiddlewareContext, call_next: Next) -> None:
        try:
            await asyncio.sleep(30)  # the handler is quick; the middleware is not
        except asyncio.CancelledError:
            saw.append("cancelled")
            raise
        await call_next()

    @app.task("t", timeout="200ms", middleware=[slow])
    async def t(data: None) -> None:
        return None

    async with app:
        with pytest.raises(taskora.JobFailedError, match="timed out"):
            await t.dispatch(None).wait_for(20)
    assert saw == ["cancelled"]


async def test_middleware_sees_cancellation(make_app: AppFactory) -> None:
    app = make_app()
    entered = asyncio.Event()
    saw: list[str] = []

    async def watch(ctx: MiddlewareContext, call_next: Next) -> None:
        try:
            await call_next()
        except asyncio.CancelledError:
            saw.append("cancelled")
            raise

    @app.task("t", middleware=[watch])
    async def t(data: None) -> None:
        entered.set()
        await asyncio.sleep(60)

    async with app:
        handle = t.dispatch(None)
        await asyncio.wait_for(entered.wait(), 20)
        await handle.cancel(reason="stop")
        with pytest.raises(taskora.JobCancelledError):
            await handle.wait_for(20)
        await wait_until(lambda: saw == ["cancelled"])


async def test_use_after_start_and_bad_middleware_are_refused(make_app: AppFactory) -> None:
    app = make_app()

    async def ok(ctx: MiddlewareContext, call_next: Next) -> None:
        await call_next()

    def not_async(ctx: MiddlewareContext, call_next: Next) -> None: ...

    with pytest.raises(taskora.ConfigError, match="not callable"):
        app.use(42)  # type: ignore[arg-type]
    with pytest.raises(taskora.ConfigError, match="must be an async function"):
        app.use(not_async)  # type: ignore[arg-type]
    with pytest.raises(taskora.ConfigError, match="must be an async function"):
        app.task("x", middleware=[not_async])(lambda data: None)
    with pytest.raises(taskora.ConfigError, match="list of async callables"):
        app.task("y", middleware=ok)(lambda data: None)

    @app.task("t")
    async def t(data: None) -> None: ...

    async with app:
        with pytest.raises(taskora.ConfigError, match="before the app starts"):
            app.use(ok)
