"""The claim loop's invariants, checked with the memory backend."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

import taskora
from taskora import claimer
from taskora.backends.base import Claimed, ClaimOptions, FinishReport, NewJob, Outcome
from taskora.errors import BackendError
from taskora.worker import Worker


async def test_jobs_claimed_by_a_finished_wait_are_never_stranded() -> None:
    """A wait that claimed jobs while the loop was busy elsewhere (its wake-up signal
    already consumed) must still hand them over, even when nothing else ever happens."""
    app = taskora.App("memory://")
    ran = asyncio.Event()

    @app.task(concurrency=2)
    async def job(data: None) -> None:
        ran.set()

    backend = await app._connected_backend()
    worker = Worker(app, job, backend)
    await backend.enqueue("job", [NewJob(id="j1", data="null")])

    async def claimed_on_wake() -> tuple[object, ...]:
        report = await backend.finish_and_claim("job", (), 1, ClaimOptions(lock_ttl_ms=30_000), "w")
        return report.claimed

    claimer = worker.claimer
    # the one internal this test sets: a wait that finished while the loop was elsewhere
    claimer._waiter = waiter = asyncio.ensure_future(claimed_on_wake())
    await waiter  # done, and its wake-up is gone: nothing else will ever wake the loop
    claimer.wake.clear()
    loop = asyncio.create_task(claimer.run())
    try:
        await asyncio.wait_for(ran.wait(), 10)
    finally:
        worker.slots.stop()
        await asyncio.wait_for(loop, 10)
    await app.close()


async def test_a_finish_sent_with_the_wait_is_sent_again_when_its_reply_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop does not wait for the reply of a finish it sent along with its next wait
    (finish_then_wait): when that reply fails, the outcome goes back out, not lost."""
    monkeypatch.setattr(claimer, "QUICK_JOB_S", 60.0)  # quick jobs: the finish rides the wait
    app = taskora.App("memory://")

    @app.task(concurrency=1)
    async def job(data: int) -> int:
        return data

    backend = await app._connected_backend()
    sent: list[list[Outcome]] = []
    armed = False

    def finish_then_wait(
        task: str,
        outcomes: Sequence[Outcome],
        claim: int,
        options: ClaimOptions,
        token_base: str,
        timeout_s: float,
        reserve: int = 0,
    ) -> tuple[asyncio.Future[FinishReport], asyncio.Future[tuple[Claimed, ...]]] | None:
        if not armed or sent:
            return None
        sent.append(list(outcomes))  # lost: never applied, and its reply fails
        loop = asyncio.get_running_loop()
        report: asyncio.Future[FinishReport] = loop.create_future()
        loop.call_soon(report.set_exception, BackendError("connection lost"))
        waiter = asyncio.ensure_future(
            backend.wait_for_work(task, timeout_s, claim, options, token_base, reserve)
        )
        return report, waiter

    monkeypatch.setattr(backend, "finish_then_wait", finish_then_wait)
    async with app:
        for i in range(3):  # the worker learns its jobs are quick, and found the queue empty
            assert await job.dispatch(i).wait_for(10) == i
        armed = True
        assert await job.dispatch(7).wait_for(10) == 7
    assert [[o.kind for o in batch] for batch in sent] == [["completed"]]
    await app.close()
