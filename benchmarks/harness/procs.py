"""Running adapter processes: own process group, timeout, kill, and the `@@RESULT@@` protocol.

Every process is started in a new session (so its whole group can be killed) and asks the kernel to
SIGKILL it if the orchestrator dies, so nothing outlives a run, even a `kill -9` of run.py.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
_LIVE: set[Proc] = set()
_LIVE_LOCK = threading.Lock()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def popen(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """subprocess.Popen in a new session that dies with the orchestrator."""
    return subprocess.Popen(cmd, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)


@dataclass
class Outcome:
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0
    log_tail: list[str] = field(default_factory=list)


class Proc:
    """A started adapter process whose stdout is parsed for `@@KIND@@ json` lines."""

    def __init__(
        self, cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path | None = None
    ) -> None:
        self.cmd = cmd
        self.started = time.monotonic()
        self.messages: dict[str, Any] = {}
        self.tail: deque[str] = deque(maxlen=40)
        self._ready = threading.Event()
        self._result = threading.Event()
        self._log = open(log_path, "a", buffering=1) if log_path else None
        if self._log:
            self._log.write(f"$ {' '.join(cmd)}\n")
        self.proc = popen(
            cmd,
            env=env,
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if self._log:
                self._log.write(line + "\n")
            if line.startswith("@@") and "@@ " in line:
                kind, _, body = line[2:].partition("@@ ")
                try:
                    self.messages[kind] = json.loads(body)
                except json.JSONDecodeError:
                    self.messages[kind] = body
                if kind == "READY":
                    self._ready.set()
                elif kind in ("RESULT", "ERROR"):
                    self._result.set()
            else:
                self.tail.append(line)
        self._ready.set()
        self._result.set()

    def wait_ready(self, timeout: float) -> bool:
        self._ready.wait(timeout)
        return "READY" in self.messages

    def wait(self, timeout: float) -> Outcome:
        """Wait for the process to report and exit; kill it (whole group) on timeout."""
        finished = self._result.wait(timeout)
        messages = dict(self.messages)  # what it said before being stopped
        if finished:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.stop()
        seconds = time.monotonic() - self.started
        tail = list(self.tail)
        if "RESULT" in messages:
            return Outcome(True, messages["RESULT"], seconds=seconds, log_tail=tail)
        if "ERROR" in messages:
            return Outcome(
                False, error=messages["ERROR"].get("error", "error"), seconds=seconds, log_tail=tail
            )
        if not finished:
            return Outcome(
                False,
                error=f"timeout after {timeout:.0f} s (killed)",
                seconds=seconds,
                log_tail=tail,
            )
        last = next((ln for ln in reversed(tail) if ln.strip()), "")
        return Outcome(
            False,
            error=f"exited with {self.proc.returncode} without a result: {last[:300]}",
            seconds=seconds,
            log_tail=tail,
        )

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after `grace` seconds."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # Children of a library (pool processes) may outlive the leader: kill the group regardless.
        _signal_group(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._reader.join(timeout=2)
        if self._log:
            self._log.close()
            self._log = None
        with _LIVE_LOCK:
            _LIVE.discard(self)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run(
    cmd: list[str], env: dict[str, str], cwd: Path, timeout: float, log_path: Path | None = None
) -> Outcome:
    return Proc(cmd, env, cwd, log_path).wait(timeout)


def stop_all() -> None:
    """Kill every adapter process still running (Ctrl-C, errors)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        proc.stop(grace=1.0)
