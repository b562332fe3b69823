#!/usr/bin/env python3
"""Where a sequential round trip's time goes: producer, worker and redis-server, profiled.

    python benchmarks/profile_round_trip.py [--n 5000] [--concurrency 1] [--library taskora]

Runs the suite's round trip (one worker process at the given concurrency, one producer: dispatch,
await the result, next) on a private redis-server, with cProfile in the producer and the worker
(BENCH_CPROFILE), or with --no-cprofile `perf record` on redis-server and the worker when perf is
usable. Prints per job: latency,
CPU of each process, Redis commands, then the top functions of each profile. Uses the venvs that
`run.py` built. Profilers slow the Python side (cProfile ~2x): read shares, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness import procs, venvs  # noqa: E402
from harness.redis_server import RedisServer  # noqa: E402
from harness.workloads import _clean_env  # noqa: E402
from libs import library  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--library", default="taskora")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-cprofile", action="store_true", help="CPU figures without cProfile")
    args = parser.parse_args()
    lib = library(args.library)
    python = venvs.venv_dir(lib.venv) / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"no venv for {args.library}: run benchmarks/run.py once first")
    out = Path(tempfile.mkdtemp(prefix="rt-profile-"))
    env = _clean_env()
    if not args.no_cprofile:
        env["BENCH_CPROFILE"] = str(out)
    server = RedisServer(workdir=out / "redis")
    perf: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        pid = int(server.info("server")["process_id"])
        cmd = [str(python), "-m", f"libs.{lib.adapter}"]
        worker = procs.Proc(
            [*cmd, "worker", "--url", server.url, "--n", "0", "--concurrency",
             str(args.concurrency), "--results"],
            env, BENCH_DIR, out / "worker.log",
        )  # fmt: skip
        if not worker.wait_ready(60):
            raise SystemExit("worker did not start: see " + str(out / "worker.log"))
        if shutil.which("perf") and args.no_cprofile:  # perf on all three, when unprofiled
            pids = f"{pid},{worker.proc.pid}"
            perf = procs.popen(
                ["perf", "record", "-g", "-q", "-o", str(out / "all.perf"), "-p", pids],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        producer = procs.run(
            [*cmd, "round-trip", "--url", server.url, "--n", str(args.n), "--warmup", "50",
             "--cap", "120", "--results", "--worker-pid", str(worker.proc.pid)],
            env, BENCH_DIR, 300, out / "producer.log",
        )  # fmt: skip
        if perf is not None:
            perf.send_signal(2)
            perf.wait(30)
        worker.stop()
    finally:
        procs.stop_all()
        server.stop()
    if not producer.ok or not producer.result:
        raise SystemExit(f"round trip failed: {producer.error}")
    res = producer.result
    lat = sorted(res.pop("latencies_ms"))
    n = res["n"]
    print(f"{n} round trips, {n / res['seconds']:,.0f}/s, p50 {lat[len(lat) // 2]:.3f} ms")
    print(
        f"CPU µs per job: producer {res['producer_cpu_us_per_job']:.0f}, worker "
        f"{res['worker_cpu_us_per_job']:.0f}, redis {res['redis']['cpu_us_per_job']:.0f} "
        f"(scripts {res['redis']['script_us_per_job']:.0f})"
    )
    print("Redis calls per job:", json.dumps(res["redis"]["calls_per_job"]))
    for name in ("worker", "round-trip"):
        path = out / f"{name}.prof"
        if path.exists():
            print(f"\n== {name} (cProfile, tottime) ==")
            pstats.Stats(str(path)).sort_stats("tottime").print_stats(args.top)
    if (out / "all.perf").exists():
        for sort, limit in (("pid,dso", "1"), ("pid,sym", "0.8")):
            print(f"\n== redis-server and worker (perf report --sort {sort}, self) ==")
            report = subprocess.run(
                ["perf", "report", "-i", str(out / "all.perf"), "--no-children", "--stdio",
                 "-g", "none", "--sort", sort, "--percent-limit", limit],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            print("\n".join(ln for ln in report.stdout.splitlines() if ln and ln[0] != "#"))
    print(f"\nfiles: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
