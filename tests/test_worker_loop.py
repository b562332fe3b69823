"""The claim loop's invariants, checked with the memory backend."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

import taskora
from taskora import claimer
from taskora.backends.base import Claimed, ClaimOptions, FinishReport, NewJob, Outcome
from taskora.errors import BackendError
from taskora.worker import Worker
from tests.conftest import wait_until


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
    """A finish sent along with the next wait (finish_then_wait) whose reply fails: the
    outcome goes back out, not lost (the wait it rode with is still in flight)."""
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


class _Calls:
    """Wraps a backend's finish_and_claim: records each call and the calls in flight, and
    holds each of the first HOLD replies back until the next call has gone out or the loop
    waits with nothing it may send (its next outcome is of a job in flight), so calls
    overlap whenever the loop allows it; one call can be made to fail."""

    HOLD = 10

    def __init__(self, app: taskora.App, backend: Any, fail_call: int = 0) -> None:
        self.app = app
        self.finish = backend.finish_and_claim
        self.sent: list[list[tuple[str, str]]] = []
        self.flying: list[set[str]] = []
        self.most_in_flight = 0
        self.fail_call = fail_call
        self.failed_before_next = False
        backend.finish_and_claim = self

    def _stuck(self) -> bool:
        """The claim loop waits for a wake-up that only a reply can bring."""
        (worker,) = self.app._workers
        assert isinstance(worker, Worker)
        parked = worker.claimer.wake._future
        if parked is None or parked.done() or worker.slots.running or worker.claimer._next:
            return False  # it is busy, a running job will wake it, or it sent the next call
        pending = worker.slots._outgoing
        return not pending or any(pending[0].id in ids for ids in self.flying)

    async def __call__(self, task: str, outcomes: Any, *args: Any) -> Any:
        ids = {o.id for o in outcomes}
        for other in self.flying:  # a job's outcomes are never in two calls at once
            assert not ids & other, (ids, other)
        self.sent.append([(o.id, o.kind) for o in outcomes])
        number = len(self.sent)
        self.flying.append(ids)
        self.most_in_flight = max(self.most_in_flight, len(self.flying))
        try:
            report = None if number == self.fail_call else await self.finish(task, outcomes, *args)
            if number <= self.HOLD:
                await wait_until(lambda: len(self.sent) > number or self._stuck(), interval=0)
            if report is None:
                if len(self.sent) > number:
                    # a call went out behind this one: its reply (claimed jobs) must not
                    # wait for the backoff (an hour here: the jobs would never run)
                    (worker,) = self.app._workers
                    assert isinstance(worker, Worker)
                    worker.claimer._backoff = 3600.0
                    self.failed_before_next = True
                raise BackendError("refused by the test")
            return report
        finally:
            self.flying.remove(ids)


@pytest.mark.parametrize(
    ("concurrency", "prefetch", "fail_call"),
    [(4, 0, 0), (4, 0, 1), (4, 0, 3), (2, 32, 0), (2, 32, 4)],
)
async def test_a_busy_worker_sends_the_next_finish_while_one_is_in_flight(
    concurrency: int, prefetch: int, fail_call: int
) -> None:
    """200 quick jobs: a second finish call goes out before the first answers, no job's
    outcomes ride two calls in flight at once (with claim-ahead a job's start and its end
    are often recorded on either side of a send), and every job runs and completes exactly
    once, also when a call fails and its outcomes are sent again; a failed call does not
    hold back the reply of the call behind it (its jobs would wait out the backoff)."""
    app = taskora.App("memory://", prefetch=prefetch)
    runs: list[int] = []

    @app.task(concurrency=concurrency)
    async def job(data: int) -> None:
        runs.append(data)

    backend = await app._connected_backend()
    calls = _Calls(app, backend, fail_call)
    handles = job.dispatch_many([{"data": i} for i in range(200)])
    await asyncio.gather(*handles)
    async with app:
        await asyncio.wait_for(asyncio.gather(*(h.result for h in handles)), 30)
    assert sorted(runs) == list(range(200))
    assert calls.most_in_flight == 2
    finished = [job_id for call in calls.sent for job_id, kind in call if kind == "completed"]
    if fail_call == 1:  # the first claim failed while the second was in flight
        assert calls.failed_before_next
    again: list[str] = []
    if fail_call > 1:  # the failed call's outcomes were sent again in a later one
        again = [job_id for job_id, kind in calls.sent[fail_call - 1] if kind == "completed"]
        assert again
    assert sorted(finished) == sorted([h.id for h in handles] + again)
    await app.close()
