"""The storage contract at the backend boundary, identical on memory and Redis."""

from __future__ import annotations

import asyncio
import uuid

from taskora.backends.base import ClaimOptions, NewJob, Outcome
from tests.conftest import AppFactory


async def _backend(make_app: AppFactory):  # type: ignore[no-untyped-def]
    app = make_app()
    return await app._connected_backend()


async def test_late_ack_from_a_worker_that_lost_its_lock_is_refused(make_app: AppFactory) -> None:
    backend = await _backend(make_app)
    opts = ClaimOptions(lock_ttl_ms=300)
    job_id = str(uuid.uuid4())
    await backend.enqueue("t", [NewJob(id=job_id, data="1")])
    first = await backend.finish_and_claim("t", [], 1, opts, "old")
    assert [c.id for c in first.claimed] == [job_id]
    await asyncio.sleep(0.4)  # the first worker stops renewing: its lock expires
    await backend.stalled_check("t", 1)  # phase 1: seen active
    report = await backend.stalled_check("t", 1)  # phase 2: still active, no lock: recovered
    assert report.recovered == (job_id,)
    second = await backend.finish_and_claim("t", [], 1, ClaimOptions(lock_ttl_ms=30_000), "new")
    assert [c.id for c in second.claimed] == [job_id]
    late = Outcome(job_id, first.claimed[0].token, "completed", result='"late"')
    refused = await backend.finish_and_claim("t", [late], 0, opts, "old")
    assert refused.refused == (job_id,)
    on_time = Outcome(job_id, second.claimed[0].token, "completed", result='"ok"')
    accepted = await backend.finish_and_claim("t", [on_time], 0, opts, "new")
    assert accepted.refused == ()
    terminal = await backend.wait_terminal("t", job_id, 5, None)
    assert terminal is not None and terminal.result == '"ok"'


async def test_stall_max_count(make_app: AppFactory) -> None:
    backend = await _backend(make_app)
    opts = ClaimOptions(lock_ttl_ms=300)
    job_id = str(uuid.uuid4())
    await backend.enqueue("t", [NewJob(id=job_id, data="1")])
    for round_ in range(3):
        claimed = await backend.finish_and_claim("t", [], 1, opts, f"w{round_}")
        assert [c.id for c in claimed.claimed] == [job_id]
        await asyncio.sleep(0.4)
        await backend.stalled_check("t", 2)
        report = await backend.stalled_check("t", 2)
        if round_ < 2:
            assert report.recovered == (job_id,)
        else:
            assert report.failed == (job_id,)
    terminal = await backend.wait_terminal("t", job_id, 5, None)
    assert (
        terminal is not None and terminal.state == "failed" and "stalled" in (terminal.error or "")
    )


async def test_renewed_lock_is_never_stalled(make_app: AppFactory) -> None:
    backend = await _backend(make_app)
    opts = ClaimOptions(lock_ttl_ms=300)
    job_id = str(uuid.uuid4())
    await backend.enqueue("t", [NewJob(id=job_id, data="1")])
    claimed = (await backend.finish_and_claim("t", [], 1, opts, "w")).claimed[0]
    for _ in range(4):
        await asyncio.sleep(0.15)
        assert await backend.extend_locks("t", [(job_id, claimed.token)], 300) == [1]
        report = await backend.stalled_check("t", 1)
        assert report.recovered == () and report.failed == ()
    assert await backend.extend_locks("t", [(job_id, "not-mine")], 300) == [0]


async def test_enqueue_is_idempotent_by_id(make_app: AppFactory) -> None:
    backend = await _backend(make_app)
    job = NewJob(id=str(uuid.uuid4()), data='"x"')
    await backend.enqueue("t", [job])
    await backend.enqueue("t", [job])  # a retried enqueue whose reply was lost
    counts = await backend.counts("t")
    assert counts["waiting"] == 1
    claimed = await backend.finish_and_claim("t", [], 10, ClaimOptions(lock_ttl_ms=1000), "w")
    assert len(claimed.claimed) == 1
