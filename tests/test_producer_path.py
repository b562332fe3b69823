"""The producer's fast path: what it writes is what the general path writes, and what it
leaves in flight is still sent when the App closes.

- ``Packed`` (a script's SHA and keys packed once per task) gives the very bytes of packing
  the whole command;
- job ids come from a batch of random bytes, which a forked child does not share;
- a dispatch's reply settles its handle straight from the connection's reader, and a reply
  still in flight when the App closes is waited for, not dropped.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import hiredis
import pytest

import taskora
from taskora.backends.base import NewJob
from taskora.backends.redis import RedisBackend
from taskora.backends.redis.backend import _script_packer
from taskora.backends.redis.keys import task_keys
from taskora.backends.redis.resp import Packed, RespClient, parse_address
from taskora.backends.redis.scripts import EnqueueJobs
from taskora.task import new_id
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis_only


@pytest.fixture
def server() -> Iterator[RedisServer]:
    s = RedisServer()
    yield s
    s.close()


def test_packed_gives_the_bytes_of_the_whole_command() -> None:
    head = ("EVALSHA", "f" * 40, 2, "{t}:wait", "{t}:ümlaut")
    rests: list[tuple[Any, ...]] = [
        ("x",),
        ("{t}:", 1, "id", '{"a":"é\\n"}', 0, -5, 2.5, "", b"\x00\xffraw"),
        tuple(range(300)),  # a multi-digit argument count in the header
    ]
    for rest in rests:
        assert Packed(head).pack(rest) == hiredis.pack_command((*head, *rest))


def test_the_enqueue_packer_writes_the_command_of_the_call() -> None:
    keys = task_keys("pfx", "tâche")
    jobs = [
        NewJob("a", '{"x":1}'),
        NewJob("b", '"ü"', version=3, max_attempts=4, priority=7, delay_ms=10, ttl_ms=99),
        NewJob("c", "null", concurrency_key="k", concurrency_limit=2, trace='{"t":"1"}'),
    ]
    for functions in (True, False):  # FCALL, or EVALSHA
        packer = _script_packer(EnqueueJobs(keys, jobs[:1]), functions)  # one call's, for all
        assert packer is not None
        for n in (1, 2, 3):
            call = EnqueueJobs(keys, jobs[:n])
            assert packer.pack(call.argv()) == hiredis.pack_command(call.command(functions))


async def test_dispatches_in_flight_when_the_app_closes_are_sent(server: RedisServer) -> None:
    app = taskora.App(server.url, prefix="inflight")

    @app.task()
    async def noop(data: int) -> None:
        return None

    await noop.dispatch(0)  # connected: the next dispatches take the fast path
    with server.client() as r:
        r.execute_command("CLIENT", "PAUSE", 300, "WRITE")  # the reply comes after the pause
    handles = [noop.dispatch(i) for i in range(20)]
    await app.close()  # right away: their batch is not even written yet
    assert all(h._future is not None and h._future.done() for h in handles)
    assert [await h for h in handles] == [h.id for h in handles]

    reader = taskora.App(server.url, prefix="inflight")
    reader.task("noop")(noop.handler)  # type: ignore[arg-type]
    try:
        assert (await reader.counts("noop"))["waiting"] == 21
    finally:
        await reader.close()


async def test_a_fast_send_refused_by_redis_is_retried_and_the_result_still_comes(
    server: RedisServer,
) -> None:
    app = taskora.App(server.url, prefix="noscript")

    @app.task()
    async def double(data: int) -> int:
        return data * 2

    await app.start()
    try:
        assert await double.dispatch(1).result == 2
        backend = app.backend
        assert isinstance(backend, RedisBackend)
        # the fast send is refused: NOSCRIPT (EVALSHA) or "Function not found" (FCALL)
        await backend.client.execute("SCRIPT", "FLUSH")
        await backend.client.execute("FUNCTION", "FLUSH")
        handles = [double.dispatch(i) for i in range(5)]
        assert await asyncio.gather(*(h.result for h in handles)) == [0, 2, 4, 6, 8]
    finally:
        await app.close()


def test_a_forked_child_makes_other_ids_than_its_parent() -> None:
    new_id()  # the parent has a batch of ids ready
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, " ".join(new_id() for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_id() for _ in range(5)}
    assert len(child) == 5 and not child & parent


async def test_a_reply_callback_that_raises_leaves_the_connection_working(
    server: RedisServer,
) -> None:
    client = RespClient(parse_address(server.url))
    seen: list[Any] = []
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))

    def broken(reply: Any) -> None:
        seen.append(reply)
        raise RuntimeError("boom")

    try:
        assert await client.execute("PING") == b"PONG"  # connected: send_now_call writes
        assert client.send_now_call(broken, "ECHO", "one")
        assert client.send_now_call(seen.append, "ECHO", "two")
        assert await client.execute("ECHO", "three") == b"three"
        assert seen == [b"one", b"two"]
        assert [type(c["exception"]) for c in errors] == [RuntimeError]
    finally:
        asyncio.get_running_loop().set_exception_handler(None)
        await client.close()
