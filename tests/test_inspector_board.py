"""What the inspector gained for the board (docs/design.md#board), on memory, Redis and a Redis
Cluster (whose workflow records spread over every master): workflows listed newest first with
their steps' job states, results and errors, cancel by id (job and workflow), and the store's
own description."""

from __future__ import annotations

import asyncio

import pytest

import taskora
from taskora import chain
from taskora.backends.base import WorkflowPlan, WorkflowStep
from tests.conftest import AppFactory, url_for, wait_until


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend_url(request: pytest.FixtureRequest) -> str:
    return url_for(request)


async def test_workflows_listed_newest_first_with_step_states(make_app: AppFactory) -> None:
    app = make_app()
    viewer = make_app()  # no tasks registered: the board started with --url
    gate = asyncio.Event()

    @app.task()
    async def first(x: int) -> int:
        return x + 1

    @app.task()
    async def held(x: int) -> int:
        await gate.wait()
        return x * 2

    async with app:
        done = (first.s(1) | first.s()).dispatch(name="quick")
        assert await done.wait_for(20) == 3
        await asyncio.sleep(0.005)  # "newest first" is by creation ms: no tie with `done`
        running = chain(first.s(5), held.s(), first.s()).dispatch()
        await running
        insp = viewer.inspect()

        async def held_active() -> bool:
            info = await insp.workflow(running.id)
            return info is not None and info.steps[1].state == "active"

        await wait_until(held_active)
        listed = await insp.workflows()
        assert [w.id for w in listed] == [running.id, done.id]
        assert [w.state for w in listed] == ["running", "completed"]
        assert listed[1].name == "quick" and listed[1].result == 3
        assert [w.id for w in await insp.workflows("completed")] == [done.id]
        assert [w.id for w in await insp.workflows(limit=1, offset=1)] == [done.id]
        info = await insp.workflow(running.id)
        assert info is not None and info.created_at is not None
        assert [(s.task, s.deps) for s in info.steps] == [
            ("first", []),
            ("held", [0]),
            ("first", [1]),
        ]
        assert [s.state for s in info.steps] == ["completed", "active", "pending"]
        assert info.steps[0].data == 5
        assert await insp.workflow("nope") is None
        with pytest.raises(ValueError, match="unknown workflow state"):
            await insp.workflows("bogus")

        assert await insp.cancel_workflow(running.id, "from the board") == "cancelled"
        with pytest.raises(taskora.JobCancelledError):
            await running.wait_for(20)
        assert await insp.cancel_workflow("nope") is None
        gate.set()


async def test_cancel_by_id_and_server_info(
    make_app: AppFactory, is_redis: bool, backend_url: str
) -> None:
    app = make_app()
    viewer = make_app()

    @app.task()
    async def idle(x: int) -> int:
        return x

    handle = idle.dispatch(1, delay=600)
    await handle
    insp = viewer.inspect()
    assert await insp.cancel(handle.id, reason="no longer needed") == "cancelled"
    job = await insp.find(handle.id)
    assert job is not None and job.state == taskora.JobState.CANCELLED
    assert await insp.cancel(handle.id) == "not_cancellable"
    assert await insp.cancel("missing-id") is None

    server = await insp.server()
    if is_redis:
        assert server["backend"] == "redis"
        assert server["version"] and server["used_memory"] > 0 and server["clients"] >= 1
        assert server["masters"] == backend_url.count(",") + 1  # a cluster: every master's INFO
        assert server["used_memory_human"]
    else:
        assert server == {"backend": "memory"}


async def test_a_failed_workflow_shows_the_failing_step(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def ok(x: int) -> int:
        return x + 1

    @app.task()
    async def boom(x: int) -> int:
        raise RuntimeError(f"no good: {x}")

    async with app:
        handle = chain(ok.s(1), boom.s(), ok.s()).dispatch()
        with pytest.raises(taskora.JobFailedError):
            await handle.wait_for(20)
    info = await make_app().inspect().workflow(handle.id)
    assert info is not None and info.state == "failed"
    assert info.error is not None and "no good: 2" in info.error
    assert info.created_at is not None and info.finished_at is not None
    assert info.created_at <= info.finished_at
    first, failed, never = info.steps
    assert (first.state, first.result, first.error) == ("completed", 2, None)
    assert failed.state == "failed" and failed.error is not None and "no good: 2" in failed.error
    assert (never.state, never.result) == ("pending", None)
    # a cancel of an ended workflow changes nothing and says how it ended
    assert await app.inspect().cancel_workflow(handle.id) == "failed"


async def test_workflow_ids_and_records_cover_every_master(make_app: AppFactory) -> None:
    """Twelve records (their hash tags fall in slots 3149 to 16376: every master of a 3-master
    cluster holds some) are each found and read whole."""
    backend = await make_app()._connected_backend()
    plan = WorkflowPlan(
        "two",
        (
            WorkflowStep("a", 1, 1, '{"k": 1}', "", 0, (1,)),
            WorkflowStep("b", 1, 1, None, "#0", 1, ()),
        ),
        "#1",
    )
    ids = [f"wf{i:02d}" for i in range(12)]
    for wf_id in ids:
        assert await backend.workflow_create(wf_id, plan)
    assert sorted(await backend.workflow_ids(100)) == ids
    assert len(await backend.workflow_ids(5)) == 5
    heads = await backend.workflow_records([*ids[:2], "nope"])
    assert heads[2] is None
    assert [(h.state, h.name, h.size, h.left, h.nodes) for h in heads if h] == [
        ("running", "two", 2, 2, ())
    ] * 2
    (record,) = await backend.workflow_records([ids[0]], nodes=True)
    assert record is not None and record.created_ms > 0 and record.finished_ms == 0
    assert [(n.task, n.state, n.deps, n.data) for n in record.nodes] == [
        ("a", "queued", (), '{"k": 1}'),
        ("b", "pending", (0,), None),
    ]
    assert await backend.workflow_records([]) == []
