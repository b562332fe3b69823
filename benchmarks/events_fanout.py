"""Events fan-out: jobs of 4 tasks, run by one worker process, heard by 3 listening processes.

    .venv/bin/python benchmarks/events_fanout.py [--jobs 10000]

Starts its own redis-server. Each job writes 3 events (waiting, active, completed); every
listener must receive all of them. Prints, per listener, the events received, how many were
missing or repeated, and events/s from the first dispatch to the listener's last event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

TASKS = [f"fan{i}" for i in range(4)]
KINDS = ("waiting", "active", "completed")


def build(url: str) -> Any:
    import taskora

    app = taskora.App(url, prefix="fanout")
    for name in TASKS:

        async def handler(data: int) -> int:
            return data

        app.task(name, concurrency=100)(handler)
    return app


async def listen(url: str, out: str) -> None:
    app = build(url)
    seen: set[tuple[str, str]] = set()
    state: dict[str, Any] = {"events": 0, "repeats": 0, "last": 0.0, "repeated": {}}

    def on(kind: str, event: Any) -> None:
        key = (kind, event.id)
        if key in seen:  # the stream holds it twice (a job released and claimed again)
            state["repeats"] += 1
            state["repeated"][kind] = state["repeated"].get(kind, 0) + 1
        seen.add(key)
        state["events"] += 1
        state["last"] = time.time()

    for task in app.tasks.values():
        for kind in KINDS:
            task.on(kind, lambda e, k=kind: on(k, e))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await app.start(tasks=[])
    print("READY", flush=True)
    while not stop.is_set():
        Path(out).write_text(json.dumps(state))
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except TimeoutError:
            pass
    Path(out).write_text(json.dumps(state))
    await app.close()


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE)


async def produce(url: str, jobs: int) -> float:
    app = build(url)
    start = time.time()
    per_task = jobs // len(TASKS)
    handles = []
    for task in app.tasks.values():
        handles += task.dispatch_many([{"data": i} for i in range(per_task)])
    for h in handles:
        await h
    await app.close()
    return start


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "listen":
        asyncio.run(listen(sys.argv[2], sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "work":
        build(sys.argv[2]).run()
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    opts = parser.parse_args()
    from harness.redis_server import RedisServer

    with RedisServer() as server:
        url = server.url
        outs = [f"/tmp/taskora-fanout-{os.getpid()}-{i}.json" for i in range(3)]
        listeners = [spawn("listen", url, out) for out in outs]
        procs = list(listeners)
        try:
            for p in listeners:
                assert p.stdout is not None and p.stdout.readline().strip() == b"READY"
            procs.append(spawn("work", url))
            time.sleep(1.0)
            start = asyncio.run(produce(url, opts.jobs))
            expected = 3 * (opts.jobs // len(TASKS)) * len(TASKS)
            deadline = time.time() + 300
            states: list[dict[str, Any]] = []
            while time.time() < deadline:
                states = [json.loads(Path(o).read_text() or "{}") for o in outs]
                if all(s.get("events", 0) >= expected for s in states):
                    break
                time.sleep(0.2)
            time.sleep(0.5)
            states = [json.loads(Path(o).read_text()) for o in outs]
            print(f"{opts.jobs} jobs of {len(TASKS)} tasks, {expected} events per listener")
            for i, s in enumerate(states):
                rate = s["events"] / max(s["last"] - start, 1e-9)
                missing = expected - (s["events"] - s["repeats"])
                print(
                    f"listener {i}: {s['events']} events, missing {missing}, "
                    f"repeated {s['repeats']} {s['repeated']}, {rate:,.0f} events/s"
                )
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            for o in outs:
                Path(o).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
