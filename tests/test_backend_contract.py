"""The storage contract at the backend boundary, identical on memory, Redis and a Redis Cluster."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import taskora
from taskora.backends.base import ClaimOptions, NewJob, Outcome, StallReport, Terminal
from tests.conftest import AppFactory, url_for


@pytest.fixture(params=["memory", "redis", "redis-evalsha", "cluster"])
def backend_url(request: pytest.FixtureRequest) -> str:
    return url_for(request)


async def test_the_scripts_run_as_redis_functions_unless_told_not_to(
    make_app: AppFactory, backend_url: str, request: pytest.FixtureRequest
) -> None:
    """What the redis and redis-evalsha runs of this suite exercise (the servers of the
    tests have Functions)."""
    if not backend_url.startswith("redis"):
        pytest.skip("the memory backend runs no scripts")
    backend: Any = await _backend(make_app)
    param = request.node.callspec.params["backend_url"]
    assert backend.client.functions is (param != "redis-evalsha")


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


async def test_an_end_outlives_its_trimmed_job_for_a_waiter_that_looks_late(
    make_app: AppFactory,
) -> None:
    """The waiter's guarantee: an end stays readable while the task's done log keeps it,
    whatever the job retention. Ordered explicitly: the jobs end, retention deletes them, and
    only then does the first waiter of the task look (issue 17: T7 ended one such waiter
    with JobNotFoundError)."""
    backend = await _backend(make_app)
    opts = ClaimOptions(lock_ttl_ms=30_000)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    created = await backend.enqueue("t", [NewJob(id=job_id, data="1") for job_id in ids])
    claimed = (await backend.finish_and_claim("t", [], 4, opts, "w")).claimed
    big = '"' + "x" * 5000 + '"'  # over the inline limit: lives only in the job
    outcomes = [
        Outcome(claimed[0].id, claimed[0].token, "completed", result='"small"'),
        Outcome(claimed[1].id, claimed[1].token, "failed", error="boom"),
        Outcome(claimed[2].id, claimed[2].token, "completed", result=big),
        Outcome(claimed[3].id, claimed[3].token, "completed", result='"no creation time"'),
    ]
    await backend.finish_and_claim("t", outcomes, 0, opts, "w")
    assert await backend.trim("t", taskora.Retention(completed_max=0, failed_max=0)) == 4
    assert (await backend.get_snapshot("t", claimed[0].id)).state is None  # the job is gone
    event = {job_id: r.event_id for job_id, r in zip(ids, created, strict=True)}

    async def late(i: int, known: bool = True) -> Terminal | None:
        job_id = claimed[i].id
        return await backend.wait_terminal("t", job_id, 5, event[job_id] if known else None)

    small, failed, large, unknown = await asyncio.gather(late(0), late(1), late(2), late(3, False))
    assert small == Terminal("completed", result='"small"')
    assert failed == Terminal("failed", error="boom")
    assert unknown == Terminal("completed", result='"no creation time"')
    assert large is not None and large.state == "missing" and "large result" in (large.reason or "")
    never = await backend.wait_terminal("t", str(uuid.uuid4()), 5, None)
    assert never == Terminal("missing", reason="no such job")


async def test_a_job_finished_and_trimmed_between_two_stall_checks_is_left_alone(
    make_app: AppFactory,
) -> None:
    """A stall check that saw a job active, then finds it gone (it completed and retention
    deleted it in between), has nothing to recover: the job must not come back as a
    malformed failure (issue 17: T7 under CPU load ended a waiter so). Ordered explicitly."""
    backend = await _backend(make_app)
    opts = ClaimOptions(lock_ttl_ms=30_000)
    job_id = str(uuid.uuid4())
    (created,) = await backend.enqueue("t", [NewJob(id=job_id, data="1")])
    (claimed,) = (await backend.finish_and_claim("t", [], 1, opts, "w")).claimed
    assert await backend.stalled_check("t", 1) == StallReport((), (), ())  # phase 1: seen
    done = Outcome(job_id, claimed.token, "completed", result='"ok"')
    await backend.finish_and_claim("t", [done], 0, opts, "w")
    assert await backend.trim("t", taskora.Retention(completed_max=0)) == 1
    assert await backend.stalled_check("t", 1) == StallReport((), (), ())
    assert (await backend.get_snapshot("t", job_id)).state is None  # gone, not re-created
    terminal = await backend.wait_terminal("t", job_id, 5, created.event_id)
    assert terminal == Terminal("completed", result='"ok"')
