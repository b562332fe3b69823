"""A listening process for the events tests: no workers, only listeners.

Usage: python -m tests.mp.listener <url> <prefix> <out-file> <task> [<task>...]
Appends "<event> <task> <job id>" per event to out-file (O_APPEND), prints READY once
listening, and exits on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

import taskora


async def main(url: str, prefix: str, out: str, names: list[str]) -> None:
    app = taskora.App(url, prefix=prefix)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(kind: str, event: Any) -> None:
        os.write(fd, f"{kind} {event.task} {event.id}\n".encode())

    for name in names:

        async def handler(data: Any) -> Any:
            return data

        task = app.task(name)(handler)
        for kind in ("waiting", "active", "completed", "failed"):
            task.on(kind, lambda e, k=kind: write(k, e))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await app.start(tasks=[])  # connects; runs no worker
    print("READY", flush=True)
    await stop.wait()
    await app.close()
    os.close(fd)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
