"""``redis+sentinel://``: the master found through Sentinel, and a failover followed by every
connection by itself. One group per module (1 master, 1 replica, 3 sentinels on loopback,
down-after 1 s): the tests work whichever server is master; the SIGKILL test comes last.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskora
from taskora.backends.redis import connect
from taskora.backends.redis.address import Address, parse_address
from taskora.backends.redis.resp import RespClient
from tests.redis_sentinel import MASTER_NAME, SentinelGroup
from tests.redis_server import RedisServer, refused_port
from tests.test_faults import Ledger, Workers, producer, wait_for

pytestmark = pytest.mark.redis_only

SECRET = "s3ntinel-pw"


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    group = SentinelGroup()
    yield group
    group.close()


def _app(url: str) -> tuple[taskora.App, taskora.Task[int, int]]:
    app = taskora.App(url, prefix="s")

    @app.task("double")
    async def double(n: int) -> int:
        return 2 * n

    return app, double


async def test_round_trip_through_sentinel(group: SentinelGroup) -> None:
    app, double = _app(group.url)
    assert app.backend.url == group.url
    async with app:
        await app.start(concurrency=2)
        assert await double.dispatch(21).wait_for(30) == 42
        port = group.master_port()
        for server in (group.master, group.replica):
            if server.proc is None:
                continue
            with server.client() as admin:
                names = {c["name"].rsplit(":", 1)[0] for c in admin.client_list()}
            # every connection is on the master, the waiter's subscriber included
            expected = {"taskora:main", "taskora:block:double", "taskora:results"}
            assert (expected <= names) == (server.port == port), (server.port, port, names)


async def test_a_master_name_no_sentinel_knows(group: SentinelGroup) -> None:
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in group.sentinels)
    app, double = _app(f"redis+sentinel://u:{SECRET}@{hosts}/no-such-master")
    with pytest.raises(taskora.BackendError) as info:
        await double.dispatch(1)
    message = str(info.value)
    print(f"\nunknown master: {message}")
    assert "'no-such-master'" in message and "does not know it" in message
    assert message.count("does not know it") == len(group.sentinels)
    assert SECRET not in message
    await app.close()


async def test_unreachable_sentinels() -> None:
    with refused_port() as first, refused_port() as second:
        url = f"redis+sentinel://u:{SECRET}@127.0.0.1:{first},127.0.0.1:{second}/{MASTER_NAME}"
        app, double = _app(url)
        with pytest.raises(taskora.BackendError) as info:
            await double.dispatch(1)
        await app.close()
    message = str(info.value)
    print(f"\nunreachable sentinels: {message}")
    assert all(f"cannot connect to 127.0.0.1:{port}" in message for port in (first, second))
    assert SECRET not in message


async def test_a_replica_named_as_master_is_refused(
    group: SentinelGroup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Just after a failover a sentinel may still name the old master: ROLE in the
    handshake refuses it, and the retry asks again."""
    group.wait_healthy()
    real = connect.find_master
    asked: list[int] = []

    async def stale_first(address: Address, timeout: float) -> Address:
        master = await real(address, timeout)
        asked.append(master.port)
        if len(asked) == 1:
            return master.at("127.0.0.1", group.replica_of(master.port).port)
        return master

    monkeypatch.setattr(connect, "find_master", stale_first)
    client = RespClient(parse_address(group.url), "probe")
    try:
        # a read: a replica would serve it, so only the ROLE check can refuse the replica
        assert await client.execute("GET", "probe:nothing") is None
    finally:
        await client.close()
    assert len(asked) == 2, asked


async def test_a_demoted_server_drops_the_connection() -> None:
    """READONLY (a write to a replica) and UNBLOCKED (a blocked pop on a server turned
    replica) drop the connection: the next command opens a new one, which behind Sentinel
    goes to the new master."""
    server, other = RedisServer(), RedisServer()
    client = RespClient(parse_address(server.url), "probe", retries=0)
    blocking = RespClient(parse_address(server.url), "probe-block", retries=0)
    try:
        first_id = await client.execute("CLIENT", "ID")
        popped = asyncio.ensure_future(blocking.execute("BZPOPMIN", "nothing", 20))
        with server.client() as admin:
            await wait_for(
                lambda: any(c["cmd"] == "bzpopmin" for c in admin.client_list()), 20, "the pop"
            )
            admin.replicaof("127.0.0.1", other.port)
        with pytest.raises(ConnectionError, match="UNBLOCKED"):
            await popped
        with pytest.raises(ConnectionError, match="READONLY"):
            await client.execute("SET", "k", "v")
        with server.client() as admin:
            admin.replicaof("no", "one")
        assert await client.execute("SET", "k", "v") == b"OK"
        assert await client.execute("CLIENT", "ID") != first_id
    finally:
        await client.close()
        await blocking.close()
        server.close()
        other.close()


@pytest.mark.parametrize("how", ["SENTINEL FAILOVER", "SIGKILL"])
async def test_failover_under_load(group: SentinelGroup, tmp_path: Path, how: str) -> None:
    """The master goes (a failover asked of Sentinel, or the master SIGKILLed) while
    producer, worker and waiters are busy: after the promotion jobs flow again, every
    waiter resolves, and only what the replica had not received can be lost."""
    group.wait_healthy()
    prefix = "f" + uuid.uuid4().hex[:10]
    workers = Workers(group.url, prefix, tmp_path / "ledger.txt")
    try:
        workers.spawn(10)
        accepted: list[tuple[float, taskora.ResultHandle[int]]] = []
        waiters: list[asyncio.Future[int]] = []
        refused = 0
        async with producer(group.url, prefix) as (_, job):
            stop = asyncio.Event()

            async def feed() -> None:
                nonlocal refused
                n = 0
                while not stop.is_set():
                    handle = job.dispatch({"n": n, "sleep": 0.05})
                    try:
                        await handle
                        accepted.append((time.monotonic(), handle))
                        waiters.append(asyncio.ensure_future(handle.result))
                    except taskora.BackendError:
                        refused += 1
                        await asyncio.sleep(0.05)
                    n += 1
                    await asyncio.sleep(0.002)

            feeder = asyncio.create_task(feed())
            await wait_for(lambda: sum(w.done() for w in waiters) >= 200, 60, "jobs to flow")
            old_port = group.master_port()
            before = len(accepted)
            switched = time.monotonic()
            if how == "SIGKILL":
                group.server(old_port).stop(kill=True)
            else:
                with group.sentinels[0].client() as sentinel:
                    sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
            await wait_for(lambda: group.master_port() != old_port, 60, "the promotion")
            promoted = time.monotonic() - switched
            await wait_for(lambda: len(accepted) >= before + 200, 60, "dispatch to resume")
            stop.set()
            await feeder
            outcomes = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 60)
        after = [handle for at, handle in accepted if at > switched]
        times = [at for at, _ in accepted]
        pause = max(b - a for a, b in itertools.pairwise(times))
        ledger = Ledger.read(workers.ledger)
        lost = [
            handle.id
            for (_, handle), outcome in zip(accepted, outcomes, strict=True)
            if isinstance(outcome, taskora.JobNotFoundError)
        ]
        unexpected = [
            o
            for o in outcomes
            if isinstance(o, BaseException) and not isinstance(o, taskora.JobNotFoundError)
        ]
        completed = sum(not isinstance(o, BaseException) for o in outcomes)
        duplicated = sum(len(ledger.ends[h.id]) > 1 for _, h in accepted)
        print(
            f"\n{how}: accepted {len(accepted)} ({before} before), "
            f"refused {refused}, completed {completed}, lost {len(lost)}, "
            f"duplicated {duplicated}; promotion {promoted:.2f}s, "
            f"longest pause between accepted dispatches {pause:.2f}s"
        )
        assert not unexpected, unexpected
        after_ids = {h.id for h in after}
        assert not after_ids & set(lost), "a job accepted by the new master was lost"
        assert all(
            not isinstance(o, BaseException)
            for (_, h), o in zip(accepted, outcomes, strict=True)
            if h.id in after_ids
        )
        assert completed + len(lost) == len(accepted)
    finally:
        workers.stop_all()
