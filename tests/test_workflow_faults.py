"""Workflows under process faults, with real worker processes and a real redis-server.

- Atomic advance: a worker SIGKILLed after a step's advance was recorded and before the step
  it unblocked was enqueued (the worst point: TASKORA_TEST_KILL_AFTER_ADVANCE) leaves the
  step unacknowledged; another worker's stall check recovers it, it runs again, its advance
  replays (the node is already completed: the unblocked node is returned again) and the
  workflow completes, with every later step run exactly once.
- A step whose worker died and that the stall check fails for good fails the workflow and
  cancels its other running steps (no executor saw that step end).

Every child is reaped; waits are for results and process exits, with generous deadlines.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

import taskora
from tests.conftest import wait_until
from tests.processes import ledger_lines, stop_processes
from tests.procs.workflow_procs import build

ROOT = Path(__file__).resolve().parents[1]


def _spawn(
    url: str,
    prefix: str,
    ledger: Path,
    max_stalls: int,
    kill_after: int | None = None,
    tasks: str = "a,b,c,die,hang,after",
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("TASKORA_TEST_KILL_AFTER_ADVANCE", None)
    if kill_after is not None:
        env["TASKORA_TEST_KILL_AFTER_ADVANCE"] = str(kill_after)
    # stderr to a file beside the ledger: a pipe nobody reads can fill and block the worker
    with ledger.with_name(f"{ledger.name}.{tasks}.{kill_after}.stderr").open("ab") as stderr:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.procs.workflow_procs",
                *(url, prefix, str(ledger), str(max_stalls), tasks),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


@contextmanager
def _reaped() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        stop_processes(procs)


def _runs(ledger: Path) -> list[tuple[str, str, int]]:
    return [(task, job, int(pid)) for task, job, pid in map(str.split, ledger_lines(ledger))]


async def test_a_crash_between_advance_and_enqueue_loses_nothing(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    producer = build(redis_url, prefix)
    a, b, c = producer.tasks["a"], producer.tasks["b"], producer.tasks["c"]
    try:
        handle = (a.s(1) | b.s() | c.s()).dispatch()  # type: ignore[attr-defined]
        wf = await handle
        with _reaped() as procs:
            first = _spawn(redis_url, prefix, ledger, 1, kill_after=0)
            procs.append(first)
            assert first.wait(timeout=60) == -9  # it killed itself after node 0's advance
            # half done, as a crash there leaves it: node 0 recorded, node 1 not enqueued
            client = redis.Redis.from_url(redis_url)
            record = f"taskora:{prefix}:{{:wf}}:{wf}"
            assert client.hget(record, "n:0:state") == b"completed"
            assert client.hget(record, "n:1:state") == b"queued"
            assert not client.exists(f"taskora:{prefix}:{{b}}:wf-{wf}-1")
            assert client.hget(f"taskora:{prefix}:{{a}}:wf-{wf}-0", "state") == b"active"
            client.close()
            procs.append(_spawn(redis_url, prefix, ledger, 1))
            assert await handle.wait_for(60) == 25  # (1 + 1) * 10 + 5
            assert await handle.get_state() == "completed"
        runs = _runs(ledger)
        assert Counter(task for task, _, _ in runs) == {"a": 2, "b": 1, "c": 1}
        assert runs[0][2] == first.pid and runs[1][2] != first.pid  # a ran again elsewhere
    finally:
        await producer.close()


async def test_a_step_failed_by_the_stall_check_fails_the_workflow(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    producer = build(redis_url, prefix)
    die, hang, after = producer.tasks["die"], producer.tasks["hang"], producer.tasks["after"]
    try:
        flow = taskora.chord([die.s(1), hang.s(2)], after.s())  # type: ignore[attr-defined]
        handle = flow.dispatch()
        wf = await handle
        with _reaped() as procs:
            # one worker runs "hang" (and "after"); once "hang" runs, a second worker runs
            # "die", which kills it; a third's stall check (max_stalls 0: a job whose worker
            # died fails at once) fails that step, with no executor to report its end
            procs.append(_spawn(redis_url, prefix, ledger, 0, tasks="hang,after"))
            await wait_until(lambda: any(t == "hang" for t, _, _ in _runs(ledger)), 60)
            dying = _spawn(redis_url, prefix, ledger, 0, tasks="die")
            procs.append(dying)
            assert dying.wait(timeout=60) == -9
            procs.append(_spawn(redis_url, prefix, ledger, 0, tasks="die"))
            with pytest.raises(taskora.JobFailedError, match="stalled"):
                await handle.wait_for(60)
            assert await handle.get_state() == "failed"
            # the running sibling is cancelled by the cascade
            with pytest.raises(taskora.JobCancelledError):
                await hang.handle(f"wf-{wf}-1").wait_for(60)  # type: ignore[attr-defined]
        runs = Counter(task for task, _, _ in _runs(ledger))
        assert runs == {"die": 1, "hang": 1}
    finally:
        await producer.close()
