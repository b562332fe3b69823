"""Redis Cluster figures: how evenly 30 tasks load 3 masters, throughput at 3 masters against
1, our routed client against redis-py's RedisCluster, and what WAIT would cost.

    .venv/bin/python benchmarks/cluster.py [--jobs 1000] [--workers 1]

Starts its own clusters from redis-server on loopback ports (tests/redis_cluster.py) and
stops them. Workload: 30 tasks, ``--jobs`` jobs each dispatched in bulk by one producer
process, run by ``--workers`` worker processes (no-op handlers), every result awaited by the
producer. Commands per master come from each master's INFO commandstats.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASKS = [f"task-{i:02d}" for i in range(30)]
PREFIX = "bench"  # one keyspace; a task's slot depends on its name only


def build(url: str, done: Any = None, prefix: str = PREFIX) -> Any:
    import taskora

    app = taskora.App(url, prefix=prefix)
    app.bench_tasks = []
    for name in TASKS:

        async def handler(data: dict[str, int]) -> int:
            with done.get_lock():
                done.value += 1
            return data["n"]

        app.bench_tasks.append(app.task(name, concurrency=50)(handler))
    return app


def _worker(url: str, ready: Any, stop: Any, done: Any) -> None:
    async def main() -> None:
        app = build(url, done)
        async with app:
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    asyncio.run(main())


async def _produce(url: str, jobs: int, done: Any) -> float:
    """Dispatch every job, then wait until the workers ran them all (a shared counter:
    30,000 waiting handles would measure the result waiter, not the cluster)."""
    app = build(url)
    async with _connected(app):
        start = time.perf_counter()
        handles = []
        for task in app.bench_tasks:
            handles += task.dispatch_many([{"data": {"n": i}} for i in range(jobs)])
        await asyncio.gather(*handles)  # every job accepted
        while done.value < len(handles):
            await asyncio.sleep(0.01)
        return len(handles) / (time.perf_counter() - start)


class _connected:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __aenter__(self) -> Any:
        await self.app._connected_backend()
        return self.app

    async def __aexit__(self, *exc: object) -> None:
        await self.app.close()


def _reset(servers: list[Any]) -> None:
    for server in servers:
        with server.client() as c:
            c.execute_command("CONFIG", "RESETSTAT")


def _calls(server: Any) -> int:
    with server.client() as c:
        return sum(int(s["calls"]) for s in c.info("commandstats").values())


def end_to_end(url: str, masters: list[Any], jobs: int, workers: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    stop, done = ctx.Event(), ctx.Value("q", 0)
    readies = [ctx.Event() for _ in range(workers)]
    procs = [ctx.Process(target=_worker, args=(url, r, stop, done)) for r in readies]
    for proc in procs:
        proc.start()
    try:
        for ready in readies:
            if not ready.wait(60):
                raise RuntimeError("a worker did not start")
        _reset(masters)
        rate = asyncio.run(_produce(url, jobs, done))
        calls = [_calls(m) for m in masters]
    finally:
        stop.set()
        for proc in procs:
            proc.join(20)
            if proc.is_alive():
                proc.kill()
    return {"jobs_per_s": rate, "calls": calls}


async def _client_race(url: str, n: int, concurrency: int) -> dict[str, float]:
    """The same EVALSHA (enqueue.lua, one job, 30 tasks in turn) through both clients."""
    import redis.asyncio as aioredis

    from taskora.backends.base import NewJob
    from taskora.backends.redis.backend import RedisBackend
    from taskora.backends.redis.cluster import sharded_command
    from taskora.backends.redis.keys import task_keys
    from taskora.backends.redis.scripts import EnqueueJobs

    backend = RedisBackend(url, prefix="race")
    await backend.connect()
    ours = backend.client
    host, port = url.removeprefix("redis://").split(",")[0].split(":")
    theirs = aioredis.RedisCluster(host=host, port=int(port))
    await theirs.initialize()
    out: dict[str, float] = {}
    try:
        for label, run in (("taskora", ours.execute), ("redis-py", theirs.execute_command)):
            counter = iter(range(n))

            async def one(run: Any = run, label: str = label, counter: Any = counter) -> None:
                for i in counter:
                    task = task_keys("race", TASKS[i % len(TASKS)])
                    call = EnqueueJobs(task, [NewJob(id=f"{label}-{i}", data="1")])
                    await run(*sharded_command(call.command()))

            # the sharded scripts are loaded on every master by our connect
            start = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(concurrency)))
            out[label] = n / (time.perf_counter() - start)
    finally:
        await theirs.aclose()
        await backend.close()
    return out


async def _wait_cost(url: str, n: int, concurrency: int) -> dict[str, float]:
    """Enqueue latency on one task's master, alone and followed by WAIT 1 (one replica)."""
    from taskora.backends.base import NewJob
    from taskora.backends.redis.backend import RedisBackend
    from taskora.backends.redis.cluster import ClusterClient, key_slot, sharded_command
    from taskora.backends.redis.keys import task_keys
    from taskora.backends.redis.scripts import EnqueueJobs

    backend = RedisBackend(url, prefix="wait")
    await backend.connect()
    client = backend.client
    assert isinstance(client, ClusterClient)
    keys = task_keys("wait", "w")
    node = client.node(client.topology.owner(key_slot(keys.base)))
    out: dict[str, float] = {}
    try:
        for label, wait in (("no WAIT", False), ("WAIT 1", True)):
            lat: list[float] = []
            counter = iter(range(n))

            async def one(
                wait: bool = wait,
                label: str = label,
                lat: list[float] = lat,
                counter: Any = counter,
            ) -> None:
                for i in counter:
                    job = NewJob(id=f"{label}{i}", data="1")
                    cmd = sharded_command(EnqueueJobs(keys, [job]).command())
                    t = time.perf_counter()
                    if wait:
                        await node.pipeline([cmd, ("WAIT", 1, 1000)])
                    else:
                        await node.execute(*cmd)
                    lat.append(time.perf_counter() - t)

            await client.execute(*cmd_probe(keys))  # the script is loaded there
            start = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(concurrency)))
            out[f"{label} c={concurrency} jobs/s"] = n / (time.perf_counter() - start)
            out[f"{label} c={concurrency} p50 ms"] = statistics.median(lat) * 1000
    finally:
        await backend.close()
    return out


def cmd_probe(keys: Any) -> tuple[Any, ...]:
    from taskora.backends.base import NewJob
    from taskora.backends.redis.scripts import EnqueueJobs

    return EnqueueJobs(keys, [NewJob(id="probe", data="1")]).command()


def _owners(heads: list[Any]) -> dict[int, Any]:
    """Task name -> the master server owning its slot."""
    from taskora.backends.keys import task_base
    from taskora.backends.redis.cluster import key_slot

    with heads[0].client() as c:
        ranges = [
            (int(e[0]), int(e[1]), int(e[2][1])) for e in c.execute_command("CLUSTER", "SLOTS")
        ]
    by_port = {h.port: h for h in heads}
    out = {}
    for name in TASKS:
        slot = key_slot(task_base(PREFIX, name))
        out[name] = next(by_port[p] for lo, hi, p in ranges if lo <= slot <= hi)
    return out


def tasks_per_master(heads: list[Any]) -> list[int]:
    owners = _owners(heads)
    return [sum(1 for o in owners.values() if o is h) for h in heads]


def balance_tasks(cluster: Any, heads: list[Any]) -> list[int]:
    """Move the (still empty) slots of tasks from the busiest master to the idlest until each
    has its share, as an operator moves hot slots (CLUSTER SETSLOT ... NODE on every node)."""
    from taskora.backends.keys import task_base
    from taskora.backends.redis.cluster import key_slot

    while True:
        owners = _owners(heads)
        counts = {h.port: sum(1 for o in owners.values() if o is h) for h in heads}
        busy = max(heads, key=lambda h: counts[h.port])
        idle = min(heads, key=lambda h: counts[h.port])
        if counts[busy.port] - counts[idle.port] <= 1:
            return [counts[h.port] for h in heads]
        name = next(n for n, o in owners.items() if o is busy)
        slot, target = key_slot(task_base(PREFIX, name)), cluster.node_id(idle)
        for server in heads:
            with server.client() as c:
                c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target)
        cluster.wait_healthy()


def main() -> None:
    from tests.redis_cluster import RedisCluster

    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per task (30 tasks)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--race", type=int, default=20_000, help="commands in the client race")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; 30 tasks x {args.jobs} jobs, {args.workers} worker(s)")

    configs = {  # label -> (cluster, its masters, tasks per master)
        "1 master": 1,
        "3 masters, slots as hashed": 3,
        "3 masters, task slots balanced": 3,
    }
    clusters: dict[str, Any] = {}
    try:
        setups = {}
        for label, masters in configs.items():
            cluster = clusters[label] = RedisCluster(masters=masters)
            heads = cluster.masters()
            balance = "balanced" in label
            placement = balance_tasks(cluster, heads) if balance else tasks_per_master(heads)
            setups[label] = (cluster, heads, placement)
        rates: dict[str, list[float]] = {label: [] for label in configs}
        calls: dict[str, list[int]] = {}
        labels = list(configs)
        for r in range(args.repeat):  # interleaved: a noisy neighbour hits every config alike
            for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
                cluster, heads, _ = setups[label]
                out = end_to_end(cluster.url, heads, args.jobs, args.workers)
                rates[label].append(out["jobs_per_s"])
                calls[label] = [
                    a + b
                    for a, b in zip(calls.get(label, [0] * len(heads)), out["calls"], strict=True)
                ]
        race = asyncio.run(_client_race(setups[labels[-1]][0].url, args.race, 100))
    finally:
        for cluster in clusters.values():
            cluster.close()
    for label in labels:
        counts = calls[label]
        mean = sum(counts) / len(counts)
        spread = ", ".join(f"{c} ({(c - mean) / mean * 100:+.1f}%)" for c in counts)
        runs = ", ".join(f"{x:,.0f}" for x in rates[label])
        print(
            f"{label}: median {statistics.median(rates[label]):,.0f} jobs/s end to end "
            f"(runs: {runs}); tasks per master {setups[label][2]}; commands per master: {spread}"
        )
    base = statistics.median(rates["1 master"])
    for label in labels[1:]:
        print(f"throughput, {label} / 1 master: {statistics.median(rates[label]) / base:.2f}x")
    for label, rate in race.items():
        print(f"client race (EVALSHA enqueue, c=100, 3 masters): {label}: {rate:,.0f} cmds/s")

    ha = RedisCluster(masters=3, replicas=1)
    try:
        for concurrency in (1, 50):
            for label, value in asyncio.run(_wait_cost(ha.url, 5000, concurrency)).items():
                print(f"WAIT cost: {label}: {value:,.2f}")
    finally:
        ha.close()


if __name__ == "__main__":
    main()
