"""A cancel that reaches the worker in the same event-loop turn as the start of its job, before
the job's runner took its first step (found by the T11 soak, docs/design.md#fault-tests: a job
stayed ``active`` forever, its lock renewed by a live worker that never reported it).

Cancelling an asyncio task before its first step skips its coroutine altogether, so the
executor's ``_execute`` (and the outcome it reports) never ran. The interleaving is driven at
that exact step: the cancel is delivered synchronously right after ``Executor.start``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import taskora
from taskora.executor import Run
from taskora.handoff import Slot
from taskora.worker import Worker
from tests.conftest import AppFactory


def _worker(app: taskora.App) -> Worker:
    (worker, *_) = app._workers
    assert isinstance(worker, Worker)
    return worker


def _start_then(worker: Worker, job_id: str, action: Any) -> None:
    """Run ``action(slot)`` right after the start of ``job_id``, in the same turn."""
    start = worker.executor.start

    def start_then(slot: Slot[Run]) -> None:
        start(slot)
        if slot.id == job_id:
            action(slot)

    worker.executor.start = start_then  # type: ignore[method-assign]


async def test_cancel_heard_before_the_runner_begins_ends_the_job(
    make_app: AppFactory,
) -> None:
    """The cancel message is handled after the job was started but before its runner ran:
    the job must end cancelled (its handler never runs), not stay active forever."""
    app = make_app(prefetch=0)
    ran: list[int] = []

    @app.task("linger", concurrency=1)
    async def linger(data: int) -> int:
        ran.append(data)
        await asyncio.sleep(0.03)
        return data

    handle = linger.dispatch(1)
    await handle
    async with app:
        worker = _worker(app)
        _start_then(worker, handle.id, lambda slot: worker.cancel_requested(slot.id))
        with pytest.raises(taskora.JobCancelledError):
            await asyncio.wait_for(handle.result, 20)
        assert await handle.get_state() == "cancelled"
        assert ran == []
        assert worker.slots.running == []
        # the worker goes on: the next job runs normally
        assert await asyncio.wait_for(linger.dispatch(2).result, 20) == 2
        assert ran == [2]


async def test_a_runner_cancelled_before_it_begins_still_reports(make_app: AppFactory) -> None:
    """The guard: whatever ends a runner without an outcome (here its asyncio task cancelled
    before its first step, bypassing the executor), the slot still reports, so the job is not
    held forever; with no cancel requested it goes back to the queue and runs again."""
    app = make_app(prefetch=0)
    ran: list[int] = []

    @app.task("job", concurrency=1)
    async def job(data: int) -> int:
        ran.append(data)
        return data

    handle = job.dispatch(7)
    await handle
    async with app:
        worker = _worker(app)
        cancelled: list[str] = []

        def cancel_runner(slot: Slot[Run]) -> None:
            if not cancelled:  # the first run only
                cancelled.append(slot.id)
                assert slot.run is not None and slot.run.runner is not None
                slot.run.runner.cancel()

        _start_then(worker, handle.id, cancel_runner)
        assert await asyncio.wait_for(handle.result, 20) == 7
        assert cancelled == [handle.id]
        assert ran == [7]  # released unrun, then claimed again and run once
