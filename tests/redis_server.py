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
from pathlib import Path

import redis

_RUNNING: set[RedisServer] = set()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
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
        args = [
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
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _RUNNING.add(self)
        deadline = time.monotonic() + 20
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as client:
                    client.ping()
                    return
            except redis.exceptions.BusyLoadingError:
                pass
            except (redis.exceptions.ConnectionError, OSError):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.log_tail()}") from None
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

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=10)

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
