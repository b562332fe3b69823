"""Claim-ahead is invisible (issue 8, section 1): a worker with quick jobs claims some ahead
of its free slots, but those jobs read as waiting until their handler starts, hold no
concurrency slot, go back without a stall count when the worker dies, cancel at once, and
yield to a higher-priority job that arrives while they are held.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import taskora
from taskora.backends.base import ClaimOptions, NewJob, Outcome
from taskora.worker import Worker
from tests.conftest import AppFactory, wait_until
from tests.mp.quick_worker import STALL
from tests.processes import ledger_lines, stop_processes
from tests.redis_server import RedisServer


def _worker(app: taskora.App) -> Worker:
    (worker,) = app._workers
    assert isinstance(worker, Worker)
    return worker


async def _held_ahead(app: taskora.App, at_least: int) -> list[str]:
    """Wait until the worker holds ``at_least`` jobs claimed ahead; return their ids."""
    worker = _worker(app)
    await wait_until(lambda: len(worker.slots.buffered) >= at_least, timeout=30, interval=0.0005)
    return [slot.id for slot in worker.slots.buffered]


async def test_claimed_ahead_jobs_read_as_waiting(make_app: AppFactory) -> None:
    """2,000 no-op jobs drain at concurrency 1: never more than one job reads active, and
    the jobs at the head of the waiting list (the ones a worker holds ahead) show no start."""
    app = make_app(retention=taskora.Retention(completed_max=10_000))
    ahead_seen = 0

    @app.task("noop", concurrency=1)
    async def noop(data: int) -> int:
        return data

    await asyncio.gather(*noop.dispatch_many([{"data": i} for i in range(2000)]))
    backend = app.backend
    async with app:
        worker = _worker(app)
        samples, max_active = 0, 0
        while True:
            counts = await app.counts("noop")
            head = await backend.list_jobs("noop", "waiting", 0, 40)
            ahead_seen = max(ahead_seen, len(worker.slots.buffered))
            samples += 1
            max_active = max(max_active, counts["active"])
            for job_id, fields in head:  # (read after the ids: it may have moved on since)
                if fields["state"] == "waiting":
                    assert "processedOn" not in fields, (job_id, fields)
            assert counts["active"] <= 1, counts
            assert sum(counts.values()) == 2000, counts
            if counts["completed"] == 2000:
                break
            await asyncio.sleep(0)
    assert samples >= 10
    assert ahead_seen > 1, "the worker should have claimed jobs ahead"
    assert max_active <= 1


async def test_strict_mode_holds_only_the_running_job(make_app: AppFactory) -> None:
    """prefetch=0: the worker never claims ahead."""
    app = make_app(prefetch=0)

    @app.task("noop", concurrency=1)
    async def noop(data: int) -> int:
        return data

    handles = noop.dispatch_many([{"data": i} for i in range(300)])
    await asyncio.gather(*handles)
    async with app:
        worker = _worker(app)
        most = 0
        while (await app.counts("noop"))["completed"] < 300:
            most = max(most, len(worker.slots.buffered))
            await asyncio.sleep(0)
    assert most == 0


async def test_prefetch_must_be_a_count() -> None:
    with pytest.raises(taskora.ConfigError):
        taskora.App("memory://", prefetch=-1)


async def test_cancelling_a_claimed_ahead_job_cancels_it_at_once(make_app: AppFactory) -> None:
    app = make_app()
    ran: list[str] = []
    hooked: list[str] = []

    def on_cancel(data: int, ctx: taskora.Context) -> None:
        hooked.append(ctx.id)

    @app.task("short", concurrency=1, on_cancel=on_cancel)
    async def short(data: int, ctx: taskora.Context) -> int:
        ran.append(ctx.id)
        await asyncio.sleep(0.001)
        return data

    handles = short.dispatch_many([{"data": i} for i in range(400)])
    await asyncio.gather(*handles)
    by_id = {h.id: h for h in handles}
    async with app:
        held = await _held_ahead(app, 8)
        victim = by_id[held[-1]]
        answer = await victim._cancel("not needed")
        assert answer == "cancelled"
        assert await victim.get_state() == taskora.JobState.CANCELLED
        worker = _worker(app)
        await wait_until(
            lambda: victim.id not in [slot.id for slot in worker.slots.buffered], timeout=10
        )
        await wait_until(lambda: len(ran) >= 399, timeout=60)
        counts = await app.counts("short")
    with pytest.raises(taskora.JobCancelledError):
        await victim.wait_for(5)
    assert victim.id not in ran
    assert hooked == []
    assert counts["cancelled"] == 1


async def test_a_higher_priority_job_overtakes_claimed_ahead_ones(make_app: AppFactory) -> None:
    app = make_app()
    order: list[str] = []

    @app.task("short", concurrency=1)
    async def short(data: int, ctx: taskora.Context) -> int:
        order.append(ctx.id)
        await asyncio.sleep(0.001)
        return data

    await asyncio.gather(*short.dispatch_many([{"data": i} for i in range(400)]))
    async with app:
        held = set(await _held_ahead(app, 8))
        started_before = len(order)
        urgent = short.dispatch(-1, priority=10)
        await urgent
        assert await urgent.wait_for(30) == -1
    at = order.index(urgent.id)
    overtook = [job_id for job_id in order[started_before:at] if job_id in held]
    # at most the jobs the worker started before it heard of the urgent one
    assert len(overtook) <= 3, (len(overtook), len(held))


# -- worker processes (Redis) -----------------------------------------------------------------


class _Procs:
    def __init__(self, url: str, prefix: str, ledger: Path) -> None:
        self.url, self.prefix, self.ledger = url, prefix, ledger
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, concurrency: int = 1) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "tests.mp.quick_worker", self.url, self.prefix]
        proc = subprocess.Popen(
            [*args, str(self.ledger), str(concurrency)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def starts(self) -> list[tuple[str, int, int]]:
        """(job id, pid, n) per handler start, in the order they were written."""
        out = []
        for line in ledger_lines(self.ledger):
            _, job_id, pid, n = line.split()
            out.append((job_id, int(pid), int(n)))
        return out

    def stop_all(self) -> None:
        stop_processes(self.procs)


@contextlib.contextmanager
def _cluster(tmp_path: Path) -> Iterator[tuple[RedisServer, _Procs, str]]:
    server = RedisServer()
    prefix = "q" + uuid.uuid4().hex[:10]
    procs = _Procs(server.url, prefix, tmp_path / "ledger.txt")
    try:
        yield server, procs, prefix
    finally:
        procs.stop_all()
        server.close()


def _producer(url: str, prefix: str) -> tuple[taskora.App, taskora.Task[Any, int]]:
    app = taskora.App(url, prefix=prefix, defaults=taskora.TaskDefaults(stall=STALL))

    @app.task("quick")
    async def quick(data: dict[str, float]) -> int:  # runs only in the worker processes
        raise AssertionError("the producer never runs jobs")

    return app, quick


async def _started_workers(server: RedisServer, prefix: str, count: int) -> None:
    """Wait until ``count`` worker processes listen for cancellations (they start claiming
    right after)."""

    channel = f"taskora:{prefix}:{{quick}}:cancel"

    def ready() -> bool:
        with server.client() as r:
            ((_, subscribers),) = r.pubsub_numsub(channel)
        return int(subscribers) >= count

    await wait_until(ready, timeout=30, interval=0.02)


async def test_a_killed_worker_gives_back_never_started_jobs_without_a_stall(
    tmp_path: Path,
) -> None:
    """kill -9 a concurrency-1 worker mid-stream of quick jobs: the jobs it held ahead go
    back to the front, in order, with no stall count; every job completes once."""
    with _cluster(tmp_path) as (server, procs, prefix):
        app, quick = _producer(server.url, prefix)
        try:
            handles = quick.dispatch_many([{"data": {"n": i}} for i in range(3000)])
            await asyncio.gather(*handles)
            victim = procs.spawn(1)
            await wait_until(lambda: len(procs.starts()) >= 300, timeout=60, interval=0.001)
            victim.kill()
            victim.wait()
            killed_pid = victim.pid
            await asyncio.sleep(STALL.lock_ttl_ms / 1000 + 0.5)  # its locks expire meanwhile
            procs.spawn(1)
            results = await asyncio.wait_for(asyncio.gather(*(h.result for h in handles)), 120)
            assert results == list(range(3000))
        finally:
            await app.close()
        starts = procs.starts()
        ran_in_victim = {job_id for job_id, pid, _ in starts if pid == killed_pid}
        with server.client() as r:
            base = f"taskora:{prefix}:{{quick}}:"
            stalled = {h.id for h in handles if r.hget(base + h.id, "stalledCount") is not None}
            completed: dict[str, int] = {}
            for _, fields in r.xrange(base + "events"):
                if fields[b"event"] == b"completed":
                    key = fields[b"jobId"].decode()
                    completed[key] = completed.get(key, 0) + 1
    assert len(stalled) <= 1, f"{len(stalled)} jobs stalled; at most the running one may"
    # the stalled job ran in the victim, or was the next one, recorded as started (its handler
    # created) by the time of the kill, before its first line wrote to the ledger
    last = max(n for _, pid, n in starts if pid == killed_pid)
    position = {h.id: i for i, h in enumerate(handles)}
    assert all(j in ran_in_victim or position[j] == last + 1 for j in stalled), (
        "a job that never started got a stall count"
    )
    assert set(completed) == {h.id for h in handles}
    assert all(n == 1 for n in completed.values()), "a job completed twice"
    # the survivor takes the jobs in dispatch order: those given back went to the front
    survivor = [n for job_id, pid, n in starts if pid != killed_pid and job_id not in stalled]
    assert survivor == sorted(survivor)


# One atomic look at the active jobs: per job its concurrency key and its lock (whose token
# starts with the claiming worker's token base).
_HOLDERS = """
local out = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1] .. 'active', 0, -1)) do
  out[#out + 1] = redis.call('HGET', KEYS[1] .. id, 'concurrencyKey') or ''
  out[#out + 1] = redis.call('GET', KEYS[1] .. id .. ':lock') or ''
end
return out
"""


async def test_two_workers_share_a_concurrency_key(tmp_path: Path) -> None:
    """Jobs of one key (limit 2) among plain ones, a concurrency-1 worker process whose jobs
    are known to be quick, and a second one that joins: a worker holds a slot of the key
    only while it runs one of its jobs (never one held ahead), and both run the key's jobs."""
    with _cluster(tmp_path) as (server, procs, prefix):
        app, quick = _producer(server.url, prefix)
        base = f"taskora:{prefix}:{{quick}}:"
        most_held = 0
        try:
            a = procs.spawn(1)
            await _started_workers(server, prefix, 1)
            warm_up = quick.dispatch_many([{"data": {"n": -1}} for _ in range(400)])
            await asyncio.wait_for(asyncio.gather(*(h.result for h in warm_up)), 60)
            keyed = {"concurrency_key": "k", "concurrency_limit": 2}
            items: list[dict[str, Any]] = []
            for i in range(400):  # each job of the key among three plain ones
                items.append({"data": {"n": i}, "options": keyed})
                items += [{"data": {"n": -1, "sleep": 0.001}}] * 3
            handles = quick.dispatch_many(items)
            await asyncio.gather(*handles)
            results = asyncio.gather(*(h.result for h in handles))
            b = procs.spawn(1)  # joins while the first one works through them
            with server.client() as r:
                holders = r.register_script(_HOLDERS)
                while not results.done():
                    flat = holders(keys=[base])
                    held: dict[bytes, int] = {}
                    for key, lock in zip(flat[::2], flat[1::2], strict=True):
                        if key == b"k":
                            worker = lock.split(b":")[0]
                            held[worker] = held.get(worker, 0) + 1
                    most_held = max([most_held, *held.values()])
                    await asyncio.sleep(0.0005)
            await asyncio.wait_for(results, 120)
        finally:
            await app.close()
        by_pid = {a.pid: 0, b.pid: 0}
        for _, pid, n in procs.starts():
            if n >= 0:
                by_pid[pid] += 1
    assert most_held <= 1, "a concurrency-1 worker held two slots of the key"
    assert min(by_pid.values()) >= 10, by_pid


# -- the backend contract of reservations (both backends) ----------------------------------------


async def _backend(make_app: AppFactory) -> Any:
    app = make_app()
    return await app._connected_backend()


async def test_reserved_jobs_stay_waiting_until_started(make_app: AppFactory) -> None:
    backend = await _backend(make_app)
    opts = ClaimOptions(lock_ttl_ms=30_000)
    ids = [str(uuid.uuid4()) for _ in range(4)]
    await backend.enqueue("t", [NewJob(id=i, data="1") for i in ids])
    report = await backend.finish_and_claim("t", [], 1, opts, "w", reserve=2)
    assert [(c.id, c.reserved) for c in report.claimed] == [
        (ids[0], False),
        (ids[1], True),
        (ids[2], True),
    ]
    assert (await backend.counts("t"))["active"] == 1
    assert (await backend.counts("t"))["waiting"] == 3
    listed = await backend.list_jobs("t", "waiting", 0, 10)
    assert [job_id for job_id, _ in listed] == ids[1:]  # claim order
    assert all("processedOn" not in fields for _, fields in listed)
    assert (await backend.get_snapshot("t", ids[1])).state == "waiting"
    first, second = report.claimed[1], report.claimed[2]
    done = Outcome(ids[0], report.claimed[0].token, "completed", result="1")
    start = Outcome(first.id, first.token, "start")
    after = await backend.finish_and_claim("t", [done, start], 0, opts, "w")
    assert after.refused == ()
    assert (await backend.get_snapshot("t", first.id)).state == "active"
    fields = await backend.job_fields("t", first.id)
    assert "processedOn" in fields
    again = await backend.finish_and_claim("t", [start], 0, opts, "w")  # a retried call
    assert again.refused == ()
    # a reservation given back goes to the front; a start after that is refused
    back = await backend.finish_and_claim(
        "t", [Outcome(second.id, second.token, "release")], 0, opts, "w"
    )
    assert back.refused == ()
    listed = await backend.list_jobs("t", "waiting", 0, 10)
    assert [job_id for job_id, _ in listed] == [second.id, ids[3]]
    late = await backend.finish_and_claim(
        "t", [Outcome(second.id, second.token, "start")], 0, opts, "w"
    )
    assert late.refused == (second.id,)


async def test_a_dead_workers_reservations_return_in_order_without_a_stall(
    make_app: AppFactory,
) -> None:
    backend = await _backend(make_app)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    await backend.enqueue("t", [NewJob(id=i, data="1") for i in ids])
    report = await backend.finish_and_claim("t", [], 0, ClaimOptions(lock_ttl_ms=200), "w", 3)
    assert [c.reserved for c in report.claimed] == [True, True, True]
    await asyncio.sleep(0.3)  # the worker is gone: its locks expire
    stall = await backend.stalled_check("t", 1)
    assert stall.returned == tuple(reversed(ids[:3]))  # the last first: each goes in front
    assert stall.recovered == () and stall.failed == ()
    listed = await backend.list_jobs("t", "waiting", 0, 10)
    assert [job_id for job_id, _ in listed] == ids
    assert all("stalledCount" not in fields for _, fields in listed)
    again = await backend.finish_and_claim("t", [], 5, ClaimOptions(lock_ttl_ms=30_000), "v")
    assert [c.id for c in again.claimed] == ids


async def test_keyed_and_ttl_jobs_are_never_claimed_ahead(make_app: AppFactory) -> None:
    backend = await _backend(make_app)
    opts = ClaimOptions(lock_ttl_ms=30_000)
    plain, keyed, ttl = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    await backend.enqueue(
        "t",
        [
            NewJob(id=plain, data="1"),
            NewJob(id=keyed, data="1", concurrency_key="k", concurrency_limit=5),
            NewJob(id=ttl, data="1", ttl_ms=60_000),
        ],
    )
    report = await backend.finish_and_claim("t", [], 0, opts, "w", reserve=5)
    assert [c.id for c in report.claimed] == [plain]  # the claim stops at the keyed job
    listed = await backend.list_jobs("t", "waiting", 0, 10)
    assert [job_id for job_id, _ in listed] == [plain, keyed, ttl]
    now = await backend.finish_and_claim("t", [], 2, opts, "w", reserve=5)
    assert [(c.id, c.reserved) for c in now.claimed] == [(keyed, False), (ttl, False)]
    singleton = ClaimOptions(lock_ttl_ms=30_000, singleton=True)
    assert (await backend.finish_and_claim("t2", [], 0, singleton, "w", reserve=5)).claimed == ()
