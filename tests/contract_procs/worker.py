"""A worker process: implements the contract and runs until SIGTERM.

Usage: python -m tests.contract_procs.worker <url> <prefix>
"""

from __future__ import annotations

import os
import sys

import taskora
from tests.contract_procs.contracts import Resize, Resized, resize


async def handle_resize(data: Resize) -> Resized:
    assert isinstance(data, Resize)
    return Resized(url=data.url, pixels=data.width * data.width, worker_pid=os.getpid())


def main(url: str, prefix: str) -> int:
    app = taskora.App(url, prefix=prefix)
    app.implement(resize, handle_resize, concurrency=4)
    app.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
