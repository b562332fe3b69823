"""The claim loop's invariants, checked with the memory backend."""

from __future__ import annotations

import asyncio

import taskora
from taskora.backends.base import ClaimOptions, NewJob
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
