"""Prometheus metrics (docs/design.md#metrics), scraped over HTTP: in process on both
backends, and from a `taskora worker --metrics-port` subprocess against redis-server."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import taskora
from taskora import metrics as taskora_metrics

from .conftest import AppFactory, wait_until

ROOT = Path(__file__).resolve().parent.parent
WAIT = 60.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape_sync(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


async def _scrape(port: int) -> Samples:
    return await asyncio.to_thread(_scrape_sync, port)


def _get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def served() -> Iterator[list[taskora_metrics.Metrics]]:
    started: list[taskora_metrics.Metrics] = []
    yield started
    for metrics in started:
        metrics.close()


async def test_gauges_counters_and_histograms_after_some_jobs(
    make_app: AppFactory, served: list[taskora_metrics.Metrics]
) -> None:
    app = make_app()
    pid = str(os.getpid())

    @app.task("ok")
    async def ok(data: int) -> int:
        await asyncio.sleep(0.03)
        return data

    @app.task("boom")
    async def boom(data: int) -> None:
        raise ValueError("no")

    # a task this App does not register: its gauges come from the store alone
    other = make_app()
    stranger = other.task("stranger")(lambda data: data)

    metrics = taskora_metrics.serve(app, 0, cache_seconds=0)
    served.append(metrics)
    assert metrics.port is not None
    await app.start()
    handles = [ok.dispatch(n) for n in range(3)]
    failing = [boom.dispatch(n) for n in range(2)]
    for handle in handles:
        await handle.wait_for(WAIT)
    for handle in failing:
        with pytest.raises(taskora.JobFailedError):
            await handle.wait_for(WAIT)
    for n in range(2):
        await ok.dispatch(n, delay="1h")
    await stranger.dispatch(1)

    samples = await _scrape(metrics.port)
    assert _get(samples, "taskora_store_up") == 1
    assert _get(samples, "taskora_jobs", task="ok", state="completed") == 3
    assert _get(samples, "taskora_jobs", task="ok", state="delayed") == 2
    assert _get(samples, "taskora_jobs", task="ok", state="failed") == 0
    assert _get(samples, "taskora_jobs", task="boom", state="failed") == 2
    assert _get(samples, "taskora_jobs", task="stranger", state="waiting") == 1

    assert _get(samples, "taskora_jobs_completed_total", task="ok", pid=pid) == 3
    assert _get(samples, "taskora_jobs_failed_total", task="boom", pid=pid) == 2
    assert _get(samples, "taskora_jobs_completed_total", task="boom", pid=pid) == 0
    hist = "taskora_job_duration_seconds"
    assert _get(samples, f"{hist}_count", task="ok", pid=pid) == 3
    assert _get(samples, f"{hist}_bucket", task="ok", pid=pid, le="0.025") == 0  # slept 30ms
    assert _get(samples, f"{hist}_bucket", task="ok", pid=pid, le="+Inf") == 3
    assert (_get(samples, f"{hist}_sum", task="ok", pid=pid) or 0) >= 0.09
    wait = "taskora_job_queue_wait_seconds"
    assert _get(samples, f"{wait}_count", task="ok", pid=pid) == 3
    assert _get(samples, f"{wait}_count", task="boom", pid=pid) == 2
    assert _get(samples, f"{wait}_bucket", task="ok", pid=pid, le="+Inf") == 3


async def test_retries_count_apart_and_wait_is_first_attempt_only(
    make_app: AppFactory, served: list[taskora_metrics.Metrics]
) -> None:
    app = make_app()
    pid = str(os.getpid())

    @app.task("flaky", retry=taskora.Retry(attempts=3, delay="10ms"))
    async def flaky(data: int, ctx: taskora.Context) -> int:
        if ctx.attempt < 3:
            raise ValueError("not yet")
        return data

    metrics = taskora_metrics.serve(app, 0, cache_seconds=0)
    served.append(metrics)
    assert metrics.port is not None
    await app.start()
    assert await flaky.dispatch(7).wait_for(WAIT) == 7
    samples = await _scrape(metrics.port)
    assert _get(samples, "taskora_jobs_retried_total", task="flaky", pid=pid) == 2
    assert _get(samples, "taskora_jobs_completed_total", task="flaky", pid=pid) == 1
    assert _get(samples, "taskora_jobs_failed_total", task="flaky", pid=pid) == 0
    assert _get(samples, "taskora_job_duration_seconds_count", task="flaky", pid=pid) == 3
    assert _get(samples, "taskora_job_queue_wait_seconds_count", task="flaky", pid=pid) == 1


async def test_gauges_are_cached_so_a_scrape_storm_reads_the_store_once(
    make_app: AppFactory, served: list[taskora_metrics.Metrics]
) -> None:
    app = make_app()
    noop = app.task("noop")(lambda data: data)
    metrics = taskora_metrics.serve(app, 0, cache_seconds=3600)
    served.append(metrics)
    assert metrics.port is not None
    await noop.dispatch(1)
    reads = 0
    real_read = metrics._read

    async def counted() -> dict[str, dict[str, int]]:
        nonlocal reads
        reads += 1
        return await real_read()

    metrics._read = counted  # type: ignore[method-assign]
    first = await asyncio.gather(*(_scrape(metrics.port) for _ in range(8)))
    await noop.dispatch(2)
    second = await _scrape(metrics.port)
    assert reads == 1
    for samples in (*first, second):
        assert _get(samples, "taskora_jobs", task="noop", state="waiting") == 1


async def test_store_down_still_answers_the_scrape(
    served: list[taskora_metrics.Metrics],
) -> None:
    app = taskora.App("redis://127.0.0.1:9/0")  # nothing listens there
    app.task("noop")(lambda data: data)
    metrics = taskora_metrics.serve(app, 0, read_timeout=30)
    served.append(metrics)
    assert metrics.port is not None
    try:
        samples = await _scrape(metrics.port)
    finally:
        await app.close()
    assert _get(samples, "taskora_store_up") == 0
    assert not any(name == "taskora_jobs" for name, _ in samples)


def test_install_twice_is_one_metrics_and_serve_twice_is_refused(
    served: list[taskora_metrics.Metrics],
) -> None:
    app = taskora.App("memory://")
    metrics = taskora_metrics.serve(app, 0)
    served.append(metrics)
    assert taskora_metrics.install(app) is metrics
    with pytest.raises(taskora.ConfigError):
        taskora_metrics.serve(app, 0)


# -- `taskora worker --metrics-port` --------------------------------------------------------
def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKORA_")}
    env.update(extra, PYTHONUNBUFFERED="1")
    return env


async def test_worker_serves_metrics_on_its_port(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "taskora.cli",
                "worker",
                "tests.procs_cli.app_module:app",
                "--tasks",
                "double,boom",
                "--metrics-port",
                "0",
            ],
            cwd=ROOT,
            env=_env(TASKORA_URL=redis_url, TASKORA_TEST_PREFIX=prefix),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    producer = taskora.App(redis_url, prefix=prefix)
    double = producer.task("double")(lambda data: data)
    boom = producer.task("boom")(lambda data: data)
    try:
        found: list[int] = []

        def port_logged() -> bool:
            match = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log.read_text())
            if match:
                found.append(int(match.group(1)))
            assert proc.poll() is None, log.read_text()
            return bool(match)

        await wait_until(port_logged, timeout=WAIT)
        for n in range(5):
            assert await double.dispatch({"n": n}).wait_for(WAIT) == n * 2
        for _ in range(2):  # boom: two attempts, both raise
            with pytest.raises(taskora.JobFailedError):
                await boom.dispatch({"message": "x"}).wait_for(WAIT)
        samples = await _scrape(found[0])
    finally:
        await producer.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    pid = str(proc.pid)
    assert _get(samples, "taskora_store_up") == 1, log.read_text()
    assert _get(samples, "taskora_jobs", task="double", state="completed") == 5
    assert _get(samples, "taskora_jobs", task="boom", state="failed") == 2
    assert _get(samples, "taskora_jobs_completed_total", task="double", pid=pid) == 5
    assert _get(samples, "taskora_jobs_failed_total", task="boom", pid=pid) == 2
    assert _get(samples, "taskora_jobs_retried_total", task="boom", pid=pid) == 2
    assert _get(samples, "taskora_job_duration_seconds_count", task="double", pid=pid) == 5
    assert (
        _get(samples, "taskora_job_queue_wait_seconds_bucket", task="double", pid=pid, le="+Inf")
        == 5
    )


def test_worker_metrics_port_in_use_is_a_usage_error(redis_url: str, prefix: str) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "taskora.cli",
                "worker",
                "tests.procs_cli.app_module:app",
                "--metrics-port",
                str(port),
            ],
            cwd=ROOT,
            env=_env(TASKORA_URL=redis_url, TASKORA_TEST_PREFIX=prefix),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert "cannot serve metrics" in result.stderr
