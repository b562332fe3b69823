"""The operator's commands (`taskora inspect|jobs|job|retry|cancel|dead-letters|purge`), run
as child processes against the test redis-server, from a directory with no app module: task
names come from Redis. Exit status: 0 ok, 1 not found, 2 usage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import taskora
from tests.test_cli import _env


def _cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "taskora.cli", *args],
        cwd=cwd,
        env=env if env is not None else _env(),
        stdin=subprocess.DEVNULL,  # not a terminal: purge must not ask
        capture_output=True,
        text=True,
        timeout=90,
    )


def _doc(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)  # one JSON document, nothing else on stdout


@pytest.fixture
async def filled(redis_url: str, prefix: str) -> dict[str, Any]:
    """mail: 3 completed, 2 failed; report: 2 waiting (no worker for it)."""
    app = taskora.App(redis_url, prefix=prefix)

    @app.task()
    async def mail(data: int, ctx: taskora.Context) -> int:
        ctx.log.info("sending", n=data)
        if data >= 3:
            raise RuntimeError(f"smtp down {data}")
        return data

    @app.task()
    async def report(data: str) -> str:
        return data

    ids: dict[str, Any] = {}
    await app.start(tasks=["mail"])  # no worker for report: its jobs wait
    try:
        handles = [mail.dispatch(i) for i in range(5)]
        for h in handles:
            try:
                await h.wait_for(30)
            except taskora.JobFailedError:
                pass
        waiting = [report.dispatch("a"), report.dispatch("b")]
        for w in waiting:
            await w
    finally:
        await app.close()
    ids["completed"] = [h.id for h in handles[:3]]
    ids["failed"] = [h.id for h in handles[3:]]
    ids["waiting"] = [h.id for h in waiting]
    return ids


def _base(redis_url: str, prefix: str) -> list[str]:
    return ["--url", redis_url, "--prefix", prefix]


async def test_inspect_jobs_job(
    filled: dict[str, Any], redis_url: str, prefix: str, tmp_path: Path
) -> None:
    base = _base(redis_url, prefix)
    doc = _doc(_cli("inspect", *base, "--json", cwd=tmp_path))
    rows = {row["task"]: row for row in doc["tasks"]}
    assert set(rows) == {"mail", "report"}
    assert (rows["mail"]["completed"], rows["mail"]["failed"]) == (3, 2)
    assert rows["report"]["waiting"] == 2
    assert rows["mail"]["completed_per_min"] == pytest.approx(3 / 5)
    assert rows["report"]["oldest_waiting_s"] >= 0

    table = _cli("inspect", *base, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert any(line.split()[:1] == ["mail"] for line in lines), table.stdout
    assert "waiting" in table.stdout and "done/min" in table.stdout

    jobs = _doc(
        _cli("jobs", "mail", "--state", "failed", "--limit", "20", *base, "--json", cwd=tmp_path)
    )
    assert sorted(j["id"] for j in jobs["jobs"]) == sorted(filled["failed"])
    assert all(j["error"].startswith("smtp down") for j in jobs["jobs"])
    waiting = _doc(_cli("jobs", "report", "--json", *base, cwd=tmp_path))
    assert [j["id"] for j in waiting["jobs"]] == filled["waiting"]  # claim order

    job = _doc(_cli("job", filled["completed"][1], *base, "--json", cwd=tmp_path))
    assert (job["task"], job["state"], job["data"], job["result"]) == ("mail", "completed", 1, 1)
    assert [state for state, _ in job["timeline"]] == ["waiting", "active", "completed"]
    assert job["logs"][0]["message"] == "sending"
    text = _cli("job", filled["completed"][1], *base, cwd=tmp_path)
    assert text.returncode == 0 and "timeline:" in text.stdout and "sending" in text.stdout

    missing = _cli("job", "no-such-job", *base, cwd=tmp_path)
    assert missing.returncode == 1 and "no job 'no-such-job'" in missing.stderr
    unknown = _cli("jobs", "nope", *base, cwd=tmp_path)
    assert unknown.returncode == 1 and "no task 'nope'" in unknown.stderr


async def test_retry_cancel_dead_letters_purge(
    filled: dict[str, Any], redis_url: str, prefix: str, tmp_path: Path
) -> None:
    base = _base(redis_url, prefix)
    dead = _doc(_cli("dead-letters", *base, "--json", cwd=tmp_path))
    assert dead["total"] == 2 and {j["id"] for j in dead["jobs"]} == set(filled["failed"])

    one = filled["failed"][0]
    assert _cli("retry", one, *base, cwd=tmp_path).returncode == 0
    again = _cli("retry", one, *base, cwd=tmp_path)
    assert again.returncode == 1 and "no failed job" in again.stderr
    assert _doc(_cli("retry", "--all", "--task", "mail", *base, "--json", cwd=tmp_path)) == {
        "retried": 1
    }
    both = _cli("retry", one, "--all", *base, cwd=tmp_path)
    assert both.returncode == 2
    assert _cli("retry", *base, cwd=tmp_path).returncode == 2

    cancelled = _doc(_cli("cancel", filled["waiting"][0], *base, "--json", cwd=tmp_path))
    assert cancelled["outcome"] == "cancelled" and cancelled["task"] == "report"
    twice = _cli("cancel", filled["waiting"][0], *base, cwd=tmp_path)
    assert twice.returncode == 1 and "cannot be cancelled" in twice.stderr
    assert _cli("cancel", "no-such-job", *base, cwd=tmp_path).returncode == 1

    refused = _cli("purge", "mail", "--state", "completed", "--before", "0s", *base, cwd=tmp_path)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    kept = _doc(
        _cli(
            "purge",
            "mail",
            "--state",
            "completed",
            "--before",
            "1h",
            "--yes",
            "--json",
            *base,
            cwd=tmp_path,
        )
    )
    assert kept["deleted"] == 0
    gone = _doc(
        _cli(
            "purge",
            "mail",
            "--state",
            "completed",
            "--before",
            "0s",
            "--yes",
            "--json",
            *base,
            cwd=tmp_path,
        )
    )
    assert gone["deleted"] == 3
    rows = {r["task"]: r for r in _doc(_cli("inspect", *base, "--json", cwd=tmp_path))["tasks"]}
    assert rows["mail"]["completed"] == 0 and rows["mail"]["waiting"] == 2  # the retried ones
    assert rows["report"]["cancelled"] == 1
    bad = _cli(
        "purge", "mail", "--state", "completed", "--before", "soon", "--yes", *base, cwd=tmp_path
    )
    assert bad.returncode == 2


def test_no_backend_is_a_usage_error(tmp_path: Path) -> None:
    result = _cli("inspect", cwd=tmp_path)
    assert result.returncode == 2 and "--url" in result.stderr
