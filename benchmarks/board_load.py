"""The board under load: a worker's throughput with and without 20 live browsers.

    .venv/bin/python benchmarks/board_load.py [--jobs 30000] [--clients 20] [--rounds 3]

Starts its own redis-server and a board process (`taskora board --url ... --prefix ...`, as an
operator would). Each run enqueues ``--jobs`` no-op jobs, then starts one worker process
(concurrency 64) and times it from its first job to its last. Runs rotate through three modes:
"without" (the board process is up, no browser connected), "overview" (``--clients`` SSE
streams as the overview and task pages open them: stats frames) and "job pages" (``--clients``
streams each watching a job of the task, which makes the board read every event of that
task). Prints the worker's jobs/s per run, the medians and the differences in per cent, and
what the browsers received. With ``--rate 2000`` the jobs are dispatched at that rate while the
worker runs instead (the issue's load: does the worker keep up with 20 browsers watching?).
A benchmark, not a test: figures depend on the machine (2 cores
here, shared by Redis, the worker, the board and the clients).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

PREFIX = "boardload"
TASK = "load"


def build(url: str) -> Any:
    import taskora

    app = taskora.App(url, prefix=PREFIX)

    @app.task(TASK, concurrency=64)
    async def load(data: int) -> int:
        return data

    return app


async def work(url: str, jobs: int) -> None:
    """The worker process: run until ``jobs`` jobs are done, print the time it took."""
    app = build(url)
    done = 0
    first = last = 0.0
    finished = asyncio.Event()

    def on_done(_: Any) -> None:
        nonlocal done, first, last
        now = time.perf_counter()
        first = first or now
        done += 1
        last = now
        if done >= jobs:
            finished.set()

    app.tasks[TASK].on("completed", on_done)  # this process's own events: one reader
    await app.start()
    await finished.wait()
    print(json.dumps({"jobs": done, "seconds": last - first}), flush=True)
    await app.close(timeout=5)


async def enqueue(url: str, jobs: int) -> None:
    app = build(url)
    task = app.tasks[TASK]
    for start in range(0, jobs, 1000):
        handles = task.dispatch_many([{"data": i} for i in range(start, min(jobs, start + 1000))])
        await asyncio.gather(*handles)
    await app.close()


async def browser(url: str, query: str, stats: dict[str, int], stop: asyncio.Event) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=None) as http:
        async with http.stream("GET", url + "/api/events" + query) as response:
            reader = response.aiter_lines()
            while not stop.is_set():
                line = await anext(reader)
                stats["bytes"] += len(line) + 1
                if line.startswith("event: "):
                    stats[line[7:]] = stats.get(line[7:], 0) + 1


async def paced(url: str, jobs: int, rate: int) -> None:
    """Dispatch ``jobs`` jobs at ``rate`` a second (batches every 10 ms)."""
    app = build(url)
    task = app.tasks[TASK]
    start = time.perf_counter()
    sent = 0
    while sent < jobs:
        due = min(jobs, int((time.perf_counter() - start) * rate) + 1)
        if due > sent:
            await asyncio.gather(*task.dispatch_many([{"data": i} for i in range(sent, due)]))
            sent = due
        await asyncio.sleep(0.01)
    await app.close()


async def one_run(
    url: str, board: str, jobs: int, clients: int, query: str = "", rate: int = 0
) -> dict[str, Any]:
    if not rate:
        await enqueue(url, jobs)
    stop = asyncio.Event()
    per_client = [{"bytes": 0} for _ in range(clients)]
    readers = [
        asyncio.create_task(browser(board, query.format(i=i), s, stop))
        for i, s in enumerate(per_client)
    ]
    if clients:
        deadline = time.monotonic() + 30
        while any(s.get("stats", 0) == 0 for s in per_client):  # every browser is live
            if time.monotonic() > deadline:
                raise RuntimeError("the browsers did not connect")
            await asyncio.sleep(0.05)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "work", url, str(jobs), stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    if rate:
        await paced(url, jobs, rate)
    line = await proc.stdout.readline()
    await proc.wait()
    stop.set()
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    result = json.loads(line)
    rate = result["jobs"] / result["seconds"]
    frames = sum(s.get("jobs", 0) + s.get("stats", 0) for s in per_client)
    return {
        "rate": rate,
        "frames_per_client_s": frames / max(clients, 1) / result["seconds"],
        "kib_per_client_s": sum(s["bytes"] for s in per_client)
        / 1024
        / max(clients, 1)
        / result["seconds"],
    }


async def wait_ready(board: str) -> None:
    import httpx

    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(board + "/api/config")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the board did not start")
            await asyncio.sleep(0.1)


MODES = {
    # name: (browsers, query); "job pages" makes the board read every event of the task
    "without": (False, ""),
    "overview": (True, ""),
    "job pages": (True, "?job=job-{i}&tasks=" + TASK),
}


async def bench(url: str, board: str, opts: argparse.Namespace) -> None:
    await wait_ready(board)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    await one_run(url, board, min(opts.jobs, 5000), 0)  # warm-up
    for r in range(opts.rounds):
        for mode, (browsers, query) in MODES.items():
            clients = opts.clients if browsers else 0
            run = await one_run(url, board, opts.jobs, clients, query, opts.rate)
            runs[mode].append(run)
            extra = (
                f", each of {clients} browsers got {run['frames_per_client_s']:.1f} frames/s "
                f"({run['kib_per_client_s']:.2f} KiB/s)"
                if clients
                else " (board up, no browser)"
            )
            print(f"round {r + 1} {mode:>9}: {run['rate']:8,.0f} jobs/s{extra}", flush=True)
    base = statistics.median(r["rate"] for r in runs["without"])
    print(f"median without browsers: {base:,.0f} jobs/s")
    for mode in list(MODES)[1:]:
        rate = statistics.median(r["rate"] for r in runs[mode])
        print(
            f"median with {opts.clients} browsers on {mode}: {rate:,.0f} jobs/s "
            f"({100 * (rate - base) / base:+.1f} %)"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "work":
        asyncio.run(work(sys.argv[2], int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--rate",
        type=int,
        default=0,
        help="dispatch at this many jobs/s while the worker runs "
        "(default 0: enqueue everything first and time the worker draining it)",
    )
    opts = parser.parse_args()
    from harness.redis_server import RedisServer, free_port

    with RedisServer() as server:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "TASKORA_BOARD_PASSWORD"}
        board_proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "taskora.cli",
                "board",
                "--url",
                server.url,
                "--prefix",
                PREFIX,
                "--port",
                str(port),
                "--log-level",
                "WARNING",
            ],
            env=env,
        )
        try:
            asyncio.run(bench(server.url, f"http://127.0.0.1:{port}/board", opts))
        finally:
            board_proc.send_signal(signal.SIGTERM)
            try:
                board_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                board_proc.kill()
                board_proc.wait()


if __name__ == "__main__":
    main()
