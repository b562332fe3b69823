"""What the inspector gained for the board (docs/design.md#board), on both backends: workflows
listed newest first with their steps' job states, cancel by id (job and workflow), and the
store's own description."""

from __future__ import annotations

import asyncio

import pytest

import taskora
from taskora import chain
from tests.conftest import AppFactory, wait_until


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


async def test_cancel_by_id_and_server_info(make_app: AppFactory, is_redis: bool) -> None:
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
    else:
        assert server == {"backend": "memory"}
