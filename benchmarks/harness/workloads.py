"""The workloads: their sizes, and how one run of one workload drives a library's adapter.

Producers and workers are separate processes, as users run them. Every run starts on fresh data.
Each timed result carries `redis`: what the timed section cost the server per job (commands,
script calls, command time, server CPU; see libs/common.py ServerCost).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import procs, stats
from .redis_server import RedisServer

BENCH_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    unit: str
    higher_is_better: bool = True


WORKLOADS: dict[str, Workload] = {
    w.key: w
    for w in [
        Workload("enqueue_single", "enqueue single", "jobs/s"),
        Workload("enqueue_bulk", "enqueue bulk (50)", "jobs/s"),
        Workload("process_c1", "process c=1", "jobs/s"),
        # taskora without claim-ahead (App(prefetch=0)); peers have the one c=1 figure above
        Workload("process_c1_strict", "process c=1 strict", "jobs/s"),
        Workload("process_c100", "process c=100", "jobs/s"),
        Workload("round_trip", "round trip (c=10)", "jobs/s"),
        # one producer: dispatch, await the result, next; the worker runs one job at a time
        Workload("round_trip_seq", "sequential round trip (c=1)", "jobs/s"),
        Workload("memory", "memory per waiting job", "B/job", higher_is_better=False),
        # the same with the reference's own payload, {"i": <int>}: like for like with its 362 B
        Workload(
            "memory_small", "memory per waiting job, payload {i}", "B/job", higher_is_better=False
        ),
    ]
}


@dataclass(frozen=True)
class Sizes:
    single: int = 5_000
    bulk: int = 20_000
    batch: int = 50
    c1: int = 5_000
    c100: int = 20_000
    rt: int = 2_000
    rt_concurrency: int = 10
    memory: int = 10_000
    cap_s: float = 30.0  # time cap of one timed section; a capped run reports over the jobs it did
    warmup: int = 50  # untimed operations before a producer's timed loop
    rt_warmup: int = 20
    startup_timeout_s: float = 60.0  # allowance for interpreter start, imports, connecting

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Sizes()
QUICK = Sizes(
    single=500,
    bulk=2_000,
    c1=500,
    c100=2_000,
    rt=200,
    memory=1_000,
    cap_s=8.0,
    warmup=10,
    rt_warmup=5,
    startup_timeout_s=60.0,
)


class LibraryRunner:
    """Runs workloads for one library through its adapter inside the library's venv."""

    def __init__(
        self,
        name: str,
        python: Path,
        server: RedisServer,
        sizes: Sizes,
        log_dir: Path,
        module: str | None = None,
    ) -> None:
        self.name = name
        self.module = module or name  # the adapter (a second taskora checkout uses libs.taskora)
        self.python = python
        self.server = server
        self.sizes = sizes
        self.log_path = log_dir / (name.replace("@", "-at-").replace("/", "_") + ".log")
        self.env = _clean_env()

    def _cmd(self, command: str, *extra: Any) -> list[str]:
        return [
            str(self.python),
            "-m",
            f"libs.{self.module}",
            command,
            "--url",
            self.server.url,
            *[str(x) for x in extra],
        ]

    def _run(
        self, command: str, *extra: Any, timeout: float, env: dict[str, str] | None = None
    ) -> procs.Outcome:
        return procs.run(
            self._cmd(command, *extra), env or self.env, BENCH_DIR, timeout, self.log_path
        )

    def _start(self, command: str, *extra: Any) -> procs.Proc:
        return procs.Proc(self._cmd(command, *extra), self.env, BENCH_DIR, self.log_path)

    # ---------------------------------------------------------------------------------------

    def run(self, key: str) -> dict[str, Any]:
        """One run of one workload on fresh data → a result (status: ok, error, unsupported)."""
        self.server.flush()
        try:
            return getattr(self, f"_{key}")()
        finally:
            procs.stop_all()

    def _timeout(self) -> float:
        return self.sizes.cap_s + self.sizes.startup_timeout_s

    def _enqueue_single(self) -> dict[str, Any]:
        s = self.sizes
        out = self._run(
            "enqueue-single",
            "--n",
            s.single,
            "--warmup",
            s.warmup,
            "--cap",
            s.cap_s,
            timeout=self._timeout(),
        )
        return _throughput(out, s.single)

    def _enqueue_bulk(self) -> dict[str, Any]:
        s = self.sizes
        out = self._run(
            "enqueue-bulk",
            "--n",
            s.bulk,
            "--batch",
            s.batch,
            "--warmup",
            s.warmup,
            "--cap",
            s.cap_s,
            timeout=self._timeout(),
        )
        return _throughput(out, s.bulk)

    def _process_c1(self) -> dict[str, Any]:
        return self._process(self.sizes.c1, 1)

    def _process_c1_strict(self) -> dict[str, Any]:
        if self.module != "taskora":
            return {"status": "unsupported", "error": "n/a (taskora only: no claim-ahead)"}
        return self._process(self.sizes.c1, 1, {**self.env, "TASKORA_BENCH_PREFETCH": "0"})

    def _process_c100(self) -> dict[str, Any]:
        return self._process(self.sizes.c100, 100)

    def _process(
        self, n: int, concurrency: int, env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        fill = self._run("fill", "--n", n, timeout=300)
        if not fill.ok:
            return _error(f"pre-enqueue failed: {fill.error}")
        out = self._run(
            "worker",
            "--n",
            n,
            "--concurrency",
            concurrency,
            "--cap",
            self.sizes.cap_s,
            timeout=self._timeout(),
            env=env,
        )
        result = _throughput(out, n)
        if out.ok and out.result:
            result["startup_s"] = out.result.get("startup_s")
        return result

    def _round_trip(self) -> dict[str, Any]:
        return self._round_trips(self.sizes.rt_concurrency)

    def _round_trip_seq(self) -> dict[str, Any]:
        return self._round_trips(1)

    def _round_trips(self, concurrency: int) -> dict[str, Any]:
        s = self.sizes
        worker = self._start("worker", "--n", 0, "--concurrency", concurrency, "--results")
        try:
            if not worker.wait_ready(s.startup_timeout_s):
                out = worker.wait(1)
                return _error(f"worker did not start: {out.error}")
            out = self._run(
                "round-trip",
                "--n",
                s.rt,
                "--warmup",
                s.rt_warmup,
                "--cap",
                s.cap_s,
                "--results",
                "--worker-pid",
                worker.proc.pid,
                timeout=self._timeout(),
            )
        finally:
            worker.stop()
        if not out.ok or not out.result:
            return _error(out.error or "no result")
        lat = out.result.get("latencies_ms") or []
        if not lat:
            return _error("no round trip completed")
        summary = stats.latency_summary(lat)
        return {
            "status": "ok",
            "value": out.result["n"] / out.result["seconds"],
            "n": out.result["n"],
            "n_planned": s.rt,
            "capped": bool(out.result.get("capped")),
            "redis": out.result.get("redis") or {},
            "producer_cpu_us_per_job": out.result.get("producer_cpu_us_per_job"),
            "worker_cpu_us_per_job": out.result.get("worker_cpu_us_per_job"),
            **summary,
        }

    def _memory(self, payload: str = "default") -> dict[str, Any]:
        n = self.sizes.memory
        # A small untimed fill first, then fresh data: what a library's first fill on this
        # server costs once (its scripts, the server's first allocations of each structure:
        # ~330 KB for taskora, which put ~33 B/job on whichever memory workload ran first) is
        # then paid before the measured fill, not counted per job.
        warm = self._run("fill", "--n", max(n // 10, 100), "--payload", payload, timeout=300)
        if not warm.ok:
            return _error(f"warm-up fill failed: {warm.error}")
        self.server.flush()
        before, scripts0 = self.server.used_memory(), self.server.used_memory_scripts()
        fill = self._run("fill", "--n", n, "--payload", payload, timeout=300)
        if not fill.ok:
            return _error(f"pre-enqueue failed: {fill.error}")
        after, scripts1 = self.server.used_memory(), self.server.used_memory_scripts()
        keys = self.server.command("DBSIZE")
        # Lua scripts loaded by this fill (the first run of a library on the server; FLUSHALL
        # keeps the script cache) are a fixed cost, not bytes per job: left out.
        return {
            "status": "ok",
            "value": (after - before - (scripts1 - scripts0)) / n,
            "scripts_loaded_bytes": scripts1 - scripts0,
            "n": n,
            "n_planned": n,
            "capped": False,
            "used_memory_before": before,
            "used_memory_after": after,
            "keys": keys,
        }

    def _memory_small(self) -> dict[str, Any]:
        return self._memory("small")


def _clean_env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")
    }
    env.update(PYTHONPATH=str(BENCH_DIR), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def _error(text: str) -> dict[str, Any]:
    return {"status": "error", "error": text}


def _throughput(out: procs.Outcome, planned: int) -> dict[str, Any]:
    if not out.ok or not out.result:
        return _error(out.error or "no result")
    res = out.result
    if "unsupported" in res:
        return {"status": "unsupported", "error": res["unsupported"]}
    if not res.get("n"):
        return _error("no job completed within the time cap" if res.get("capped") else "no jobs")
    return {
        "status": "ok",
        "value": res["n"] / res["seconds"],
        "n": res["n"],
        "n_planned": planned,
        "capped": bool(res.get("capped")),
        "seconds": res["seconds"],
        "redis": res.get("redis") or {},
        "producer_cpu_us_per_job": res.get("producer_cpu_us_per_job"),
        "worker_cpu_us_per_job": res.get("worker_cpu_us_per_job"),
    }
