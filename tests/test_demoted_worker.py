"""A worker blocked on a server that turns replica (a failover's demotion): its blocked pop
and the claim pipelined behind it both fail with the dropped connection, and the failure is
handled quietly: no "Future exception was never retrieved" from asyncio."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

import taskora
from tests.redis_server import RedisServer
from tests.test_faults import wait_for

pytestmark = pytest.mark.redis_only


async def test_a_demotion_under_a_blocked_worker_leaves_no_unretrieved_future(
    prefix: str,
) -> None:
    server, other = RedisServer(), RedisServer()
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        app = taskora.App(server.url, prefix=prefix)

        @app.task("double")
        async def double(n: int) -> int:
            return 2 * n

        async with app:
            await app.start(concurrency=1)
            assert await double.dispatch(1).wait_for(30) == 2
            with server.client() as admin:

                def blocked() -> bool:
                    return any("b" in c["flags"] for c in admin.client_list())

                await wait_for(blocked, 30, "the worker to block")
                admin.replicaof("127.0.0.1", other.port)  # UNBLOCKED to the blocked pop
                # a replica refuses BZPOPMIN (READONLY): the worker backs off meanwhile
                await wait_for(lambda: not blocked(), 30, "the blocked pop to end")
                admin.replicaof("no", "one")
                await wait_for(blocked, 30, "the worker to block again")
            assert await double.dispatch(2).wait_for(30) == 4
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
        server.close()
        other.close()
    assert not [c for c in reported if "never retrieved" in c.get("message", "")], reported
