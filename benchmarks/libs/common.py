"""The adapter runtime: what every library adapter shares, and its command line.

An adapter module (`libs/<library>.py`) runs inside that library's venv as
`python -m libs.<library> <command> [options]` and defines:

    class Producer(common.Producer):     # methods all `async def`, or all plain `def`
        def __init__(self, url, results)  # results: the workload reads job results
        open() / close()                  # connect, release (untimed)
        enqueue()                         # one awaited single enqueue of PAYLOAD
        enqueue_batch(size)               # one bulk-API call of `size` jobs; leave out if none
        round_trip()                      # enqueue one job and wait for its result

    def run_worker(url, concurrency, results)   # sync or async; never returns
        # builds the library's worker with a no-op handler that calls DRAIN.hit(),
        # calls DRAIN.start() right before the worker loop starts, then runs it.

    if __name__ == "__main__":
        common.main(Producer, run_worker)

Results go to the orchestrator as one `@@RESULT@@ <json>` line on the original stdout (libraries
that redirect `sys.stdout` or log to it cannot break it); a worker in serve mode prints `@@READY@@`.

Every timed section also reports what it cost the Redis server (`ServerCost`): the process that
owns the section resets the server's statistics right before its clock starts and reads them right
after it stops, so the figures cover exactly the timed jobs (every client's commands, Lua's inner
calls included), not the warm-up or the fill.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

PAYLOAD: dict[str, Any] = {"to": "user@example.com", "subject": "Welcome!"}
#: `fill --payload small`: the payload the reference's memory figure was measured with,
#: `{i: <int>}`; one 4-digit value (the mean length of 0..9,999 is 3.9 digits) so that adapters
#: keep sending the one PAYLOAD object they imported.
SMALL_PAYLOAD: dict[str, Any] = {"i": 5000}
TASK_NAME = "bench-noop"
QUEUE_NAME = "bench"
#: Polling intervals we lower from a library's default (documented in the report notes).
FAST_POLL_S = 0.01

# A private copy of the stdout pipe, taken before any library can redirect sys.stdout.
_OUT = os.fdopen(os.dup(1), "w", buffering=1)


def emit(kind: str, payload: Any = None) -> None:
    _OUT.write(f"@@{kind}@@ {json.dumps(payload)}\n")
    _OUT.flush()


def _exit(code: int = 0) -> None:
    """Leave at once: worker shutdown paths differ per library and are not under test."""
    global _AT_EXIT
    if _AT_EXIT is not None:
        at_exit, _AT_EXIT = _AT_EXIT, None
        at_exit()
    try:
        _OUT.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


# --------------------------------------------------------------------------------------------
# What a timed section cost the Redis server

#: Script invocations (Redis counts the commands a script runs under their own names as well).
SCRIPT_COMMANDS = {"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"}
#: The measurement's own commands, left out of the counts.
OWN_COMMANDS = {"info", "config"}


class ServerCost:
    """Redis statistics over one timed section: `start()` before its clock starts, `read(n)` after.

    Commands (all clients, plus what scripts call inside), script calls and the time Redis spent
    in scripts come from INFO commandstats after CONFIG RESETSTAT; the server's process
    CPU (used_cpu_user + used_cpu_sys, which RESETSTAT leaves alone) is the delta over the section:
    it also holds networking and event-loop work, the full price of a job on the server.
    """

    def __init__(self, url: str) -> None:
        from harness.redis_server import RespClient  # stdlib only, on the adapters' PYTHONPATH

        parts = urlsplit(url)
        self._client = RespClient(parts.hostname or "127.0.0.1", parts.port or 6379)
        self._cpu0 = 0.0

    def _info(self, section: str) -> dict[str, str]:
        from harness.redis_server import parse_info

        return parse_info(self._client.command("INFO", section))

    def _cpu(self) -> float:
        info = self._info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def start(self) -> None:
        self._client.command("CONFIG", "RESETSTAT")
        self._cpu0 = self._cpu()

    def read(self, n: int) -> dict[str, Any]:
        cpu = self._cpu() - self._cpu0
        calls: dict[str, int] = {}
        usec = 0  # in scripts, their inner commands included (those are counted twice: not summed)
        for key, value in self._info("commandstats").items():
            name = key.removeprefix("cmdstat_")
            if name in OWN_COMMANDS or name.split("|")[0] in OWN_COMMANDS:
                continue
            fields = dict(kv.split("=", 1) for kv in value.split(","))
            calls[name] = int(fields["calls"])
            if name in SCRIPT_COMMANDS:
                usec += int(fields["usec"])
        self._client.close()
        if n <= 0:
            return {}
        top = sorted(calls.items(), key=lambda kv: -kv[1])
        return {
            "commands_per_job": sum(calls.values()) / n,
            "scripts_per_job": sum(c for k, c in calls.items() if k in SCRIPT_COMMANDS) / n,
            "script_us_per_job": usec / n,
            "cpu_us_per_job": cpu * 1e6 / n,
            "calls_per_job": {k: round(c / n, 3) for k, c in top},
        }


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of another process (Linux /proc), None where unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# Worker side: count handler runs, report when the N-th one finished.


class Drain:
    """Counts handler runs in this worker process and reports the time the N-th finished.

    `start()` marks the worker start (t0). With `n == 0` (serve mode) it announces readiness and
    never reports. A watchdog reports a partial count when the time cap passes.
    """

    def __init__(self) -> None:
        self.n = 0
        self.cap_s = 0.0
        self.count = 0
        self.t0: float | None = None
        self.t_first: float | None = None
        self._lock = threading.Lock()
        self._done = False
        self._cost: ServerCost | None = None
        self._cpu0 = 0.0

    def configure(self, n: int, cap_s: float, url: str | None = None) -> None:
        self.n, self.cap_s = n, cap_s
        if n and url:
            self._cost = ServerCost(url)

    def start(self) -> None:
        if self.t0 is not None:
            return
        if self._cost is not None:
            self._cost.start()
        self._cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        if self.n == 0:
            emit("READY", {"pid": os.getpid()})
            return
        threading.Thread(target=self._watchdog, daemon=True).start()

    def hit(self) -> None:
        with self._lock:
            self.count += 1
            if self.count == 1:
                self.t_first = time.perf_counter()
            if self.n and self.count == self.n:
                self._report(capped=False)

    def _watchdog(self) -> None:
        assert self.t0 is not None
        time.sleep(max(0.0, self.t0 + self.cap_s - time.perf_counter()))
        with self._lock:
            self._report(capped=True)

    def _report(self, capped: bool) -> None:
        if self._done:
            return
        self._done = True
        t_end = time.perf_counter()
        assert self.t0 is not None
        emit(
            "RESULT",
            {
                "n": self.count,
                "seconds": t_end - self.t0,
                "capped": capped,
                "startup_s": (self.t_first - self.t0) if self.t_first is not None else None,
                "redis": self._cost.read(self.count) if self._cost is not None else {},
                "worker_cpu_us_per_job": (time.process_time() - self._cpu0)
                * 1e6
                / max(1, self.count),
            },
        )
        _exit(0)


DRAIN = Drain()


# --------------------------------------------------------------------------------------------
# Producer side


class Producer:
    """Base class; an adapter overrides what its library supports."""

    #: Why there is no bulk figure, when `enqueue_batch` is not overridden.
    no_bulk_reason = "no bulk API"

    def __init__(self, url: str, results: bool = False) -> None:
        self.url = url
        self.results = results

    def has_bulk(self) -> bool:
        return type(self).enqueue_batch is not Producer.enqueue_batch

    def enqueue_batch(self, size: int) -> Any:  # pragma: no cover - marker
        raise NotImplementedError


def _is_async(producer: Producer) -> bool:
    return inspect.iscoroutinefunction(producer.enqueue)


async def _acall(fn: Callable[..., Any], *args: Any) -> Any:
    if fn is None:
        return None
    out = fn(*args)
    if inspect.isawaitable(out):
        out = await out
    return out


async def _drive(producer: Producer, command: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one producer command; sync adapters are driven the same way, without awaiting."""
    aio = _is_async(producer)

    async def call_async(fn: Callable[..., Any], *a: Any) -> Any:
        return await fn(*a)

    async def call_sync(fn: Callable[..., Any], *a: Any) -> Any:
        return fn(*a)

    call = call_async if aio else call_sync
    await _acall(getattr(producer, "open", None))
    try:
        if command == "enqueue-single":
            for _ in range(args.warmup):
                await call(producer.enqueue)
            return await _timed_loop(lambda: call(producer.enqueue), args.n, 1, args.cap, args.url)
        if command == "enqueue-bulk":
            if not producer.has_bulk():
                return {"unsupported": producer.no_bulk_reason}
            for _ in range(max(1, args.warmup // args.batch)):
                await call(producer.enqueue_batch, args.batch)
            return await _timed_loop(
                lambda: call(producer.enqueue_batch, args.batch),
                args.n,
                args.batch,
                args.cap,
                args.url,
            )
        if command == "fill":
            t0 = time.perf_counter()
            await _fill(producer, args.n, aio)
            return {"n": args.n, "seconds": time.perf_counter() - t0}
        if command == "round-trip":
            for _ in range(args.warmup):
                await call(producer.round_trip)
            lat: list[float] = []
            cost = ServerCost(args.url)
            cost.start()
            worker0 = process_cpu_s(args.worker_pid) if args.worker_pid else None
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            deadline = t0 + args.cap
            for _ in range(args.n):
                s = time.perf_counter()
                await call(producer.round_trip)
                e = time.perf_counter()
                lat.append((e - s) * 1000.0)
                if e > deadline:
                    break
            total = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            worker1 = process_cpu_s(args.worker_pid) if args.worker_pid else None
            n = max(1, len(lat))
            return {
                "n": len(lat),
                "seconds": total,
                "capped": len(lat) < args.n,
                "latencies_ms": lat,
                "redis": cost.read(len(lat)),
                # where the time goes: CPU of the producer and the worker per round trip
                "producer_cpu_us_per_job": cpu * 1e6 / n,
                "worker_cpu_us_per_job": (
                    (worker1 - worker0) * 1e6 / n
                    if worker0 is not None and worker1 is not None
                    else None
                ),
            }
        raise SystemExit(f"unknown command {command}")
    finally:
        # Untimed, and not under test: a library whose close() hangs (bullmq's QueueEvents) must not
        # cost the run its result.
        with contextlib.suppress(Exception, asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(_acall(getattr(producer, "close", None)), 2)


async def _timed_loop(
    step: Callable[[], Any], n: int, per_step: int, cap: float, url: str
) -> dict[str, Any]:
    steps = n // per_step
    done = 0
    cost = ServerCost(url)
    cost.start()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    deadline = t0 + cap
    for _ in range(steps):
        await step()
        done += 1
        if time.perf_counter() > deadline:
            break
    seconds = time.perf_counter() - t0
    return {
        "n": done * per_step,
        "seconds": seconds,
        "capped": done < steps,
        "redis": cost.read(done * per_step),
        "producer_cpu_us_per_job": (time.process_time() - cpu0) * 1e6 / max(1, done * per_step),
    }


async def _fill(producer: Producer, n: int, aio: bool) -> None:
    """Pre-enqueue n jobs, untimed, by the fastest path the adapter has."""
    custom = getattr(producer, "fill", None)
    if custom is not None:
        await _acall(custom, n)
        return
    if producer.has_bulk():
        batch = 50
        sizes = [batch] * (n // batch) + ([n % batch] if n % batch else [])
        if aio:
            sem = asyncio.Semaphore(8)

            async def one(size: int) -> None:
                async with sem:
                    await producer.enqueue_batch(size)

            await asyncio.gather(*(one(s) for s in sizes))
        else:
            for size in sizes:
                producer.enqueue_batch(size)
        return
    if aio:
        sem = asyncio.Semaphore(64)

        async def single() -> None:
            async with sem:
                await producer.enqueue()

        await asyncio.gather(*(single() for _ in range(n)))
    else:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: producer.enqueue(), range(n)))


# --------------------------------------------------------------------------------------------
# Entry point


def run_async(main: Callable[[], Any]) -> Any:
    """Run a coroutine function on uvloop when it is installed (every venv installs it)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main())
    return uvloop.run(main())


def _profile_if_asked(command: str) -> None:
    """BENCH_CPROFILE=DIR: profile this process (cProfile) into DIR/<command>.prof, written
    at its exit or at SIGTERM (serve-mode workers are stopped with it)."""
    out_dir = os.environ.get("BENCH_CPROFILE")
    if not out_dir:
        return
    import cProfile
    import signal

    profiler = cProfile.Profile()
    path = os.path.join(out_dir, f"{command}.prof")

    def dump(*_: Any) -> None:
        profiler.disable()
        profiler.dump_stats(path)
        if _:  # from SIGTERM
            _exit(0)

    global _AT_EXIT
    _AT_EXIT = dump
    signal.signal(signal.SIGTERM, dump)
    profiler.enable()


_AT_EXIT: Callable[..., None] | None = None


def main(producer_cls: type[Producer], run_worker: Callable[..., Any]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "command", choices=["enqueue-single", "enqueue-bulk", "fill", "round-trip", "worker"]
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument(
        "--cap", type=float, default=60.0, help="time cap of the timed section, seconds"
    )
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--results", action="store_true", help="the workload reads job results")
    parser.add_argument("--worker-pid", type=int, default=0, help="round trips: the worker's pid")
    parser.add_argument(
        "--payload", choices=["default", "small"], default="default", help="fill: which payload"
    )
    args = parser.parse_args()
    if args.payload == "small":  # in place: adapters hold a reference to PAYLOAD
        PAYLOAD.clear()
        PAYLOAD.update(SMALL_PAYLOAD)
    _profile_if_asked(args.command)
    try:
        if args.command == "worker":
            DRAIN.configure(args.n, args.cap, args.url)
            if inspect.iscoroutinefunction(run_worker):
                run_async(lambda: run_worker(args.url, args.concurrency, args.results))
            else:
                run_worker(args.url, args.concurrency, args.results)
            raise RuntimeError("the worker loop returned before the jobs were drained")
        producer = producer_cls(args.url, results=args.results)
        result = run_async(lambda: _drive(producer, args.command, args))
        emit("RESULT", result)
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            _exit(0)
        traceback.print_exc()
        emit("ERROR", {"error": f"{type(exc).__name__}: {exc}".strip()[:500]})
        _exit(1)
    _exit(0)
