"""A producer process: imports only the contract module (no handler code anywhere).

Usage: python -m tests.contract_procs.producer <url> <prefix> <count>
Prints one line per result: ``<width> <pixels> <worker pid>``; then checks that invalid data
is refused before it is written.
"""

from __future__ import annotations

import asyncio
import sys

import taskora
from tests.contract_procs.contracts import Resize, resize


async def main(url: str, prefix: str, count: int) -> int:
    app = taskora.App(url, prefix=prefix)
    task = app.register(resize)
    assert app.tasks["resize"].handler is None
    try:
        task(Resize(url="x"))
    except taskora.ConfigError as exc:
        assert "no handler in this process" in str(exc)
    else:
        raise AssertionError("a registered task ran locally")
    handles = [task.dispatch(Resize(url=f"img-{i}", width=i + 1)) for i in range(count)]
    for handle in handles:
        out = await handle.wait_for(60)
        assert type(out).__name__ == "Resized", out
        print(out.url, out.pixels, out.worker_pid, flush=True)
    try:
        await task.dispatch({"width": "wide"})  # type: ignore[arg-type]
    except taskora.ValidationError as exc:
        print("refused", ",".join(".".join(map(str, i["path"])) for i in exc.issues))
    counts = await app.counts("resize")
    print("completed", counts["completed"], "waiting", counts["waiting"])
    await app.close()
    assert "taskora.worker" not in sys.modules, "a producer must not load the worker"
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
