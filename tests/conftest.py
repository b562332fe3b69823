"""Shared fixtures: real redis-server processes, and apps on both backends.

``any_backend`` runs a test once on memory and once on a real Redis: the contract the two
backends share; the contract modules add a third run on a real Redis Cluster (``url_for``).
Each test gets a unique key prefix, so tests never see each other's keys.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

import taskora
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer
from tests.stored import Store


def _import_every_taskora_module() -> None:
    """Import all of taskora now, on the main thread, before any test runs. pytest rewrites
    the modules of every distribution that ships a pytest plugin (ours does), so the first
    import of a module parses its source; CPython 3.11's AST builder breaks when two threads
    parse at once ("AST constructor recursion depth mismatch", seen once in the loop: a lazy
    import on the loop raced one in a handler thread). Nothing is then parsed during tests."""
    for module in pkgutil.walk_packages(taskora.__path__, "taskora."):
        if module.name != "taskora.__main__":
            importlib.import_module(module.name)


_import_every_taskora_module()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """One 3-master cluster for the whole session (about 2 s to form), always torn down."""
    cluster = RedisCluster(masters=3)
    yield cluster
    cluster.close()


def url_for(request: pytest.FixtureRequest) -> str:
    """The URL of the backend a parametrized test runs on: memory, redis or cluster; or
    redis-evalsha: Redis with its scripts sent by EVALSHA, not run as Functions."""
    if request.param == "memory":
        return "memory://"
    if request.param == "cluster":
        return request.getfixturevalue("redis_cluster").url  # type: ignore[no-any-return]
    if request.param == "redis-evalsha":
        monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setattr(taskora.RedisBackend, "functions", False)
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


AppFactory = Callable[..., taskora.App]


@pytest.fixture(params=["memory", "redis"])
def backend_url(request: pytest.FixtureRequest) -> str:
    return url_for(request)


@pytest.fixture
async def make_app(backend_url: str, prefix: str) -> AsyncIterator[AppFactory]:
    """Build apps on the parametrized backend (same prefix: they share one keyspace)."""
    apps: list[taskora.App] = []
    shared_memory: dict[str, Any] = {}

    def factory(**kwargs: Any) -> taskora.App:
        kwargs.setdefault("prefix", prefix)
        if backend_url == "memory://":
            backend = shared_memory.get("backend")
            if backend is None:
                backend = shared_memory["backend"] = taskora.MemoryBackend()
            app = taskora.App(backend, **kwargs)
        else:
            app = taskora.App(backend_url, **kwargs)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        await app.close(timeout=5)


@pytest.fixture
def is_redis(backend_url: str) -> bool:
    return backend_url.startswith("redis")


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.01
) -> None:
    """Wait for a condition driven by events elsewhere; fail loudly on the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
async def store(backend_url: str) -> AsyncIterator[Store]:
    """A view of what the parametrized backend stored (its own client on Redis)."""
    if not backend_url.startswith("redis"):
        yield Store(None)
        return
    seed = backend_url.split(",")[0]  # a cluster: redis-py's cluster client from one seed
    client = (
        aioredis.RedisCluster.from_url(seed)
        if seed != backend_url
        else aioredis.Redis.from_url(backend_url)
    )
    try:
        yield Store(client)
    finally:
        await client.aclose()
