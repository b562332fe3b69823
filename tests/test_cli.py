"""The `taskora` CLI, run as a real child process: worker, demo, version and usage errors."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import taskora

ROOT = Path(__file__).resolve().parent.parent
WAIT = float(os.environ.get("CLI_TEST_WAIT", "60"))
TASKS = ("resize-image", "send-email", "generate-report")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKORA_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskora.cli", *args],
        cwd=cwd,
        env=env if env is not None else _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Child processes started by a test: always killed at the end, whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


# -- demo ----------------------------------------------------------------------------------
def _check_demo_output(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "final states" in out
    for task in TASKS:
        assert task in out, out
    assert "jobs/s" in out and "wall time" in out
    assert "Traceback" not in result.stderr


def test_demo_on_memory() -> None:
    result = _run("demo", "--jobs", "40")
    _check_demo_output(result)
    assert "40 jobs" in result.stdout
    assert "in-memory backend" in result.stdout


def test_demo_on_redis_cleans_up(redis_url: str) -> None:
    result = _run("demo", "--jobs", "40", env=_env(TASKORA_URL=redis_url))
    _check_demo_output(result)
    match = re.search(r"prefix (demo-[0-9a-f]+)", result.stdout)
    assert match, result.stdout
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"taskora:{match.group(1)}:*")) == []
    finally:
        client.close()


# -- worker --------------------------------------------------------------------------------
async def test_worker_runs_jobs_and_stops_on_sigterm(
    redis_url: str, prefix: str, tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
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
                "--concurrency",
                "4",
                "--tasks",
                "double",
            ],
            cwd=ROOT,
            env=_env(TASKORA_URL=redis_url, TASKORA_TEST_PREFIX=prefix),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    spawned.append(proc)

    producer = taskora.App(redis_url, prefix=prefix)

    @producer.task("double")
    async def double(data: dict[str, int]) -> int:  # pragma: no cover - runs in the worker
        return data["n"] * 2

    try:
        handles = [double.dispatch({"n": n}) for n in range(20)]
        try:
            results = await asyncio.gather(*(h.wait_for(WAIT) for h in handles))
        except taskora.TimeoutError:
            states = [await h.get_state() for h in handles]
            raise AssertionError(f"states: {states}\nworker log:\n{log.read_text()}") from None
        assert results == [n * 2 for n in range(20)]
        assert await handles[0].get_progress() == 50
    finally:
        await producer.close()

    assert proc.poll() is None, log.read_text()
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text()


# -- usage errors: one clear line on stderr, exit status 2 -----------------------------------
@pytest.mark.parametrize(
    ("target", "extra", "message"),
    [
        ("no_colon_here", [], "expected 'module:attribute'"),
        ("tests.procs_cli.app_module:", [], "expected 'module:attribute'"),
        ("tests.procs_cli.no_such_module:app", [], "no module named"),
        ("tests.procs_cli.app_module:missing", [], "has no attribute 'missing'"),
        ("tests.procs_cli.app_module:not_an_app", [], "not a taskora.App"),
        ("tests.procs_cli.app_module:app", ["--tasks", "double,nope"], "unknown task(s) nope"),
    ],
)
def test_worker_usage_errors(target: str, extra: list[str], message: str) -> None:
    result = _run("worker", target, *extra, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_worker_imports_from_current_directory(tmp_path: Path) -> None:
    """Like uvicorn, `taskora worker` finds modules in the current directory (console script)."""
    script = Path(sys.executable).parent / "taskora"
    if not script.exists():
        script_path = shutil.which("taskora")
        if script_path is None:
            pytest.skip("the taskora console script is not installed")
        script = Path(script_path)
    (tmp_path / "myjobs.py").write_text(
        "import taskora\napp = taskora.App('memory://')\n\n"
        "@app.task('ping')\nasync def ping(data):\n    return 'pong'\n"
    )
    result = subprocess.run(
        [str(script), "worker", "myjobs:app", "--tasks", "pong"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "unknown task(s) pong; registered: ping" in result.stderr


def test_bad_concurrency_is_a_usage_error() -> None:
    result = _run("worker", "tests.procs_cli.app_module:app", "--concurrency", "0", timeout=30)
    assert result.returncode == 2
    assert "positive integer" in result.stderr


def test_bad_prefetch_is_a_usage_error() -> None:
    result = _run("worker", "tests.procs_cli.app_module:app", "--prefetch", "-1", timeout=30)
    assert result.returncode == 2
    assert "integer >= 0" in result.stderr


def test_version() -> None:
    result = _run("version", timeout=30)
    assert result.returncode == 0
    assert result.stdout.strip() == f"taskora {taskora.__version__}"


# -- a worker that talks ---------------------------------------------------------------------
async def test_worker_logs_to_stderr_and_takes_url_and_prefix(
    redis_url: str, prefix: str, tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    """The module's App points at a closed port with no prefix: --url and --prefix decide.
    stderr carries the banner, each failure with its error, retries and the shutdown."""
    err = tmp_path / "stderr.log"
    with err.open("wb") as stream:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "taskora.cli",
                "worker",
                "tests.procs_cli.app_module:elsewhere",
                "--url",
                redis_url,
                "--prefix",
                prefix,
                "--concurrency",
                "3",
                "--prefetch",
                "0",
            ],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=stream,
        )
    spawned.append(proc)
    producer = taskora.App(redis_url, prefix=prefix)
    boom = producer.task("boom")(lambda data: data)
    double = producer.task("double")(lambda data: data)
    try:
        assert await double.dispatch({"n": 4}).wait_for(WAIT) == 8
        for data in ({"message": "kaput"}, {"message": "second try", "retry": "yes"}):
            with pytest.raises(taskora.JobFailedError):
                await boom.dispatch(data).wait_for(WAIT)
    finally:
        await producer.close()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, WAIT) == 0
    log = err.read_text()
    banner = next(line for line in log.splitlines() if "worker started" in line)
    for part in ("boom (concurrency 3)", "double (concurrency 3)", redis_url, prefix, "prefetch 0"):
        assert part in banner, log
    assert "kaput" in log and "second try" in log, log
    assert "asked to retry: not yet; retrying in" in log, log
    assert "SIGTERM: stopping" in log and "worker stopped" in log, log


def test_worker_log_level_quiets_it(redis_url: str, prefix: str) -> None:
    result = _run(
        "worker",
        "tests.procs_cli.app_module:app",
        "--url",
        "redis://127.0.0.1:9/0",
        "--log-level",
        "error",
        timeout=60,
    )
    assert result.returncode == 1  # nothing listens there: one clear error line
    assert "worker started" not in result.stderr
    assert "127.0.0.1:9" in result.stderr


def test_the_library_adds_no_log_handlers() -> None:
    """Python's logging convention: only the application (here: the CLI) configures it; a
    library adds at most a NullHandler (so nothing prints unless the application asks)."""
    code = (
        "import logging, taskora\n"
        "app = taskora.App('memory://')\n"
        "app.task('t')(lambda data: data)\n"
        "loggers = [logging.getLogger(), logging.getLogger('taskora'),"
        " logging.getLogger('taskora.worker')]\n"
        "added = [h for lg in loggers for h in lg.handlers]\n"
        "assert all(type(h) is logging.NullHandler for h in added), added\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
