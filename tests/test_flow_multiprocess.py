"""Flow control under real concurrency: several OS processes against one redis-server.

- Producer processes burst throttle dispatches at one key at the same moment: exactly
  ``max`` are accepted across all of them.
- Producer processes burst dedup dispatches at one key: exactly one job owns it.
- Two worker processes run jobs with per-key concurrency limits: handlers count themselves
  in Redis while they run, and no key ever has more than its limit running at once.

Every child is reaped (try/finally, kill on the way out); the tests wait for files and
results with generous deadlines, never for fixed sleeps.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

import taskora

ROOT = Path(__file__).resolve().parents[1]
PRODUCERS = 4


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.procs.flow_procs", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@contextmanager
def _reaped(procs: list[subprocess.Popen[bytes]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - kill -9 cannot be ignored
                proc.kill()
                proc.communicate()


def _wait_for_files(
    paths: list[Path], procs: list[subprocess.Popen[bytes]], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        for proc in procs:
            if proc.poll() is not None and proc.returncode != 0:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"child exited with {proc.returncode}: {out}")
        if time.monotonic() > deadline:
            missing = [p.name for p in paths if not p.exists()]
            raise AssertionError(f"children not ready within {timeout}s: {missing}")
        time.sleep(0.01)


def _finish(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, out.decode()


def _burst(
    redis_url: str, prefix: str, tmp_path: Path, kind: str, count: int
) -> list[dict[str, Any]]:
    """Run PRODUCERS processes that each fire ``count`` dispatches at the same moment."""
    go = tmp_path / f"{kind}.go"
    ready = [tmp_path / f"{kind}.ready.{i}" for i in range(PRODUCERS)]
    outs = [tmp_path / f"{kind}.out.{i}" for i in range(PRODUCERS)]
    procs = [
        _spawn("produce", redis_url, prefix, kind, str(count), str(out), str(rdy), str(go))
        for out, rdy in zip(outs, ready, strict=True)
    ]
    with _reaped(procs):
        _wait_for_files(ready, procs, timeout=60)
        go.write_text("go")
        _finish(procs, timeout=120)
    results = []
    for out in outs:
        results += [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == PRODUCERS * count
    return results


def _base(prefix: str, task: str) -> str:
    return f"taskora:{prefix}:{{{task}}}:"


def test_throttle_burst_from_several_processes_accepts_exactly_max(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    results = _burst(redis_url, prefix, tmp_path, "throttle", count=30)
    accepted = [r["id"] for r in results if r["enqueued"]]
    rejected = [r["id"] for r in results if r["enqueued"] is False]
    assert len(accepted) == 10  # THROTTLE max in tests/procs/flow_procs.py
    assert len(rejected) == PRODUCERS * 30 - 10
    base = _base(prefix, "burst")
    with redis.Redis.from_url(redis_url) as client:
        assert client.get(base + "throttle:burst-key") == b"10"
        assert 0 < client.pttl(base + "throttle:burst-key") <= 3_600_000
        assert client.llen(base + "wait") == 10
        assert all(client.exists(base + job_id) for job_id in accepted)
        assert not any(client.exists(base + job_id) for job_id in rejected)
    assert len({r["id"] for r in results}) == PRODUCERS * 30  # every dispatch had its own id


def test_dedup_burst_from_several_processes_has_exactly_one_owner(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    results = _burst(redis_url, prefix, tmp_path, "dedup", count=10)
    owners = [r["id"] for r in results if r["enqueued"]]
    assert len(owners) == 1
    (owner,) = owners
    assert all(r["existing_id"] == owner for r in results if not r["enqueued"])
    base = _base(prefix, "burst")
    with redis.Redis.from_url(redis_url) as client:
        assert client.get(base + "dedup:burst-key") == owner.encode()
        assert client.hget(base + owner, "dedupKey") == (base + "dedup:burst-key").encode()
        assert client.llen(base + "wait") == 1


LIMITS = {"k0": 2, "k1": 2, "k2": 3, "k3": 1}


async def _dispatch_limited(redis_url: str, prefix: str) -> list[int]:
    app = taskora.App(redis_url, prefix=prefix)

    @app.task("limited")
    async def limited(data: dict[str, Any]) -> int:  # runs in the worker processes
        raise AssertionError("not run here")

    try:
        handles = [
            limited.dispatch({"key": key}, concurrency_key=key, concurrency_limit=limit)
            for _ in range(10)
            for key, limit in LIMITS.items()
        ]
        return list(await asyncio.gather(*(h.wait_for(120) for h in handles)))
    finally:
        await app.close()


def test_concurrency_limits_hold_across_two_worker_processes(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    ready = [tmp_path / f"worker.ready.{i}" for i in range(2)]
    workers = [_spawn("worker", redis_url, prefix, "6", str(path)) for path in ready]
    with _reaped(workers):
        _wait_for_files(ready, workers, timeout=60)
        pids = asyncio.run(_dispatch_limited(redis_url, prefix))
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        _finish(workers, timeout=60)
    assert len(pids) == 10 * len(LIMITS)
    with redis.Redis.from_url(redis_url) as client:
        log = [line.decode().split() for line in client.lrange(f"obs:{prefix}:log", 0, -1)]
        leftover = list(client.scan_iter(match=_base(prefix, "limited") + "conc:*"))
    assert len(log) == len(pids)
    peak: dict[str, int] = defaultdict(int)
    by_pid: dict[str, set[str]] = defaultdict(set)
    for key, running, pid in log:
        peak[key] = max(peak[key], int(running))
        by_pid[key].add(pid)
    for key, limit in LIMITS.items():
        assert peak[key] <= limit, f"{key}: {peak[key]} ran at once, limit {limit}"
    assert peak["k2"] >= 2  # keys really ran concurrently (so the limit was tested)
    assert len({pid for pids_ in by_pid.values() for pid in pids_}) == 2  # both workers ran
    assert any(len(p) == 2 for p in by_pid.values()), "no key was shared by both workers"
    assert leftover == []  # no concurrency slot leaked
