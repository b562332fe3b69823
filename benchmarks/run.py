#!/usr/bin/env python3
"""Run the taskora benchmark suite against its Python peers.

    python benchmarks/run.py                          # everything: ~20-25 min on 2 cores
    python benchmarks/run.py --quick                  # smoke run, tiny N, one repetition
    python benchmarks/run.py --libraries taskora,saq --workloads enqueue_single,round_trip
    python benchmarks/run.py --libraries taskora,taskora@../wt-base --repeat 5  # A/B, two checkouts

Needs only the Python standard library to start: it builds `benchmarks/.venv-<library>` venvs (one
per library, since peers pin conflicting `redis` versions) and `.venv-base` (ceiling probe, plot),
starts its own redis-server on a free loopback port, and always stops it. Results: stdout and
`benchmarks/results/latest.{md,json,png}`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness import ceiling, procs, report, stats, venvs  # noqa: E402
from harness.redis_server import RedisServer  # noqa: E402
from harness.workloads import FULL, QUICK, WORKLOADS, LibraryRunner, Sizes  # noqa: E402
from libs import BASE_REQUIREMENTS, COMMON_REQUIREMENTS, LIBRARIES, Library, library  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
LOG_DIR = RESULTS_DIR / "logs"
SUPPORT_PACKAGES = {"hiredis", "uvloop", "typing-extensions"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--libraries",
        default=",".join(LIBRARIES),
        help=f"comma-separated, from: {','.join(LIBRARIES)} (default: all); taskora@PATH adds "
        "the taskora checkout at PATH (an A/B in one run)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated, from: {','.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="repetitions per workload (default 3; 1 with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny N, short time caps")
    parser.add_argument(
        "--cap", type=float, default=None, help="time cap of one timed section, seconds"
    )
    parser.add_argument(
        "--no-ceiling", action="store_true", help="skip the redis-benchmark / redis-py ceiling"
    )
    parser.add_argument("--reinstall", action="store_true", help="rebuild the venvs")
    args = parser.parse_args(argv)
    args.libraries = [x.strip() for x in args.libraries.split(",") if x.strip()]
    args.workloads = [x.strip() for x in args.workloads.split(",") if x.strip()]
    unknown = [x for x in args.libraries if not _known(x)] + [
        x for x in args.workloads if x not in WORKLOADS
    ]
    if unknown:
        parser.error(f"unknown library or workload: {', '.join(unknown)}")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    return args


def _known(name: str) -> bool:
    try:
        library(name)
    except KeyError:
        return False
    return True


def bootstrap(names: list[str], reinstall: bool) -> tuple[venvs.Venv, dict[str, venvs.Venv]]:
    libs = [library(n) for n in names]
    jobs: list[tuple[str, list[str], str | None, str | None]] = [
        ("base", BASE_REQUIREMENTS, None, None)
    ]
    jobs += [
        (lib.venv, lib.requirements + COMMON_REQUIREMENTS, lib.editable, lib.adapter)
        for lib in libs
    ]
    log(f"preparing venvs: {', '.join(j[0] for j in jobs)}")
    with ThreadPoolExecutor(3) as pool:
        done = list(
            pool.map(
                lambda j: venvs.ensure(
                    j[0], j[1], j[2], log_dir=LOG_DIR, force=reinstall, package=j[3]
                ),
                jobs,
            )
        )
    for v in done:
        log(
            f"  venv {v.name}: "
            + ("ok " + ", ".join(f"{k} {x}" for k, x in v.versions.items()) if v.ok else v.error)
        )
    return done[0], {lib.name: v for lib, v in zip(libs, done[1:], strict=True)}


def machine_info(server: RedisServer) -> dict[str, Any]:
    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis_version": server.version(),
        "redis_server": shutil.which("redis-server"),
        "event_loop": "uvloop (every async adapter)",
        "loadavg_start": round(os.getloadavg()[0], 2),
    }


def library_version(lib: Library, v: venvs.Venv) -> str:
    versions = {k.lower().replace("_", "-"): x for k, x in v.versions.items()}
    mains = [x for k, x in versions.items() if k not in SUPPORT_PACKAGES]
    return " + ".join(mains)


def run_ceiling(server: RedisServer, base: venvs.Venv, args: argparse.Namespace) -> dict[str, Any]:
    reps = []
    for i in range(args.repeat):
        log(f"ceiling {i + 1}/{args.repeat}")
        reps.append(
            ceiling.measure(
                server, base.python if base.ok else None, args.quick, BENCH_DIR, _base_env()
            )
        )
    figures: dict[str, Any] = {}
    for key in (*ceiling.FIGURES, "relay_p50_ms"):
        values = [r["figures"][key] for r in reps if r["figures"].get(key)]
        if values:
            figures[key] = stats.median(values)
    errors = {k: v for r in reps for k, v in r["errors"].items()}
    return {"figures": figures, "errors": errors, "runs": [r["figures"] for r in reps]}


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env["PYTHONPATH"] = str(BENCH_DIR)
    return env


def run_libraries(
    lib_venvs: dict[str, venvs.Venv], server: RedisServer, sizes: Sizes, args: argparse.Namespace
) -> dict[str, Any]:
    """Every repetition runs every library in turn (A B A B ...): a drift in the machine's load
    touches all of them alike, which matters most when comparing two taskora checkouts."""
    entries: dict[str, Any] = {}
    runners: dict[str, LibraryRunner] = {}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, v in lib_venvs.items():
        lib = library(name)
        entries[name] = {
            "label": lib.label,
            "notes": lib.notes,
            "versions": v.versions,
            "version": library_version(lib, v),
            "error": v.error,
            "workloads": {},
        }
        if not v.ok:
            log(f"{name}: skipped, {v.error}")
            continue
        runners[name] = LibraryRunner(
            name,
            v.python,
            server,
            sizes,
            LOG_DIR,
            module=lib.adapter,  # type: ignore[arg-type]
        )
        runs[name] = {k: [] for k in args.workloads}
    for rep in range(args.repeat):
        for name, runner in runners.items():
            server.flush(scripts=True)
            for key in args.workloads:
                done = runs[name][key]
                last = done[-1] if done else {}
                if last.get("status") == "unsupported":
                    continue  # "no bulk API" does not change between repetitions
                if str(last.get("error", "")).startswith("timeout"):
                    continue  # a hung library would spend the whole budget hanging again
                t0 = time.monotonic()
                res = runner.run(key)
                done.append(res)
                log(
                    f"{name} {rep + 1}/{args.repeat} {key}: {_short(res)} "
                    f"({time.monotonic() - t0:.1f} s)"
                )
    for name, per_key in runs.items():
        entries[name]["workloads"] = {k: report.aggregate(r) for k, r in per_key.items()}
    return entries


def _short(res: dict[str, Any]) -> str:
    if res.get("status") != "ok":
        return f"{res.get('status')}: {str(res.get('error'))[:160]}"
    text = f"{res['value']:,.1f} {'B/job' if 'used_memory_after' in res else 'jobs/s'}"
    if "p50_ms" in res:
        text += f" p50 {res['p50_ms']:.2f} ms p99 {res['p99_ms']:.2f} ms"
    if res.get("capped"):
        text += f" (capped: {res['n']}/{res['n_planned']})"
    cost = res.get("redis") or {}
    if cost:
        text += (
            f" · redis {cost['commands_per_job']:.1f} cmd {cost['scripts_per_job']:.2f} scr "
            f"{cost['cpu_us_per_job']:.0f} µs/job"
        )
    cpu = [res.get(k) for k in ("producer_cpu_us_per_job", "worker_cpu_us_per_job")]
    if any(c is not None for c in cpu):
        text += " · cpu µs/job producer/worker " + "/".join(
            "–" if c is None else f"{c:.0f}" for c in cpu
        )
    return text


def sizes_text(sizes: Sizes) -> str:
    return (
        f"enqueue single {sizes.single:,}; bulk {sizes.bulk:,} in batches of {sizes.batch}; "
        f"process c=1 {sizes.c1:,}; process c=100 {sizes.c100:,}; round trip {sizes.rt:,} "
        f"(worker concurrency {sizes.rt_concurrency}, {sizes.rt_warmup} warm-up; the sequential "
        "round trip the same with worker concurrency 1); "
        f"memory {sizes.memory:,} "
        f"waiting jobs; producers warm up with {sizes.warmup} untimed operations; "
        f"each timed section capped at {sizes.cap_s:.0f} s"
    )


def plot(base: venvs.Venv, json_path: Path, png_path: Path) -> str | None:
    if not base.ok:
        return f"no plot: {base.error}"
    out = subprocess.run(
        [str(base.python), "-m", "harness.plot", str(json_path), str(png_path)],
        capture_output=True,
        text=True,
        cwd=BENCH_DIR,
        env=_base_env(),
        timeout=120,
    )
    if out.returncode != 0:
        return "plot failed: " + (out.stderr.strip().splitlines() or ["?"])[-1]
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.cap is not None:
        sizes = Sizes(**{**sizes.as_dict(), "cap_s": args.cap})
    started = time.monotonic()
    shutil.rmtree(LOG_DIR, ignore_errors=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    base, lib_venvs = bootstrap(args.libraries, args.reinstall)
    server = RedisServer(workdir=LOG_DIR / "redis")
    try:
        server.start()
        log(f"redis-server {server.version()} on {server.url}")
        meta = machine_info(server)
        meta.update(
            mode="quick" if args.quick else "full",
            repeat=args.repeat,
            sizes=sizes.as_dict(),
            sizes_text=sizes_text(sizes),
            workloads=args.workloads,
        )
        ceiling_data = {} if args.no_ceiling else run_ceiling(server, base, args)
        libraries = run_libraries(lib_venvs, server, sizes, args)
    except KeyboardInterrupt:
        log("interrupted: stopping workers and redis-server")
        return 130
    finally:
        procs.stop_all()
        server.stop()

    meta["duration_s"] = time.monotonic() - started
    meta["loadavg_end"] = round(os.getloadavg()[0], 2)
    data = {
        "meta": meta,
        "ceiling": ceiling_data,
        "libraries": libraries,
        "comparison": report.compare(libraries),
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    json_path, md_path, png_path = (RESULTS_DIR / f"latest.{ext}" for ext in ("json", "md", "png"))
    json_path.write_text(json.dumps(data, indent=1))
    problem = plot(base, json_path, png_path)
    markdown = report.render(data)
    if problem:
        markdown += f"\n{problem}\n"
    md_path.write_text(markdown)
    print(markdown)
    log(
        f"wrote {md_path.relative_to(BENCH_DIR.parent)}, {json_path.name}, "
        f"{png_path.name if not problem else '(no png)'} in {meta['duration_s'] / 60:.1f} min"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
