"""Handler timeouts share one timer per executor (executor.Deadlines): each job still gets its
own deadline, counted from its own start, and a job that ends first leaves no timer behind.

Every test runs on both backends.
"""

from __future__ import annotations

import asyncio

import pytest

import taskora
from tests.conftest import AppFactory


async def test_each_job_times_out_on_its_own_deadline(make_app: AppFactory) -> None:
    """A quick job first (the one timer is armed for its deadline, then it leaves), then two
    hanging jobs started one after the other: both time out, the quick one completes, and
    later jobs still run."""
    app = make_app()
    release = asyncio.Event()

    @app.task(timeout="300ms", concurrency=3)
    async def job(data: str) -> str:
        if data == "hang":
            await release.wait()
        return data

    try:
        async with app:
            assert await job.dispatch("quick").wait_for(20) == "quick"
            first = job.dispatch("hang")
            await first
            second = job.dispatch("hang")
            for handle in (first, second):
                with pytest.raises(taskora.JobFailedError, match="timed out after 300 ms"):
                    await handle.wait_for(20)
            assert await job.dispatch("after").wait_for(20) == "after"
    finally:
        release.set()


async def test_a_handler_that_swallows_the_timeout_returns_its_value(
    make_app: AppFactory,
) -> None:
    """As with asyncio.timeout: a handler that catches the cancel and returns ends completed."""
    app = make_app()

    @app.task(timeout="200ms")
    async def stubborn(data: None) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(0.01)  # the one cancel was delivered: this await is not cancelled
        return "kept going"

    async with app:
        assert await stubborn.dispatch(None).wait_for(20) == "kept going"


async def test_a_cancel_and_the_timeout_together_end_cancelled(make_app: AppFactory) -> None:
    """A job cancelled while it hangs past its timeout ends cancelled or failed by the timeout,
    never stuck: the two cancels of its runner are told apart."""
    app = make_app()
    started = asyncio.Event()

    @app.task(timeout="200ms")
    async def hang(data: None) -> None:
        started.set()
        await asyncio.sleep(30)

    async with app:
        handle = hang.dispatch(None)
        await started.wait()
        await handle.cancel()
        with pytest.raises((taskora.JobCancelledError, taskora.JobFailedError)):
            await handle.wait_for(20)
        assert await handle.get_state() in ("cancelled", "failed")
