"""Soak (docs/design.md#fault-tests, T11): 200,000 jobs through 2 worker processes, with retries,
timeouts and cancellations mixed in. Redis memory returns to its baseline within the
retention settings, and worker RSS stays flat.

Marked ``slow`` (left out of ``make test``); run it with
``.venv/bin/python -m pytest -m slow -s tests/test_soak.py`` (``TASKORA_SOAK_JOBS`` sets the
size). It prints its figures: jobs/s, Redis used_memory before/peak/after, worker RSS.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.conftest import wait_until
from tests.mp.soak_worker import build
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TOTAL = int(os.environ.get("TASKORA_SOAK_JOBS", "200000"))
BATCH = 2000
IN_FLIGHT = 4  # batches dispatched and awaited at once
STUCK_S = 60.0  # no job ending for this long fails the test, naming the jobs still open


def kind_of(n: int) -> str:
    if n % 25 == 1:
        return "retry"  # 4 %
    if n % 100 == 2:
        return "timeout"  # 1 %
    if n % 25 == 3:
        return "linger"  # 4 %, cancelled
    return "ok"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class OpenJobs:
    """The jobs whose result is still awaited, and when the last one ended: a hung job fails
    the test within STUCK_S, naming it and its stored state, instead of hanging to the
    pytest timeout."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        self.last_end = time.monotonic()

    def add(self, job_id: str, kind: str, wait: asyncio.Future[object]) -> None:
        self.kinds[job_id] = kind
        wait.add_done_callback(lambda _: self._ended(job_id))

    def _ended(self, job_id: str) -> None:
        self.kinds.pop(job_id, None)
        self.last_end = time.monotonic()

    async def watch(self, r: aioredis.Redis, prefix: str) -> None:
        while True:
            await asyncio.sleep(1)
            if self.kinds and time.monotonic() - self.last_end > STUCK_S:
                stuck = []
                for job_id, kind in list(self.kinds.items())[:5]:
                    key = f"taskora:{prefix}:{{soak}}:{job_id}"
                    fields = await r.hgetall(key)
                    lock, pttl = await r.get(key + ":lock"), await r.pttl(key + ":lock")
                    state = {k.decode(): v.decode() for k, v in fields.items() if k != b"data"}
                    stuck.append(f"{job_id} ({kind}): lock {lock!r} pttl {pttl} ms, {state}")
                raise AssertionError(
                    f"no job ended for {STUCK_S:.0f} s; {len(self.kinds)} still awaited, e.g. "
                    + "; ".join(stuck)
                )


@pytest.fixture
def soak_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def procs(soak_server: RedisServer) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two worker processes, always reaped."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.mp.soak_worker", soak_server.url, "soak"],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


ALLOWED = {
    "ok": {"completed"},
    "retry": {"completed"},
    "timeout": {"JobFailedError"},
    "linger": {"JobCancelledError", "completed"},
}


def check_outcomes(tally: collections.Counter[str]) -> None:
    """Every job ended as its kind should. A waiter may also get JobNotFoundError when the
    job ended and was trimmed (completed_max) before its wait was set up: counted, reported."""
    assert sum(tally.values()) == TOTAL  # no waiter hung
    for key in tally:
        kind, outcome = key.split(":")
        assert outcome in ALLOWED[kind] | {"JobNotFoundError"}, key


async def test_soak_memory_returns_to_baseline(
    soak_server: RedisServer, procs: list[subprocess.Popen[bytes]]
) -> None:
    prefix = "soak"
    app = build(soak_server.url, prefix)
    soak = app.tasks["soak"]
    r = aioredis.Redis.from_url(soak_server.url)
    tally: collections.Counter[str] = collections.Counter()
    samples: dict[str, str] = {}
    peak = 0
    sampling = True
    open_jobs = OpenJobs()

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, int((await r.info("memory"))["used_memory"]))
            await asyncio.sleep(0.25)

    async def run_batch(start: int) -> None:
        ns = range(start, min(start + BATCH, TOTAL))
        handles = soak.dispatch_many([{"data": {"n": n, "kind": kind_of(n)}} for n in ns])
        waits = [asyncio.ensure_future(h.result) for h in handles]  # waiting from dispatch on
        await asyncio.gather(*handles)
        for n, h, w in zip(ns, handles, waits, strict=True):
            open_jobs.add(h.id, kind_of(n), w)
        await asyncio.sleep(0.01)
        await asyncio.gather(
            *(h.cancel("soak") for n, h in zip(ns, handles, strict=True) if kind_of(n) == "linger")
        )
        results = await asyncio.gather(*waits, return_exceptions=True)
        for n, result in zip(ns, results, strict=True):
            kind = kind_of(n)
            if isinstance(result, BaseException):
                tally[f"{kind}:{type(result).__name__}"] += 1
                samples.setdefault(f"{kind}:{type(result).__name__}", str(result)[:200])
            else:
                assert result == n
                tally[f"{kind}:completed"] += 1

    try:
        warm = soak.dispatch({"n": -1, "kind": "ok"})  # connect, and watch the task's results
        assert await asyncio.wait_for(warm.result, timeout=60) == -1
        await asyncio.sleep(1)  # the workers connect and go idle
        baseline = int((await r.info("memory"))["used_memory"])
        sampler = asyncio.create_task(sample())
        rss: dict[str, list[float]] = {}
        started = time.monotonic()
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def gated(start: int) -> None:
            async with gate:
                await run_batch(start)
                done = start // BATCH + 1
                if done == 1:
                    rss["start"] = [rss_mb(p.pid) for p in procs]
                elif done == (TOTAL // BATCH) // 2:
                    rss["middle"] = [rss_mb(p.pid) for p in procs]

        everything = asyncio.ensure_future(
            asyncio.gather(*(gated(s) for s in range(0, TOTAL, BATCH)))
        )
        guard = asyncio.ensure_future(open_jobs.watch(r, prefix))
        await asyncio.wait([everything, guard], return_when=asyncio.FIRST_COMPLETED)
        guard.cancel()
        if not everything.done():
            everything.cancel()
            await asyncio.gather(everything, return_exceptions=True)
            await guard  # raises: which jobs hang, in which state
        await everything
        elapsed = time.monotonic() - started
        rss["end"] = [rss_mb(p.pid) for p in procs]
        sampling = False
        await sampler

        # retention (5 s) ends every finished job; the trim runs with each stall check
        base = f"taskora:{prefix}:{{soak}}:"
        trimmed_at = time.monotonic()

        async def trimmed() -> bool:
            sets = ("completed", "failed", "cancelled", "expired", "wait", "active", "delayed")
            return sum([await r.zcard(base + s) for s in sets[:4]]) == 0 and await r.dbsize() < 30

        await wait_until(trimmed, timeout=120, interval=0.5)
        trim_s = time.monotonic() - trimmed_at
        after = int((await r.info("memory"))["used_memory"])
        streams = {s: await r.xlen(base + s) for s in ("events", "done")}
        keys = sorted(k.decode() for k in await r.keys("*"))

        print(f"\nsoak: {TOTAL} jobs in {elapsed:.1f} s = {TOTAL / elapsed:,.0f} jobs/s")
        print(f"outcomes: {dict(sorted(tally.items()))}")
        print(f"an error of each kind: {samples}")
        mib = 1024 * 1024
        print(
            f"redis used_memory MiB: before {baseline / mib:.2f}, peak {peak / mib:.2f}, "
            f"after {after / mib:.2f} (retention reached {trim_s:.1f} s after the last job)"
        )
        print(f"streams {streams}; keys left {len(keys)}: {keys}")
        print("worker RSS MiB: " + ", ".join(f"{k} {v}" for k, v in rss.items()))

        check_outcomes(tally)
        assert all(v <= 11_000 for v in streams.values())
        # back to the baseline plus the two capped streams (a few MB at most)
        assert after - baseline < 16 * mib
        for start, mid, end in zip(rss["start"], rss["middle"], rss["end"], strict=True):
            assert end <= mid * 1.1 + 8, f"worker RSS grew: {start} -> {mid} -> {end} MiB"
    finally:
        await app.close(timeout=5)
        await r.aclose()
