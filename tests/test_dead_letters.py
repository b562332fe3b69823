"""Dead-letter queue: permanently failed jobs can be listed and retried, atomically."""

from __future__ import annotations

import pytest

import taskora
from tests.conftest import AppFactory


async def test_list_retry_one_and_all(make_app: AppFactory) -> None:
    app = make_app()
    fail = {"on": True}

    @app.task()
    async def fragile(data: int) -> int:
        if fail["on"]:
            raise RuntimeError(f"broken {data}")
        return data

    async with app:
        handles = [fragile.dispatch(i) for i in range(5)]
        for handle in handles:
            with pytest.raises(taskora.JobFailedError):
                await handle.wait_for(20)
        dead = await app.dead_letters.list()
        assert sorted(job.id for job in dead) == sorted(h.id for h in handles)
        assert dead[0].state == taskora.JobState.FAILED
        assert dead[0].error is not None and dead[0].error.startswith("broken ")
        assert {job.data for job in dead} == set(range(5))
        assert len(await app.dead_letters.list(limit=2)) == 2

        fail["on"] = False
        assert await app.dead_letters.retry(handles[0].id) is True
        assert await handles[0].wait_for(20) == 0
        assert await app.dead_letters.retry(handles[0].id) is False  # not dead any more
        assert await app.dead_letters.retry("no-such-job") is False

        assert await app.dead_letters.retry_all() == 4
        assert [await h.wait_for(20) for h in handles[1:]] == [1, 2, 3, 4]
        assert await app.dead_letters.list() == []
        counts = await app.counts("fragile")
        assert counts["completed"] == 5 and counts["failed"] == 0


async def test_retried_job_starts_over(make_app: AppFactory) -> None:
    app = make_app()
    attempts: list[int] = []

    @app.task(retry=taskora.Retry(attempts=2, delay=0.01))
    async def twice(data: None, ctx: taskora.Context) -> int:
        attempts.append(ctx.attempt)
        if len(attempts) <= 2:
            raise RuntimeError("no")
        return ctx.attempt

    async with app:
        handle = twice.dispatch(None)
        with pytest.raises(taskora.JobFailedError):
            await handle.wait_for(20)
        assert await app.dead_letters.retry(handle.id, task="twice") is True
        assert await handle.wait_for(20) == 1
    assert attempts == [1, 2, 1]
