"""A producer process and two worker processes share one Redis: every job runs exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from tests.processes import ledger_lines


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.mp.apps", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_blocked_on_work(url: str, procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """Wait until every worker process has a connection blocked waiting for work (its
    BZPOPMIN on the task's marker): from then on it is woken by the next dispatch."""
    deadline = time.monotonic() + timeout
    with redis.Redis.from_url(url) as r:
        while time.monotonic() < deadline:
            blocked = {
                c.get("name", "").rpartition(":")[2]
                for c in r.client_list()
                if c.get("cmd") == "bzpopmin" and "b" in c.get("flags", "")
            }
            if all(str(p.pid) in blocked for p in procs):
                return
            for p in procs:
                assert p.poll() is None, f"a worker exited: {p.communicate()[0].decode()}"
            time.sleep(0.05)
    raise AssertionError(f"workers not all waiting for work after {timeout}s")


def _wait_lines(path: Path, count: int, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = ledger_lines(path)
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    seen = len(ledger_lines(path))
    raise AssertionError(f"only {seen} of {count} lines")


@pytest.mark.parametrize("wait_results", [False, True])
def test_producer_and_two_workers_run_each_job_once(
    redis_url: str, prefix: str, tmp_path: Path, wait_results: bool
) -> None:
    ledger = tmp_path / "ledger.txt"
    ids_file = tmp_path / "ids.txt"
    """Every job runs exactly once, across two worker processes that both take part.
    A worker takes part only once it is running: the jobs are dispatched when both are
    waiting for work (a worker process still starting up, on a loaded machine, would
    find the queue already drained by the other: issue 17)."""
    count = 600
    workers = [_spawn("worker", redis_url, prefix, str(ledger), "8") for _ in range(2)]
    try:
        _wait_blocked_on_work(redis_url, workers, timeout=60)
        mode = "wait" if wait_results else ""
        producer = _spawn("produce", redis_url, prefix, str(count), str(ids_file), mode)
        out, _ = producer.communicate(timeout=120)
        assert producer.returncode == 0, out.decode()
        dispatched = ids_file.read_text().split()
        assert len(set(dispatched)) == count
        lines = _wait_lines(ledger, count, timeout=120)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            out, _ = worker.communicate(timeout=60)
            assert worker.returncode == 0, out.decode()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    runs = Counter(line.split()[0] for line in lines)
    assert set(runs) == set(dispatched), "a job was lost or an unknown job ran"
    assert max(runs.values()) == 1, f"jobs ran twice: {[k for k, v in runs.items() if v > 1]}"
    pids = Counter(line.split()[1] for line in lines)
    assert len(pids) == 2, f"both workers should take part: {pids}"


def test_cancel_reaches_a_job_running_in_another_process(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """The job runs in a worker process; cancelling it from here stops it within a second."""
    import asyncio

    import taskora

    ledger = tmp_path / "ledger.txt"
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.mp.fault_worker", redis_url, prefix, str(ledger), "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def scenario() -> float:
        app = taskora.App(redis_url, prefix=prefix)
        job = app.task("job")(lambda data: None)
        handle = job.dispatch({"n": 1, "sleep": 60})
        await handle
        deadline = time.monotonic() + 30
        while await handle.get_state() != "active":
            assert time.monotonic() < deadline, "the job never started"
            await asyncio.sleep(0.02)
        t0 = time.monotonic()
        await handle.cancel(reason="from afar")
        try:
            await handle.wait_for(10)
        except taskora.JobCancelledError as exc:
            assert exc.reason == "from afar"
        else:
            raise AssertionError("the job should have been cancelled")
        elapsed = time.monotonic() - t0
        await app.close()
        return elapsed

    try:
        elapsed = asyncio.run(scenario())
        assert elapsed < 1.0, f"cancellation took {elapsed:.2f}s"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
