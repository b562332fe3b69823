"""Child processes of the tests: stopped the way a deployment stops them."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path


def ledger_lines(path: Path) -> list[str]:
    """The complete lines of a ledger file that child processes append to while we read:
    a line that crosses a page boundary can be read half-written (the kernel copies and
    publishes a write page by page), so a last line without its newline is not read yet."""
    if not path.exists():
        return []
    text = path.read_text()
    return text[: text.rfind("\n") + 1].splitlines()


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM every live process (a graceful stop), then wait; kill what outlives the deadline."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
