"""Redis at maxmemory (docs/design.md#fault-tests, T4) and the eviction-policy check at connect.

With ``noeviction``, Redis refuses a script whose first write would grow memory (a script
that has already written runs to its end: Redis cannot stop it half-way). So an enqueue is
refused whole, while finishes and claims (they delete or pop before they add) go through:
workers drain the queue, retention frees memory, and dispatch works again. As Redis
Functions the same holds by the functions' flags (scripts.py): the dispatch functions are
refused up front, the others run ('allow-oom'). Both ways are tested.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

import taskora
from taskora.backends.redis import RedisBackend
from taskora.backends.redis.resp import ReplyError
from tests.redis_server import RedisServer

BLOB = "x" * 10_000  # 10 KB jobs, as in the plan


@pytest.fixture
def small_server() -> Iterator[RedisServer]:
    server = RedisServer("--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
    yield server
    server.close()


@pytest.mark.parametrize("functions", [True, False], ids=["fcall", "evalsha"])
async def test_dispatch_at_maxmemory_raises_writes_nothing_and_recovers(
    small_server: RedisServer, functions: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RedisBackend, "functions", functions)
    app = taskora.App(
        small_server.url,
        prefix="oom",
        retention=taskora.Retention(completed_max=5),
    )

    @app.task("big")
    async def big(data: dict[str, object]) -> int:
        return int(data["n"])  # type: ignore[call-overload]

    accepted: list[taskora.ResultHandle[int]] = []
    expected: list[int] = []
    refused: list[str] = []
    errors: list[BaseException] = []
    try:
        for n in range(5000):  # 4 MB of 10 KB jobs: a few hundred fit
            handle = big.dispatch({"n": n, "blob": BLOB})
            try:
                await handle
            except taskora.BackendError as exc:
                refused.append(handle.id)
                errors.append(exc)
                if len(refused) >= 3:
                    break
            else:
                accepted.append(handle)
                expected.append(n)
        assert len(refused) == 3, "Redis never ran out of memory"
        backend = app.backend
        assert isinstance(backend, RedisBackend) and backend.client.functions is functions
        assert len(accepted) > 50

        # a batch is refused whole (one script call)
        batch = big.dispatch_many([{"data": {"n": -i, "blob": BLOB}} for i in range(3)])
        for handle in batch:
            with pytest.raises(taskora.BackendError):
                await handle
            refused.append(handle.id)

        for exc in errors:
            message = str(exc)
            assert "out of memory" in message and "maxmemory" in message, message
            assert "script" not in message and "@user_script" not in message, message
            assert not isinstance(exc, ReplyError)
            assert exc.__cause__ is None and exc.__suppress_context__  # no raw reply shown

        # nothing half-written: every accepted job is whole and queued, every refused one absent
        base = "taskora:oom:{big}:"
        with small_server.client() as r:
            queued = {i.decode() for i in r.lrange(base + "wait", 0, -1)}
            assert queued == {h.id for h in accepted}
            for handle in accepted:
                fields = r.hgetall(base + handle.id)
                assert fields[b"state"] == b"waiting"
                assert {b"ts", b"_v", b"attempt", b"maxAttempts", b"data"} <= set(fields)
            for job_id in refused:
                assert not r.exists(base + job_id)
            assert r.zcard(base + "delayed") == 0 and r.llen(base + "active") == 0

        # waiters started while Redis is full get their results once a worker drains it
        results = [asyncio.ensure_future(h.result) for h in accepted]
        await asyncio.sleep(0)
        await app.start()
        done = await asyncio.wait_for(asyncio.gather(*results), timeout=60)
        assert done == expected

        # retention freed the memory: dispatch works again
        again = big.dispatch({"n": 7, "blob": BLOB})
        assert await asyncio.wait_for(again.result, timeout=30) == 7
    finally:
        await app.close(timeout=5)


async def test_eviction_policy_other_than_noeviction_warns_at_connect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = RedisServer("--maxmemory-policy", "allkeys-lru")
    app = taskora.App(server.url, prefix="evict")
    app.task("t")(lambda data: data)
    try:
        with caplog.at_level(logging.INFO, logger="taskora"):
            await app.counts("t")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, caplog.text
        message = warnings[0].getMessage()
        assert "allkeys-lru" in message and "noeviction" in message
        assert warnings[0].name == "taskora.redis"
    finally:
        await app.close()
        server.close()


async def test_noeviction_server_connects_without_warning(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = taskora.App(redis_url, prefix=prefix)
    app.task("t")(lambda data: data)
    try:
        with caplog.at_level(logging.INFO, logger="taskora"):
            await app.counts("t")
        assert not caplog.records, caplog.text
    finally:
        await app.close()


async def test_user_without_config_permission_connects_and_is_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = RedisServer()
    try:
        with server.client() as r:
            r.execute_command(
                "ACL", "SETUSER", "limited", "on", ">pw", "~*", "&*", "+@all", "-config"
            )
        app = taskora.App(f"redis://limited:pw@127.0.0.1:{server.port}/0", prefix="acl")

        @app.task("t")
        async def t(data: int) -> int:
            return data + 1

        with caplog.at_level(logging.INFO, logger="taskora"):
            async with app:
                assert await asyncio.wait_for(t.dispatch(1).result, timeout=20) == 2
        infos = [r.getMessage() for r in caplog.records if r.name == "taskora.redis"]
        assert any("cannot read maxmemory-policy" in m and "NOPERM" in m for m in infos), infos
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    finally:
        server.close()
