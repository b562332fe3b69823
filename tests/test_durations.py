"""Every public duration parameter takes seconds, a timedelta or a string like "250ms",
and a bad value raises a ValueError that names the parameter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import taskora
from taskora.context import Context, LocalIO
from tests.conftest import AppFactory, wait_until

# Three spellings of 1.5 s.
FORMS = [1.5, timedelta(seconds=1.5), "1500ms"]
BAD = ["soon", -1, float("nan"), [1]]


def _app() -> taskora.App:
    return taskora.App("memory://")


def _task_option(option: str, read: str) -> Callable[[Any], int]:
    def probe(value: Any) -> int:
        app = _app()
        task = app.task("t", **{option: value})(lambda data: data)
        return int(getattr(task.options, read))

    return probe


def _dispatch_option(option: str, read: str) -> Callable[[Any], int]:
    def probe(value: Any) -> int:
        task = _app().task("t")(lambda data: data)
        job, _ = task._build(None, **{option: value})  # what dispatch() sends
        return int(getattr(job, read))

    return probe


def _retry_error(value: Any) -> int:
    delay = taskora.RetryError("again", delay=value).delay_ms
    assert delay is not None
    return delay


def _ctx_retry(value: Any) -> int:
    delay = Context("id", "t", 1, 0, LocalIO()).retry(delay=value).delay_ms
    assert delay is not None
    return delay


def _defaults_timeout(value: Any) -> int:
    app = taskora.App("memory://", defaults=taskora.TaskDefaults(timeout=value))
    return app.task("t")(lambda data: data).options.timeout_ms


def _optional(value: int | None) -> int:
    assert value is not None
    return value


# (parameter name as the error must say it, probe giving the milliseconds kept)
PARSED: list[tuple[str, Callable[[Any], int]]] = [
    ("delay", _dispatch_option("delay", "delay_ms")),
    ("ttl", _dispatch_option("ttl", "ttl_ms")),
    ("timeout", _task_option("timeout", "timeout_ms")),
    ("ttl", _task_option("ttl", "ttl_ms")),
    ("TaskDefaults.timeout", _defaults_timeout),
    ("Retry.delay", lambda v: taskora.Retry(delay=v).delay_ms),
    ("Retry.max_delay", lambda v: _optional(taskora.Retry(max_delay=v).max_delay_ms)),
    ("Stall.interval", lambda v: taskora.Stall(interval=v).interval_ms),
    ("Stall.lock_ttl", lambda v: taskora.Stall(lock_ttl=v).lock_ttl_ms),
    ("Retention.completed_age", lambda v: taskora.Retention(completed_age=v).completed_age_ms),
    ("Retention.failed_age", lambda v: taskora.Retention(failed_age=v).failed_age_ms),
    ("Debounce.delay", lambda v: taskora.Debounce(key="k", delay=v).delay_ms),
    ("Throttle.window", lambda v: taskora.Throttle(key="k", max=1, window=v).window_ms),
    ("RetryError(delay)", _retry_error),
    ("ctx.retry(delay)", _ctx_retry),
    (
        "shutdown_timeout",
        lambda v: taskora.App("memory://", shutdown_timeout=v).shutdown_timeout_ms,
    ),
]


@pytest.mark.parametrize(
    ("name", "probe"), PARSED, ids=[f"{i}-{n}" for i, (n, _) in enumerate(PARSED)]
)
def test_parsed_duration_parameters(name: str, probe: Callable[[Any], int]) -> None:
    assert [probe(form) for form in FORMS] == [1500, 1500, 1500]
    assert probe("2m") == 120_000
    for bad in BAD:
        with pytest.raises(ValueError, match=name.replace("(", r"\(").replace(")", r"\)")):
            probe(bad)


def test_run_checks_its_shutdown_timeout_before_starting() -> None:
    app = _app()
    app.task("t")(lambda data: data)
    with pytest.raises(ValueError, match="shutdown_timeout"):
        app.run(shutdown_timeout="forever")


# -- waits: the timeout they report is the one given, in every form ------------------------
WAIT_FORMS = [0.05, timedelta(milliseconds=50), "50ms"]


async def test_wait_for_takes_every_form(make_app: AppFactory) -> None:
    app = make_app()
    task = app.task("nobody-runs-this")(lambda data: data)
    handle = task.dispatch({})
    await handle
    for form in WAIT_FORMS:
        with pytest.raises(taskora.TimeoutError) as caught:
            await handle.wait_for(form)
        assert caught.value.timeout_ms == 50
    for bad in BAD:
        with pytest.raises(ValueError, match=r"wait_for\(timeout\)"):
            await handle.wait_for(bad)


async def test_blocking_waits_take_every_form(make_app: AppFactory) -> None:
    app = make_app()
    task = app.task("nobody-runs-this")(lambda data: data)
    handle = task.dispatch({})
    await handle

    def blocking() -> list[Any]:  # in a thread: the blocking forms refuse a running loop
        seen: list[Any] = []
        for call in (handle.get, handle.sync.result):
            for form in WAIT_FORMS:
                try:
                    call(form)
                except taskora.TimeoutError as exc:
                    seen.append(exc.timeout_ms)
            for bad in BAD:
                try:
                    call(bad)
                except ValueError as exc:
                    seen.append(str(exc).split(":")[0].split(" must")[0])
        return seen

    seen = await asyncio.to_thread(blocking)
    assert seen == [50, 50, 50] + ["get(timeout)"] * 4 + [50, 50, 50] + ["sync.result(timeout)"] * 4


@pytest.mark.parametrize("form", [*WAIT_FORMS, None], ids=["float", "timedelta", "str", "bad"])
async def test_close_timeout_takes_every_form(make_app: AppFactory, form: Any) -> None:
    """close(timeout=) gives a job that outlives it back to the queue; a bad value raises
    and stops nothing (it used to be swallowed, leaving the job active until stall recovery)."""
    app = make_app()
    started = asyncio.Event()

    @app.task("sleepy")
    async def sleepy(data: Any) -> None:
        started.set()
        await asyncio.sleep(600)

    await app.start()
    handle = sleepy.dispatch({})
    await asyncio.wait_for(started.wait(), 20)
    if form is None:
        with pytest.raises(ValueError, match=r"close\(timeout\)"):
            await app.close(timeout="soon")
        assert await handle.get_state() == taskora.JobState.ACTIVE
        form = 0
    await app.close(timeout=form)
    await wait_until(lambda: _is_waiting(handle))


async def _is_waiting(handle: taskora.ResultHandle[Any]) -> bool:
    return await handle.get_state() == taskora.JobState.WAITING
