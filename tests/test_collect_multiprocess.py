"""Collect under real concurrency (docs/design.md#collect): 4 producer processes append to
two keys of one collect task while a worker process runs the batches; the worker is killed
(SIGKILL) while a batch runs, and a second worker takes over. Every item is delivered in
exactly one batch job, and the interrupted batch runs again as the same job with the same
items. Children are always reaped; waits are for files and Redis state, never fixed sleeps.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import redis

from tests.test_flow_multiprocess import _reaped, _wait_for_files

ROOT = Path(__file__).resolve().parents[1]
PRODUCERS = 4
COUNT = 300


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.procs.collect_procs", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_no_item_lost_or_doubled_with_four_producers_and_a_killed_worker(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    base = f"taskora:{prefix}:{{batch}}:"
    runs_key = f"obs:{prefix}:runs"
    go = tmp_path / "go"
    ready = [tmp_path / f"ready.{i}" for i in range(PRODUCERS)]
    w1_ready, w2_ready = tmp_path / "w1", tmp_path / "w2"
    procs: list[subprocess.Popen[bytes]] = []
    with _reaped(procs), redis.Redis.from_url(redis_url) as client:
        worker1 = spawn("worker", redis_url, prefix, str(w1_ready))
        procs.append(worker1)
        producers = [
            spawn("produce", redis_url, prefix, str(i), str(COUNT), str(r), str(go))
            for i, r in enumerate(ready)
        ]
        procs += producers
        _wait_for_files([*ready, w1_ready], procs, timeout=60)
        go.write_text("go")
        # kill the first worker while one of its batches is running
        deadline = time.monotonic() + 60
        while not (client.llen(runs_key) >= 3 and client.llen(base + "active") > 0):
            assert time.monotonic() < deadline, "the worker ran no batch"
            time.sleep(0.002)
        worker1.send_signal(signal.SIGKILL)
        worker1.wait(30)
        killed_runs = client.llen(runs_key)
        worker2 = spawn("worker", redis_url, prefix, str(w2_ready))
        procs.append(worker2)
        for proc in producers:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0, out.decode()

        expected = {(p, n) for p in range(PRODUCERS) for n in range(COUNT)}

        def batches() -> dict[str, list[tuple[int, int]]]:
            seen: dict[str, list[tuple[int, int]]] = {}
            for raw in client.lrange(runs_key, 0, -1):
                run = json.loads(raw)
                items = [(d["p"], d["n"]) for d in run["items"]]
                assert seen.setdefault(run["id"], items) == items  # a re-run has the same items
            return seen

        deadline = time.monotonic() + 120
        while True:
            seen = batches()
            states = {i: client.hget(base + i, "state") for i in seen}
            delivered = Counter(item for items in seen.values() for item in items)
            if set(delivered) == expected and all(s == b"completed" for s in states.values()):
                break
            assert time.monotonic() < deadline, (
                f"{len(delivered)} of {len(expected)} delivered; {Counter(states.values())}"
            )
            time.sleep(0.05)
        worker2.send_signal(signal.SIGTERM)
        out, _ = worker2.communicate(timeout=60)
        assert worker2.returncode == 0, out.decode()
        runs = [json.loads(raw)["id"] for raw in client.lrange(runs_key, 0, -1)]
        leftovers = [k for k in ("k0", "k1") if client.exists(base + f"collect:{k}:items")]

    doubled = [item for item, n in delivered.items() if n > 1]
    print(
        f"\ncollect fault test: {len(expected)} items, {len(seen)} batch jobs, {len(runs)} runs "
        f"({len(runs) - len(seen)} re-runs after the kill at run {killed_runs}), "
        f"lost {len(expected - set(delivered))}, doubled {len(doubled)}"
    )
    assert doubled == []
    assert len(runs) > len(seen)  # the batch killed mid-run ran again, as the same job
    assert leftovers == []
