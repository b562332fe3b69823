"""What the server allows: a tiny Lua script (one HSET + one ZADD, the minimum a job queue's enqueue
does) driven by redis-benchmark (50 clients, single and 50-deep pipelines) and from Python (redis-py
asyncio + hiredis, one connection, one call at a time and 50-deep pipelines); plain SET/LPUSH
too; and the round trip's floor, two processes relaying one message at a time through Redis
(``relay.py``)."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

LUA = (
    "redis.call('HSET', KEYS[1], 'data', ARGV[1], 'state', 'waiting') "
    "redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1]) "
    "return 1"
)
WAIT_KEY = "ceil:wait"
PAYLOAD_JSON = json.dumps({"to": "user@example.com", "subject": "Welcome!"})
DEPTH = 50

#: (label, how many calls) per measurement, full and quick.
FULL_N = {
    "script": 100_000,
    "script_pipelined": 500_000,
    "plain": 100_000,
    "plain_pipelined": 1_000_000,
    "python_single": 10_000,
    "python_pipelined": 100_000,
    "relay": 5_000,
}
QUICK_N = {k: v // 10 for k, v in FULL_N.items()}

# Keys of the ceiling figures, in report order, with a description.
FIGURES = {
    "rb_script": "redis-benchmark, script, 50 clients",
    "rb_script_p50": "redis-benchmark, script, 50 clients, pipeline 50",
    "rb_set": "redis-benchmark, SET, 50 clients",
    "rb_lpush": "redis-benchmark, LPUSH, 50 clients",
    "rb_set_p50": "redis-benchmark, SET, 50 clients, pipeline 50",
    "rb_lpush_p50": "redis-benchmark, LPUSH, 50 clients, pipeline 50",
    "python_single": "redis-py asyncio + hiredis, script, one call at a time",
    "python_pipelined": "redis-py asyncio + hiredis, script, pipeline 50",
    "relay": "round trip floor: 2 processes relay one message at a time through Redis "
    "(LPUSH + BLPOP each way, blocking sockets), trips/s",
}


def _redis_benchmark(port: int, args: list[str], timeout: float = 300) -> dict[str, float]:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise RuntimeError("redis-benchmark not found")
    cmd = [binary, "-h", "127.0.0.1", "-p", str(port), "-c", "50", "-r", "1000000", "--csv", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed: {out.stderr.strip()[-300:]}")
    rows = list(csv.reader(io.StringIO(out.stdout)))
    if not rows:
        raise RuntimeError("redis-benchmark printed nothing")
    # Columns: test, rps, then latencies; a custom command's name is not CSV-escaped, so count from
    # the right.
    width = len(rows[0])
    return {
        ",".join(row[: len(row) - width + 1]): float(row[len(row) - width + 1])
        for row in rows[1:]
        if len(row) >= width
    }


def measure(
    server: Any, base_python: Path | None, quick: bool, bench_dir: Path, env: dict[str, str]
) -> dict:
    """One measurement of every ceiling figure (calls/s); failures are reported per figure."""
    n = QUICK_N if quick else FULL_N
    figures: dict[str, Any] = {}
    errors: dict[str, str] = {}
    sha = server.command("SCRIPT", "LOAD", LUA)
    script_args = [
        "EVALSHA",
        sha,
        "2",
        "ceil:job:__rand_int__",
        WAIT_KEY,
        PAYLOAD_JSON,
        "__rand_int__",
    ]
    try:
        figures["rb_script"] = next(
            iter(_redis_benchmark(server.port, ["-n", str(n["script"]), *script_args]).values())
        )
        server.flush()
        figures["rb_script_p50"] = next(
            iter(
                _redis_benchmark(
                    server.port, ["-n", str(n["script_pipelined"]), "-P", str(DEPTH), *script_args]
                ).values()
            )
        )
        server.flush()
        plain = _redis_benchmark(server.port, ["-n", str(n["plain"]), "-t", "set,lpush"])
        figures["rb_set"], figures["rb_lpush"] = plain.get("SET"), plain.get("LPUSH")
        server.flush()
        plain = _redis_benchmark(
            server.port, ["-n", str(n["plain_pipelined"]), "-P", str(DEPTH), "-t", "set,lpush"]
        )
        figures["rb_set_p50"], figures["rb_lpush_p50"] = plain.get("SET"), plain.get("LPUSH")
    except (RuntimeError, ValueError, subprocess.TimeoutExpired, StopIteration) as exc:
        errors["redis-benchmark"] = str(exc)
    server.flush()
    if base_python is None:
        errors["python"] = "base venv unavailable"
    else:
        cmd = [
            str(base_python),
            "-m",
            "harness.ceiling_py",
            server.url,
            str(n["python_single"]),
            str(n["python_pipelined"]),
            str(DEPTH),
        ]
        try:
            out = subprocess.run(
                cmd, capture_output=True, text=True, timeout=300, cwd=bench_dir, env=env
            )
            line = next(
                (ln for ln in out.stdout.splitlines() if ln.startswith("@@RESULT@@ ")), None
            )
            if line is None:
                errors["python"] = (out.stderr.strip().splitlines() or ["no result"])[-1][-300:]
            else:
                result = json.loads(line.split(" ", 1)[1])
                figures["python_single"] = result["python_single"]
                figures["python_pipelined"] = result["python_pipelined"]
                figures["hiredis"] = result["hiredis"]
        except subprocess.TimeoutExpired:
            errors["python"] = "timeout"
    server.flush()
    try:
        figures.update(_relay(server.port, n["relay"], base_python, bench_dir, env))
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        errors["relay"] = str(exc)
    server.flush()
    return {"figures": figures, "errors": errors}


def _relay(
    port: int, n: int, python: Path | None, bench_dir: Path, env: dict[str, str]
) -> dict[str, float]:
    """The round trip floor (``relay.py``): a worker process and a producer process."""
    exe = str(python or sys.executable)
    warmup = 200
    args = [exe, "-m", "harness.relay"]
    worker = subprocess.Popen(
        [*args, "worker", str(port), str(n + warmup)],
        cwd=bench_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = subprocess.run(
            [*args, "producer", str(port), str(n), str(warmup)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=bench_dir,
            env=env,
        )
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("@@RESULT@@ ")), None)
        if line is None:
            raise RuntimeError((out.stderr.strip().splitlines() or ["no result"])[-1][-300:])
        worker.wait(timeout=30)
        return dict(json.loads(line.split(" ", 1)[1]))
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
