"""Redis Cluster: detection, routing, sharded pub/sub, bad seed lists, and two faults on a
busy task's slot (a live migration with ASK in between, a SIGKILLed master whose replica
takes over). The contract suites run on a cluster too (tests/test_backend_contract.py,
tests/test_transitions.py); this module covers what only a cluster has.

The fault tests print their ledger (accepted / completed / lost / duplicated; run with -s).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import taskora
from taskora.backends.keys import task_base
from taskora.backends.redis import RedisBackend
from taskora.backends.redis.cluster import (
    SHARDED,
    SHARDED_FUNCTIONS,
    SHARDED_LIBRARY,
    key_slot,
    split_seeds,
)
from taskora.backends.redis.scripts import LIBRARY, SCRIPTS
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer, refused_port

STALL = taskora.Stall(interval=1, lock_ttl=2, max_count=3)


@pytest.fixture(scope="module")
def ha_cluster() -> Iterator[RedisCluster]:
    """3 masters with a replica each, for the faults: its own, as they reshape it."""
    cluster = RedisCluster(masters=3, replicas=1)
    yield cluster
    cluster.close()


# -- units ---------------------------------------------------------------------------------------
def test_seed_lists_split_into_one_url_per_node() -> None:
    assert split_seeds("redis://h:1/0") == ["redis://h:1/0"]
    assert split_seeds("redis://u:p@h1:7000,h2:7001/0?x=1") == [
        "redis://u:p@h1:7000/0?x=1",
        "redis://u:p@h2:7001/0?x=1",
    ]
    assert split_seeds("rediss://h1:1, h2:2") == ["rediss://h1:1", "rediss://h2:2"]


def test_sharded_scripts_publish_only_with_spublish() -> None:
    """Every script that publishes has a variant saying SPUBLISH instead, nothing else."""
    publishing = [s for s in SCRIPTS.values() if "redis.call('PUBLISH'" in s.source]
    assert publishing  # results and cancellations are published by scripts
    for script in SCRIPTS.values():
        sha, source = SHARDED[script.sha]
        assert "redis.call('PUBLISH'" not in source
        assert source.replace("'SPUBLISH'", "'PUBLISH'") == script.source
        assert (sha != script.sha) == (script in publishing)


def test_the_sharded_library_publishes_only_with_spublish() -> None:
    """The Functions library's cluster variant: SPUBLISH, and its own name (so its own
    function names), nothing else."""
    assert "redis.call('PUBLISH'" in LIBRARY.code
    assert "redis.call('PUBLISH'" not in SHARDED_LIBRARY.code
    assert SHARDED_LIBRARY.name != LIBRARY.name
    plain = SHARDED_LIBRARY.code.replace("'SPUBLISH'", "'PUBLISH'")
    assert plain.replace(SHARDED_LIBRARY.name, LIBRARY.name) == LIBRARY.code
    assert sorted(SHARDED_FUNCTIONS) == sorted(LIBRARY.functions.values())
    assert sorted(SHARDED_FUNCTIONS.values()) == sorted(SHARDED_LIBRARY.functions.values())


def test_key_slots_match_the_server(redis_cluster: RedisCluster) -> None:
    keys = ["plain", "taskora:{job}:wait", "{}x", "a{b}c{d}", "{user1000}.following", "é{ü}"]
    with redis_cluster.servers[0].client() as c:
        for key in keys:
            assert key_slot(key) == c.execute_command("CLUSTER", "KEYSLOT", key)


# -- routing -------------------------------------------------------------------------------------
async def test_a_cluster_is_found_and_every_task_runs_on_its_own_slot(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    app = taskora.App(redis_cluster.url, prefix=prefix)
    names = [f"t{i}" for i in range(12)]
    tasks = {name: app.task(name)(_double) for name in names}
    async with app:
        handles = [tasks[name].dispatch(i) for i, name in enumerate(names)]
        assert [await h.wait_for(30) for h in handles] == [2 * i for i in range(len(names))]
        backend = await app._connected_backend()
        assert backend.cluster is not None
        # inspector task discovery SCANs every master
        assert set(names) <= set(await backend.task_names())
        per_node = backend.client.commands_per_node()
    owners = {redis_cluster.master_of(key_slot(task_base(prefix, n))).port for n in names}
    assert len(owners) > 1  # the tasks spread over several masters ...
    assert {port for (_, port), n in per_node.items() if n} >= owners  # ... and were served there


async def _double(n: int) -> int:
    return 2 * n


async def test_results_and_cancels_travel_on_sharded_pubsub(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    """Scripts SPUBLISH on the task's slot; nothing is PUBLISHed cluster-wide."""
    for server in redis_cluster.alive():
        with server.client() as c:
            c.execute_command("CONFIG", "RESETSTAT")
    app = taskora.App(redis_cluster.url, prefix=prefix)
    started = asyncio.Event()

    @app.task("slow")
    async def slow(_: int) -> int:
        started.set()
        await asyncio.sleep(60)
        return 0

    quick = app.task("quick")(_double)
    async with app:
        assert await quick.dispatch(4).wait_for(30) == 8
        handle = slow.dispatch(1)
        await started.wait()
        await handle.cancel()
        with pytest.raises(taskora.JobCancelledError):
            await handle.wait_for(30)
    calls: Counter[str] = Counter()
    for server in redis_cluster.alive():
        with server.client() as c:
            for name, stats in c.info("commandstats").items():
                calls[name.removeprefix("cmdstat_")] += int(stats["calls"])
    assert calls["spublish"] >= 2 and calls["ssubscribe"] >= 2
    assert calls["publish"] == 0 and calls["subscribe"] == 0
    assert calls["fcall"] > 0 and calls["evalsha"] == 0  # the sharded library's functions


async def test_a_flushed_library_is_loaded_again_on_every_master(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    """FUNCTION FLUSH everywhere (as a node restarted empty): the next call that misses
    its function loads the library on every master, and carries on."""
    app = taskora.App(redis_cluster.url, prefix=prefix)
    names = [f"t{i}" for i in range(6)]
    tasks = {name: app.task(name)(_double) for name in names}
    async with app:
        assert await tasks[names[0]].dispatch(1).wait_for(30) == 2
        for server in redis_cluster.masters():
            with server.client() as c:
                c.execute_command("FUNCTION", "FLUSH")
        handles = [tasks[name].dispatch(i) for i, name in enumerate(names)]
        assert [await h.wait_for(30) for h in handles] == [2 * i for i in range(len(names))]
    for server in redis_cluster.masters():
        with server.client() as c:
            listed = c.execute_command("FUNCTION", "LIST", "LIBRARYNAME", SHARDED_LIBRARY.name)
        assert len(listed) == 1


# -- bad input ------------------------------------------------------------------------------------
async def test_seeds_of_two_clusters_are_refused(
    redis_cluster: RedisCluster, ha_cluster: RedisCluster
) -> None:
    a, b = redis_cluster.servers[0], ha_cluster.servers[0]
    url = f"redis://:s3cret-pw@127.0.0.1:{a.port},127.0.0.1:{b.port}/0"
    with pytest.raises(taskora.BackendError) as info:
        await RedisBackend(url.replace(":s3cret-pw@", "")).connect()
    assert "disagree" in str(info.value) and f"127.0.0.1:{b.port}" in str(info.value)
    backend = RedisBackend(url)
    with pytest.raises(taskora.BackendError) as info:
        await backend.connect()  # (the password is refused by both: still one clear error)
    assert "s3cret" not in str(info.value) and "s3cret" not in repr(backend)


async def test_a_cluster_node_beside_a_plain_redis_is_refused(
    redis_cluster: RedisCluster, redis_server: RedisServer
) -> None:
    url = f"redis://127.0.0.1:{redis_cluster.servers[0].port},127.0.0.1:{redis_server.port}"
    with pytest.raises(taskora.BackendError, match=r"disagree.*plain Redis"):
        await RedisBackend(url).connect()


async def test_an_unreachable_seed_list_is_one_clear_error() -> None:
    with refused_port() as first, refused_port() as second:
        url = f"redis://user:s3cret-pw@127.0.0.1:{first},127.0.0.1:{second}/0"
        with pytest.raises(taskora.BackendError) as info:
            await RedisBackend(url).connect()
    text = str(info.value)
    assert "no seed node answered" in text and "s3cret" not in text
    assert all(f"127.0.0.1:{port}" in text for port in (first, second))


async def test_one_live_seed_is_enough(redis_cluster: RedisCluster, prefix: str) -> None:
    with refused_port() as dead:
        url = f"redis://127.0.0.1:{dead},127.0.0.1:{redis_cluster.servers[1].port}"
        app = taskora.App(url, prefix=prefix)
        task = app.task("t")(_double)
        async with app:
            assert await task.dispatch(5).wait_for(30) == 10


# -- faults ---------------------------------------------------------------------------------------
@dataclass
class Run:
    """What a busy task saw: jobs accepted, their ends, and every handler run."""

    accepted: list[str] = field(default_factory=list)
    refused: int = 0
    runs: Counter[str] = field(default_factory=Counter)
    ends: dict[str, str] = field(default_factory=dict)
    replies: dict[str, int] = field(default_factory=dict)
    topology: Any = None

    def report(self, what: str) -> str:
        completed = sum(1 for e in self.ends.values() if e == "completed")
        lost = [job for job in self.accepted if self.ends.get(job) != "completed"]
        duplicated = sum(1 for n in self.runs.values() if n > 1)
        return (
            f"{what}: accepted={len(self.accepted)} refused={self.refused} "
            f"completed={completed} lost={len(lost)} duplicated={duplicated}"
        )


@contextlib.asynccontextmanager
async def busy_task(url: str, prefix: str, run: Run) -> AsyncIterator[Callable[[], None]]:
    """A worker (concurrency 8) and a producer dispatching a job every few ms, until the
    returned function stops the producer; then every accepted job is waited for."""
    app = taskora.App(url, prefix=prefix, defaults=taskora.TaskDefaults(stall=STALL))

    @app.task("busy", concurrency=8)
    async def busy(n: int, ctx: taskora.Context) -> int:
        run.runs[ctx.id] += 1
        await asyncio.sleep(0.005)
        return n

    stop = asyncio.Event()
    handles: list[taskora.ResultHandle[int]] = []

    async def produce() -> None:
        n = 0
        while not stop.is_set():
            handle = busy.dispatch(n)
            try:
                run.accepted.append(await handle)
                handles.append(handle)
            except taskora.BackendError:
                run.refused += 1
            n += 1
            await asyncio.sleep(0.003)

    async with app:
        run.topology = (await app._connected_backend()).cluster
        producer = asyncio.create_task(produce())
        yield stop.set
        stop.set()
        await producer
        run.replies = dict(run.topology.replies)
        for handle, job_id in zip(handles, run.accepted, strict=True):
            try:
                await handle.wait_for(60)
                run.ends[job_id] = "completed"
            except taskora.JobNotFoundError:
                run.ends[job_id] = "missing"


async def _until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _migrate(cluster: RedisCluster, slot: int, batch: int) -> int:
    """Move a slot to another master while it is in use: IMPORTING / MIGRATING, MIGRATE in
    batches of ``batch`` keys (clients meanwhile get ASK or TRYAGAIN), then hand it over.
    Returns the number of keys moved."""
    source = cluster.master_of(slot)
    target = next(s for s in cluster.masters() if s.port != source.port)
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    moved = 0
    with source.client() as src, target.client() as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while True:
            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 10_000, "KEYS", *keys)
            moved += len(keys)
            time.sleep(0.01)  # let clients hit the half-moved slot
        for node in (dst, src):
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    for server in cluster.masters():
        if server.port not in (source.port, target.port):
            with server.client() as c:
                c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    return moved


async def _live_migration(cluster: RedisCluster, seconds: float, batch: int) -> Run:
    prefix = "m" + uuid.uuid4().hex[:10]
    slot = key_slot(task_base(prefix, "busy"))
    run = Run()
    async with busy_task(cluster.url, prefix, run) as stop:
        await _until(lambda: len(run.runs) >= 50, "the task to get busy")
        moved = await asyncio.to_thread(_migrate, cluster, slot, batch)
        before = len(run.runs)
        await _until(lambda: len(run.runs) >= before + 50, "work after the migration")
        await asyncio.sleep(seconds)
        stop()
    print(run.report(f"live migration of slot {slot} ({moved} keys, MIGRATE {batch} at a time)"))
    print(f"  replies followed: {run.replies}")
    return run


async def test_live_migration_of_a_busy_slot_loses_nothing(ha_cluster: RedisCluster) -> None:
    run = await _live_migration(ha_cluster, seconds=0.5, batch=1000)
    assert run.replies.get("MOVED", 0) + run.replies.get("ASK", 0) > 0  # it was followed
    assert run.accepted and all(run.ends.get(job) == "completed" for job in run.accepted)
    assert all(n == 1 for n in run.runs.values())
    ha_cluster.wait_healthy()


async def _failover(cluster: RedisCluster, takeover: bool, jobs_after: int) -> Run:
    prefix = "f" + uuid.uuid4().hex[:10]
    slot = key_slot(task_base(prefix, "busy"))
    run = Run()
    async with busy_task(cluster.url, prefix, run) as stop:
        await _until(lambda: len(run.runs) >= 50, "the task to get busy")
        master = cluster.master_of(slot)
        replica = cluster.replica_of(master)
        master.stop(kill=True)
        killed = time.monotonic()
        if takeover:
            with replica.client() as c:
                c.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
        killed_at = len(run.accepted)
        await _until(lambda: len(run.accepted) > killed_at, "a dispatch after the kill")
        resumed = time.monotonic() - killed
        await _until(lambda: len(run.accepted) >= killed_at + jobs_after, "dispatches after it")
        await _until(lambda: len(run.runs) >= killed_at + jobs_after, "work after failover")
        stop()
    how = "CLUSTER FAILOVER TAKEOVER" if takeover else "automatic failover"
    print(run.report(f"SIGKILL of slot {slot}'s master, {how}"))
    print(f"  dispatch resumed {resumed:.2f}s after the kill; replies: {run.replies}")
    assert len(run.ends) == len(run.accepted)  # every waiter got an answer
    after = run.accepted[killed_at + 10 :]
    assert after and all(run.ends[job] == "completed" for job in after)
    return run


async def test_failover_of_a_busy_master_workers_and_waiters_carry_on(
    ha_cluster: RedisCluster,
) -> None:
    """SIGKILL the master of a busy task's slot, promote its replica (CLUSTER FAILOVER
    TAKEOVER): dispatch, work and waiting resume on the new master. Writes the replica had
    not received when the master died are lost (asynchronous replication): reported, and
    every waiter still gets an answer (JobNotFoundError for such a job)."""
    await _failover(ha_cluster, takeover=True, jobs_after=100)


@pytest.mark.slow
async def test_automatic_failover_soak() -> None:
    """The cluster promotes the replica by itself (node timeout 1 s); more work after."""
    cluster = RedisCluster(masters=3, replicas=1)
    try:
        await _failover(cluster, takeover=False, jobs_after=2000)
    finally:
        cluster.close()


@pytest.mark.slow
@pytest.mark.parametrize("batch", [10, 1000])
async def test_live_migration_soak(ha_cluster: RedisCluster, batch: int) -> None:
    """Longer, and (batch 10) with the slot's keys split between two nodes for a while."""
    run = await _live_migration(ha_cluster, seconds=5, batch=batch)
    assert run.accepted and all(run.ends.get(job) == "completed" for job in run.accepted)
    assert all(n == 1 for n in run.runs.values())
