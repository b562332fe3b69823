"""`taskora worker` always ends: SIGINT/SIGTERM stop it within the shutdown timeout, a
second signal at once, and unfinished jobs go back to the front of their queue.

Real processes: each worker runs in its own process group, killed in teardown whatever
happened. Waits are on conditions (job states, log lines), never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import taskora
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent
WAIT = 60.0  # generous: a loaded 2-core machine; the handlers sleep 600 s


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_log(self, needle: str) -> None:
        try:
            await wait_until(lambda: needle in self.text(), timeout=WAIT, interval=0.05)
        except AssertionError:
            raise AssertionError(f"{needle!r} not logged:\n{self.text()}") from None

    async def exit_code(self) -> int:
        try:
            return await asyncio.to_thread(self.proc.wait, WAIT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not exit:\n{self.text()}") from None


@pytest.fixture
def spawn(redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Any]:
    workers: list[Worker] = []

    def start(*args: str) -> Worker:
        log = tmp_path / f"worker{len(workers)}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKORA_")}
        env.update(TASKORA_URL=redis_url, TASKORA_TEST_PREFIX=prefix, PYTHONUNBUFFERED="1")
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "taskora.cli",
                    "worker",
                    "tests.procs_cli.app_module:app",
                    *list(args),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, for the teardown
            )
        worker = Worker(proc, log)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.proc.poll() is None:
            os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=10)


@pytest.fixture
async def producer(redis_url: str, prefix: str) -> Any:
    app = taskora.App(redis_url, prefix=prefix)
    yield app
    await app.close(timeout=5)


async def _running(handle: taskora.ResultHandle[Any]) -> None:
    """Wait until the handler runs (it reports progress first thing)."""
    await wait_until(lambda: _progressed(handle), timeout=WAIT, interval=0.05)


async def _progressed(handle: taskora.ResultHandle[Any]) -> bool:
    return await handle.get_progress() == 1


async def _states(handles: list[taskora.ResultHandle[Any]]) -> list[Any]:
    return [await h.get_state() for h in handles]


async def test_sigint_gives_running_jobs_the_timeout_then_requeues_them_first(
    spawn: Any, producer: taskora.App, redis_url: str, prefix: str
) -> None:
    sleepy = producer.task("sleepy")(lambda data: data)
    worker = spawn("--tasks", "sleepy", "--concurrency", "1", "--shutdown-timeout", "1s")
    first = sleepy.dispatch({"n": 1})
    await _running(first)
    rest = [sleepy.dispatch({"n": n}) for n in (2, 3)]
    for handle in rest:
        await handle

    worker.proc.send_signal(signal.SIGINT)
    assert await worker.exit_code() == 0, worker.text()
    assert await _states([first, *rest]) == [taskora.JobState.WAITING] * 3
    log = worker.text()
    assert "SIGINT: stopping" in log and "go back to the queue" in log, log
    assert "Traceback" not in log, log

    # Claim order: the job given back runs first, before those that were waiting.
    order: list[int] = []
    consumer = taskora.App(redis_url, prefix=prefix)

    @consumer.task("sleepy")
    async def record(data: dict[str, int]) -> None:
        order.append(data["n"])

    async with consumer:
        await wait_until(lambda: len(order) == 3, timeout=WAIT)
    assert order == [1, 2, 3]


async def test_a_second_signal_stops_at_once(spawn: Any, producer: taskora.App) -> None:
    sleepy = producer.task("sleepy")(lambda data: data)
    worker = spawn("--tasks", "sleepy", "--shutdown-timeout", "10m")
    handle = sleepy.dispatch({"n": 1})
    await _running(handle)
    worker.proc.send_signal(signal.SIGINT)
    await worker.wait_log("SIGINT: stopping")
    worker.proc.send_signal(signal.SIGTERM)
    assert await worker.exit_code() == 0, worker.text()
    assert await handle.get_state() == taskora.JobState.WAITING
    assert "SIGTERM again: stopping now" in worker.text()


async def test_a_stuck_thread_does_not_keep_the_process_alive(
    spawn: Any, producer: taskora.App
) -> None:
    sleepy = producer.task("sleepy-sync")(lambda data: data)
    worker = spawn("--tasks", "sleepy-sync", "--shutdown-timeout", "300ms")
    handle = sleepy.dispatch({"n": 1})
    await _running(handle)
    worker.proc.send_signal(signal.SIGTERM)
    assert await worker.exit_code() == 0, worker.text()
    assert await handle.get_state() == taskora.JobState.WAITING


async def test_default_shutdown_timeout_is_the_apps(spawn: Any, producer: taskora.App) -> None:
    """Without --shutdown-timeout the App's own (30 s by default) applies: the first signal
    alone does not end a 600 s handler at once, the second does."""
    sleepy = producer.task("sleepy")(lambda data: data)
    worker = spawn("--tasks", "sleepy")
    handle = sleepy.dispatch({"n": 1})
    await _running(handle)
    worker.proc.send_signal(signal.SIGTERM)
    await worker.wait_log("running jobs get 30 s to finish")
    assert worker.proc.poll() is None
    worker.proc.send_signal(signal.SIGINT)
    assert await worker.exit_code() == 0, worker.text()
    assert await handle.get_state() == taskora.JobState.WAITING
