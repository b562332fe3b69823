"""Real redis-server processes for tests: each on a free loopback port, always stopped."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

_RUNNING: set[RedisServer] = set()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port where a connect is refused, held for the block: bound, never
    listening, so no other process can start listening there meanwhile (a port merely
    picked free could be taken by another test run's server before the test connects)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def script_calls(r: redis.Redis, command: str | None = None) -> int:
    """Script calls the server ran so far (INFO commandstats): taskora's FCALL (Redis
    Functions) and EVALSHA (without them), or only ``command``'s. Only clients send them."""
    stats = r.info("commandstats")
    names = (command,) if command else ("fcall", "evalsha")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names)


class PortTaken(RuntimeError):
    """The server could not bind its port: another process bound it first."""


class RedisServer:
    """A redis-server we own. ``restart()`` keeps its port and data directory."""

    def __init__(self, *extra: str, port: int | None = None, persistence: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (run: make test, which installs it)")
        self.binary = binary
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="taskora-redis-"))
        self.extra = list(extra)
        self.persistence = persistence
        self.proc: subprocess.Popen[bytes] | None = None
        # A port picked free is only free until someone binds it: other test runs and their
        # servers on this machine pick from the same range. Lost that race: pick again.
        for attempt in range(1, 6):
            try:
                self.start()
                return
            except PortTaken:
                self.stop()
                if port is not None or attempt == 5:
                    raise
                self.new_ports()

    def new_ports(self) -> None:
        """Fresh ports for a first start that lost its port (and a clean data directory)."""
        self.port = free_port()
        for leftover in self.dir.iterdir():
            leftover.unlink()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        """The server's command line."""
        # With persistence, every acknowledged write must outlive a kill -9 of the server
        # (the process, not the machine): it must reach the kernel before the reply.
        # appendfsync everysec does not ensure that: while a background fsync is still
        # running (a busy disk on a loaded machine) it postpones the write for up to 2 s and
        # replies meanwhile, so a kill then loses acknowledged writes. `no` always writes the
        # AOF before replying (fsync left to the kernel, which a process kill does not need).
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "no", "--save", ""]
            if self.persistence
            else ["--appendonly", "no", "--save", ""]
        )
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
            "--enable-debug-command",
            "local",
            *persistence,
            *self.extra,
        ]

    def start(self) -> None:
        """Start the server and return once it answers: this process, not another server
        that holds the port (then ours fails to bind it: :class:`PortTaken`)."""
        quiet = subprocess.DEVNULL
        self.proc = subprocess.Popen(self.args(), stdout=quiet, stderr=quiet)
        _RUNNING.add(self)
        deadline = time.monotonic() + 30
        while True:
            try:
                with self.client(timeout=1) as client:
                    if int(client.info("server")["process_id"]) == self.proc.pid:
                        return
            except (redis.exceptions.RedisError, OSError):
                pass  # not up yet, still loading, or another server (which may want a password)
            if self.proc.poll() is not None:
                log = self.log_tail()
                if "Failed listening on port" in log:
                    raise PortTaken(f"redis-server could not bind its port: {log}")
                raise RuntimeError(f"redis-server exited: {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {self.log_tail()}")
            time.sleep(0.02)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "redis.log").read_text()[-2000:]
        return ""

    def stop(self, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)

    def restart(self, kill: bool = False, pause: float = 0.0) -> None:
        self.stop(kill=kill)
        if pause:
            time.sleep(pause)
        self.start()

    def client(self, timeout: float = 10) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=timeout)

    def close(self) -> None:
        self.stop()
        _RUNNING.discard(self)
        shutil.rmtree(self.dir, ignore_errors=True)


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.close()


if os.environ.get("TASKORA_TEST_DEBUG"):
    print("redis_server helper loaded")
