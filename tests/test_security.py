"""Secrets stay secret, and taskora works as a least-privilege ACL user
(docs/design.md#decisions, 12)."""

from __future__ import annotations

import asyncio
import logging

import pytest

import taskora
from tests.redis_server import RedisServer

SECRET = "s3cr3t-Pa55word-9f1c"


@pytest.fixture(scope="module")
def acl_server() -> object:
    server = RedisServer()
    with server.client() as r:
        r.execute_command(
            "ACL",
            "SETUSER",
            "tenant",
            "on",
            f">{SECRET}",
            "~taskora:acl:*",
            "&taskora:acl:*",
            "+@read",
            "+@write",
            "+@scripting",
            "+@stream",
            "+@pubsub",
            "+@connection",
            "+@fast",
            "+@keyspace",
            "-@dangerous",
        )
        r.execute_command("ACL", "SETUSER", "default", "off")
    yield server
    server.close()


async def test_everything_works_as_a_least_privilege_user(
    acl_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"redis://tenant:{SECRET}@127.0.0.1:{acl_server.port}/0"
    app = taskora.App(
        url,
        prefix="acl",
        defaults=taskora.TaskDefaults(stall=taskora.Stall(interval=1, lock_ttl=2)),
    )
    started = asyncio.Event()

    @app.task(retry=taskora.Retry(attempts=2, delay=0.01))
    async def work(data: int, ctx: taskora.Context) -> int:
        ctx.log.info("working", n=data)
        await ctx.progress(data)
        if data == 13 and ctx.attempt == 1:
            raise RuntimeError("unlucky")
        if data == 99:
            started.set()
            await asyncio.sleep(30)
        return data

    @app.task()
    async def doomed(data: None) -> None:
        raise ValueError("always")

    async with app:
        assert [await work.dispatch(i).wait_for(20) for i in (1, 13)] == [1, 13]
        assert await work.dispatch(5, delay=0.1, priority=3).wait_for(20) == 5
        long = work.dispatch(99)
        await asyncio.wait_for(started.wait(), 20)
        await long.cancel(reason="acl")
        with pytest.raises(taskora.JobCancelledError):
            await long.wait_for(20)
        failing = doomed.dispatch(None)
        with pytest.raises(taskora.JobFailedError):
            await failing.wait_for(20)
        assert await app.dead_letters.retry(failing.id) is True
        with pytest.raises(taskora.JobFailedError):
            await failing.wait_for(20)
        assert (await app.counts("work"))["completed"] == 3
    assert SECRET not in repr(app) and SECRET not in repr(app.backend)
    assert SECRET not in caplog.text

    # The same user cannot touch another tenant's keys: a clear error, no secret in it.
    other = taskora.App(url, prefix="other")

    @other.task()
    async def noop(data: None) -> None:
        return None

    with pytest.raises(taskora.BackendError) as info:
        await noop.dispatch(None)
    assert SECRET not in str(info.value)
    await other.close()


async def test_wrong_password_error_names_address_not_password(acl_server: RedisServer) -> None:
    url = f"redis://tenant:wrong-{SECRET}@127.0.0.1:{acl_server.port}/0"
    app = taskora.App(url, prefix="acl")

    @app.task()
    async def noop(data: None) -> None:
        return None

    with pytest.raises(taskora.BackendError) as info:
        await noop.dispatch(None)
    message = str(info.value)
    assert f"127.0.0.1:{acl_server.port}" in message
    assert SECRET not in message and "wrong-" not in message
    assert SECRET not in repr(app.backend)
    await app.close()


def test_unsupported_url_error_hides_password() -> None:
    with pytest.raises(taskora.ConfigError) as info:
        taskora.App(f"http://user:{SECRET}@example.com")
    assert SECRET not in str(info.value)
