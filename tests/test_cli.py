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


def test_version() -> None:
    result = _run("version", timeout=30)
    assert result.returncode == 0
    assert result.stdout.strip() == f"taskora {taskora.__version__}"
