"""``redis+sentinel://``: the master found through Sentinel, and a failover followed by every
connection by itself. One group per module (1 master, 1 replica, 3 sentinels on loopback,
down-after 1 s); the failover test kills its master, the other tests work whichever server
is master.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskora
from taskora.backends.redis.address import parse_address
from tests.redis_sentinel import MASTER_NAME, SentinelGroup
from tests.redis_server import free_port
from tests.test_faults import Ledger, Workers, producer, wait_for

pytestmark = pytest.mark.redis_only

SECRET = "s3ntinel-pw"


def test_sentinel_urls_parse() -> None:
    address = parse_address(
        f"redis+sentinel://app:{SECRET}@10.0.0.1:26379,[::1]:26380,sentinel-3/orders"
        "?db=2&sentinel_password=other"
    )
    assert address.sentinels == (("10.0.0.1", 26379), ("::1", 26380), ("sentinel-3", 26379))
    assert (address.master_name, address.db, address.username) == ("orders", 2, "app")
    assert address.password == SECRET and address.sentinel_password == "other"
    described = address.describe()
    assert described == (
        "redis+sentinel://app@10.0.0.1:26379,[::1]:26380,sentinel-3:26379/orders?db=2"
    )
    assert SECRET not in repr(address) and "other" not in repr(address)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://h:26379", "names the master"),
        ("redis+sentinel://h:26379/", "names the master"),
        ("redis+sentinel:///mymaster", "at least one sentinel"),
        ("redis+sentinel://h:port/mymaster", "port"),
        ("redis+sentinel://h:26379/mymaster?db=x", "database"),
    ],
)
def test_bad_sentinel_urls_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(taskora.ConfigError) as info:
        taskora.App(url.replace("://", f"://u:{SECRET}@"))
    assert problem in str(info.value) and SECRET not in str(info.value)


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
    ports = [free_port(), free_port()]
    url = f"redis+sentinel://u:{SECRET}@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/{MASTER_NAME}"
    app, double = _app(url)
    with pytest.raises(taskora.BackendError) as info:
        await double.dispatch(1)
    message = str(info.value)
    print(f"\nunreachable sentinels: {message}")
    assert all(f"cannot connect to 127.0.0.1:{port}" in message for port in ports)
    assert SECRET not in message
    await app.close()


async def test_master_killed_jobs_flow_to_the_promoted_replica(
    group: SentinelGroup, tmp_path: Path
) -> None:
    """SIGKILL the master under load: after the promotion jobs flow again, every waiter
    resolves, and what was lost is only what the replica had not received."""
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
            await wait_for(lambda: sum(w.done() for w in waiters) >= 200, 30, "jobs to flow")
            old_port = group.master_port()
            before = len(accepted)
            killed = time.monotonic()
            (group.master if group.master.port == old_port else group.replica).stop(kill=True)
            await wait_for(lambda: group.master_port() != old_port, 30, "the promotion")
            promoted = time.monotonic() - killed
            await wait_for(lambda: len(accepted) >= before + 200, 30, "dispatch to resume")
            stop.set()
            await feeder
            outcomes = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 60)
        after = [handle for at, handle in accepted if at > killed]
        resumed = min(at for at, _ in accepted if at > killed) - killed
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
            f"\nsentinel failover: accepted {len(accepted)} ({before} before the kill), "
            f"refused during the failover {refused}, completed {completed}, lost {len(lost)}, "
            f"duplicated {duplicated}; promotion {promoted:.2f}s, "
            f"first dispatch accepted {resumed:.2f}s after the kill"
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
