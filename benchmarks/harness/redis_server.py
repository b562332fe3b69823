"""A private redis-server for one benchmark run: free loopback port, persistence off, always
stopped.

Also a minimal RESP client (stdlib only) for the orchestrator's own commands: PING, FLUSHALL, INFO.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .procs import popen


class RedisError(Exception):
    pass


class RespClient:
    """Just enough RESP2 for control commands (not for measuring anything)."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass

    def command(self, *args: Any) -> Any:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._read()

    def _read(self) -> Any:
        line = self.file.readline()
        if not line:
            raise RedisError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.file.read(size + 2)[:-2]
            return data.decode(errors="replace")
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise RedisError(f"bad reply {line!r}")


def parse_info(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RedisServer:
    """`with RedisServer() as server:` starts redis-server and guarantees it is stopped."""

    def __init__(
        self,
        binary: str = "redis-server",
        host: str = "127.0.0.1",
        port: int | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.binary = shutil.which(binary) or binary
        self.host = host
        self.port = port or free_port(host)
        self.workdir = (
            workdir  # kept (its log) when given; a temporary dir, removed at stop, when not
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None
        self._client: RespClient | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 15.0) -> RedisServer:
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._dir, self._owned = str(self.workdir), False
        else:
            self._dir, self._owned = tempfile.mkdtemp(prefix="bench-redis-"), True
        self.log_path = Path(self._dir) / "redis.log"
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir,
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
        ]
        # Own process group (a Ctrl-C at the terminal reaches run.py, which stops the server in
        # order), killed by the kernel if run.py itself dies.
        self.proc = popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                log = self.log_path.read_text()[-500:] if self.log_path.exists() else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {log}")
            try:
                if self.command("PING") == "PONG":
                    return self
            except (OSError, RedisError):
                self._drop_client()
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.05)

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def command(self, *args: Any) -> Any:
        if self._client is None:
            self._client = RespClient(self.host, self.port)
        try:
            return self._client.command(*args)
        except OSError:
            self._drop_client()
            raise

    def info(self, section: str = "") -> dict[str, str]:
        return parse_info(self.command("INFO", section) if section else self.command("INFO"))

    def used_memory(self) -> int:
        return int(self.info("memory")["used_memory"])

    def used_memory_scripts(self) -> int:
        """The script cache's share of used_memory (Redis 7.0; 0 where not reported)."""
        return int(self.info("memory").get("used_memory_scripts", 0))

    def version(self) -> str:
        return self.info("server").get("redis_version", "?")

    def flush(self, scripts: bool = False) -> None:
        """Fresh data: FLUSHALL (sync); with `scripts`, also the script cache and functions."""
        self.command("FLUSHALL", "SYNC")
        if scripts:
            self.command("SCRIPT", "FLUSH", "SYNC")
            self.command("FUNCTION", "FLUSH", "SYNC")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.command("SHUTDOWN", "NOSAVE")
            except (OSError, RedisError):
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self._drop_client()
        if self._dir and self._owned:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
