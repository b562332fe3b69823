"""Hosts with wrong clocks (docs/design.md#fault-tests, T6; #decisions, 2): due times, ttl, stall
detection and retention follow the Redis server's clock, never a producer's or a worker's.

The host clock is faked, never waited for: ``time.time`` is shifted in this process (the
producer) and in the worker processes (tests/mp/skewed_worker.py), by minutes.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import taskora
from tests.conftest import wait_until
from tests.processes import ledger_lines, stop_processes

TEN_MINUTES = 600.0


def shift_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    real, real_ns = time.time, time.time_ns
    monkeypatch.setattr(time, "time", lambda: real() + seconds)
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() + int(seconds * 1e9))


def fields(url: str, key: str) -> dict[str, str]:
    with redis.Redis.from_url(url) as r:
        return {k.decode(): v.decode() for k, v in r.hgetall(key).items()}


@pytest.mark.parametrize("jump", [TEN_MINUTES, -TEN_MINUTES])
async def test_clock_jump_after_connect_keeps_delays_on_redis_time(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch, jump: float
) -> None:
    """The host clock jumps while a worker waits for a delayed job: the job runs when it is
    due by the Redis clock, and the worker blocks until then (it does not spin)."""
    app = taskora.App(redis_url, prefix=prefix)

    @app.task("tick")
    async def tick(data: int) -> int:
        return data

    async with app:
        warm = tick.dispatch(0)
        assert await asyncio.wait_for(warm.result, timeout=20) == 0
        shift_clock(monkeypatch, jump)
        before = app.backend.round_trips()["block:tick"]  # type: ignore[attr-defined]
        handle = tick.dispatch(1, delay="3s")
        assert await asyncio.wait_for(handle.result, timeout=30) == 1
        trips = app.backend.round_trips()["block:tick"] - before  # type: ignore[attr-defined]
    job = fields(redis_url, f"taskora:{prefix}:{{tick}}:{handle.id}")
    assert int(job["processedOn"]) - int(job["ts"]) >= 3000  # never early
    assert trips <= 8, f"the worker polled Redis {trips} times waiting for one delayed job"


class SkewedWorkers:
    def __init__(self, url: str, prefix: str, ledger: Path) -> None:
        self.url, self.prefix, self.ledger = url, prefix, ledger
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, skew_s: float) -> subprocess.Popen[bytes]:
        args = [self.url, self.prefix, str(skew_s), str(self.ledger)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.mp.skewed_worker", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def starts(self, job_id: str) -> list[int]:
        lines = [line.split() for line in ledger_lines(self.ledger)]
        return [int(pid) for _, jid, pid in lines if jid == job_id]

    def stop_all(self) -> None:
        stop_processes(self.procs)


@pytest.fixture
def skewed(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[SkewedWorkers]:
    workers = SkewedWorkers(redis_url, prefix, tmp_path / "ledger.txt")
    try:
        yield workers
    finally:
        workers.stop_all()


async def test_skewed_producer_and_workers_follow_the_redis_clock(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch, skewed: SkewedWorkers
) -> None:
    """Producer 10 minutes ahead, workers 10 minutes behind and 5 ahead."""
    shift_clock(monkeypatch, TEN_MINUTES)
    app = taskora.App(redis_url, prefix=prefix)

    @app.task("job")
    async def job(data: dict[str, object]) -> int:
        raise AssertionError("runs only in the worker processes")

    @app.task("lonely")
    async def lonely(data: int) -> int:  # no worker: its jobs can only expire
        raise AssertionError("never runs")

    base = f"taskora:{prefix}:{{job}}:"
    try:
        # ttl: a job nobody claims expires after its ttl by the Redis clock
        expiring = lonely.dispatch(1, ttl="1s")
        await expiring
        started = time.monotonic()
        with pytest.raises(taskora.JobExpiredError):
            await asyncio.wait_for(expiring.result, timeout=30)
        assert time.monotonic() - started < 20  # not ten minutes

        # delay: a job delayed 2 s runs 2 s later by the Redis clock, on a worker 10 min behind
        first = skewed.spawn(-TEN_MINUTES)
        delayed = job.dispatch({"n": 1}, delay="2s")
        assert await asyncio.wait_for(delayed.result, timeout=30) == 1
        done = fields(redis_url, base + delayed.id)
        assert int(done["processedOn"]) - int(done["ts"]) >= 2000

        # retention (completed_age 1 s on the workers): trimmed within seconds, not minutes
        with redis.Redis.from_url(redis_url) as r:
            await wait_until(lambda: not r.exists(base + delayed.id), timeout=20)

        # stall detection: the worker 10 min behind dies mid-job; one 5 min ahead recovers it
        held = job.dispatch({"n": 2, "hold": True})
        await wait_until(lambda: skewed.starts(held.id), timeout=20)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = time.monotonic()
        skewed.spawn(TEN_MINUTES / 2)
        assert await asyncio.wait_for(held.result, timeout=30) == 2
        assert time.monotonic() - killed_at < 20  # lock ttl 2 s + 2 checks of 1 s + start-up
        assert len(skewed.starts(held.id)) == 2
        with redis.Redis.from_url(redis_url) as r:
            stalls = [
                f
                for _, f in r.xrange(base + "events")
                if f[b"event"] == b"stalled" and f[b"jobId"].decode() == held.id
            ]
        assert [(f[b"count"], f[b"action"]) for f in stalls] == [(b"1", b"recovered")]
    finally:
        await app.close(timeout=5)
