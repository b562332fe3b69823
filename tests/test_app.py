"""App construction: backends by URL, object or environment; registry; loop handling."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

import taskora


def test_default_is_memory_unless_taskora_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKORA_URL", raising=False)
    assert isinstance(taskora.App().backend, taskora.MemoryBackend)
    monkeypatch.setenv("TASKORA_URL", "redis://127.0.0.1:1/0")
    backend = taskora.App().backend
    assert isinstance(backend, taskora.RedisBackend) and backend.url == "redis://127.0.0.1:1/0"
    assert isinstance(taskora.App("memory://").backend, taskora.MemoryBackend)


def test_backend_urls() -> None:
    assert (
        taskora.App("rediss://u:pw@example.com:6380/2").backend.url
        == "rediss://u@example.com:6380/2"
    )
    assert taskora.App("unix:///tmp/redis.sock").backend.url == "unix:///tmp/redis.sock"
    with pytest.raises(taskora.ConfigError):
        taskora.App("amqp://localhost")


async def test_app_over_an_existing_redis_client(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    app = taskora.App(taskora.RedisBackend(client=client), prefix=prefix)

    @app.task()
    async def double(data: int) -> int:
        return data * 2

    async with app:
        assert await double.dispatch(21).wait_for(20) == 42
    assert await client.exists(f"taskora:{prefix}:meta") == 1  # the prefix reached the backend
    await client.aclose()


def test_registry() -> None:
    app = taskora.App("memory://")

    @app.task
    def bare(data: None) -> None:
        return None

    @app.task()
    def named_by_function(data: None) -> None:
        return None

    assert set(app.tasks) == {"bare", "named_by_function"}
    assert isinstance(bare, taskora.Task)
    with pytest.raises(taskora.ConfigError, match="already registered"):
        app.task("bare")(lambda data: None)
    with pytest.raises(taskora.ConfigError):
        app.task("x")(lambda a, b, c: None)  # handlers take (data) or (data, ctx)


async def test_start_only_named_tasks() -> None:
    app = taskora.App("memory://")
    ran: list[str] = []

    @app.task()
    async def a(data: None) -> None:
        ran.append("a")

    @app.task()
    async def b(data: None) -> None:
        ran.append("b")

    await app.start(tasks=["a"])
    await a.dispatch(None).wait_for(10)
    hb = b.dispatch(None)
    with pytest.raises(taskora.TimeoutError):
        await hb.wait_for(0.3)
    await app.close()
    assert ran == ["a"]
    with pytest.raises(taskora.ConfigError):
        await app.start(tasks=["nope"])


def test_app_survives_several_asyncio_runs() -> None:
    app = taskora.App("memory://")

    @app.task()
    async def inc(data: int) -> int:
        return data + 1

    async def once(n: int) -> int:
        async with app:
            return await inc.dispatch(n).wait_for(10)

    assert asyncio.run(once(1)) == 2
    assert asyncio.run(once(2)) == 3


def test_sync_dispatches_reach_the_store_when_a_loop_takes_the_app_over(
    backend_url: str, prefix: str
) -> None:
    """Dispatched from sync code (the portal loop), not awaited, then ``asyncio.run`` starts
    the app: the portal hands over only after sending what it still held (it was dropped)."""
    app = taskora.App(backend_url, prefix=prefix)

    @app.task()
    async def double(data: int) -> int:
        return data * 2

    handles = [double.dispatch(n) for n in range(5)]

    async def main() -> list[int]:
        async with app:
            return [await double.handle(h.id).wait_for(20) for h in handles]

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]


def test_public_api_is_complete_and_sorted() -> None:
    names = taskora.__all__
    assert names == sorted(names, key=lambda n: (n.startswith("_"), n))
    for name in names:
        assert hasattr(taskora, name), name
    for required in (
        "App",
        "Task",
        "ResultHandle",
        "Context",
        "Retry",
        "Stall",
        "TaskDefaults",
        "Debounce",
        "Throttle",
        "Deduplicate",
        "JobState",
        "LogEntry",
        "TaskoraError",
        "TimeoutError",
        "JobFailedError",
        "JobCancelledError",
        "JobExpiredError",
        "JobNotFoundError",
        "ThrottledError",
        "DuplicateJobError",
        "BackendError",
        "ValidationError",
        "SerializationError",
        "RetryError",
        "RedisBackend",
        "MemoryBackend",
    ):
        assert required in names, required
    for name in names:
        obj = getattr(taskora, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, taskora.TaskoraError), name


def test_job_ids_are_uuid4() -> None:
    import uuid as _uuid

    from taskora.task import new_id

    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for job_id in ids:
        parsed = _uuid.UUID(job_id)
        assert parsed.version == 4 and parsed.variant == _uuid.RFC_4122 and str(parsed) == job_id
