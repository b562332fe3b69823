"""A TLS-only Sentinel group for tests: master, replica and sentinels with no plain port
(``port 0``, ``tls-port``), replication and the sentinels' own links over TLS
(``tls-replication yes``), client certificates required everywhere; the certificates are the
ones test_tls.py makes with the openssl CLI. Always stopped."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import redis

from tests import redis_server
from tests.certs import Certs, make_ca, make_leaf
from tests.redis_sentinel import MASTER_NAME, SentinelGroup, wait_ready
from tests.redis_server import RedisServer

SECRET = "tls-s3ntinel-pw"


def make_certs(where: Path) -> Certs:
    """A CA, server and client certificates it signed (for 127.0.0.1), and another CA."""
    ca, ca_key = make_ca(where, "ca")
    server, server_key = make_leaf(where, "server", ca, ca_key, 2001)
    client, client_key = make_leaf(where, "client", ca, ca_key, 2002)
    other_ca, _ = make_ca(where, "other-ca")
    return Certs(ca, server, server_key, client, client_key, other_ca)


def _tls_settings(certs: Certs) -> list[tuple[str, str]]:
    return [
        ("tls-cert-file", str(certs.server)),
        ("tls-key-file", str(certs.server_key)),
        ("tls-ca-cert-file", str(certs.ca)),
        ("tls-auth-clients", "yes"),
        ("tls-replication", "yes"),  # a replica, and a sentinel, connect over TLS too
    ]


class _TlsOnly(RedisServer):
    """A server (or sentinel) reached over TLS only, with the test's client certificate."""

    certs: Certs
    password: str | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        redis_server._RUNNING.add(self)
        wait_ready(self._answers, "redis-server to start", self)

    def _answers(self) -> bool:
        with self.client() as client:
            return bool(client.ping())

    def client(self, timeout: float = 10) -> redis.Redis:
        return redis.Redis(
            port=self.port,
            password=self.password,
            ssl=True,
            ssl_ca_certs=str(self.certs.ca),
            ssl_certfile=str(self.certs.client),
            ssl_keyfile=str(self.certs.client_key),
            socket_timeout=timeout,
        )


class TlsNode(_TlsOnly):
    """A TLS-only redis-server with a password (``masterauth`` too: after a failover the
    old master follows the new one)."""

    def __init__(self, certs: Certs, *extra: str) -> None:
        self.certs = certs
        self.password = SECRET
        super().__init__(*extra)

    def command(self) -> list[str]:
        args = [self.binary, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")]
        args += ["--save", "", "--appendonly", "no"]
        for name, value in _tls_settings(self.certs):
            args += [f"--{name}", value]
        args += ["--requirepass", SECRET, "--masterauth", SECRET]
        args += ["--repl-diskless-sync-delay", "0"]  # the replica syncs now, not in 5 s
        return [*args, *self.extra]


class TlsSentinel(_TlsOnly):
    """``redis-server <config> --sentinel`` on a TLS port only (its config is its own:
    Sentinel rewrites it)."""

    def __init__(self, certs: Certs, master_port: int, down_after_ms: int) -> None:
        self.certs = certs
        self.master_port = master_port
        self.down_after_ms = down_after_ms
        super().__init__()

    def command(self) -> list[str]:
        config = self.dir / "sentinel.conf"
        if not config.exists():
            settings = "".join(f"{name} {value}\n" for name, value in _tls_settings(self.certs))
            config.write_text(
                f"port 0\ntls-port {self.port}\nbind 127.0.0.1\ndaemonize no\n"
                f"dir {self.dir}\nlogfile {self.dir / 'redis.log'}\n{settings}"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel auth-pass {MASTER_NAME} {SECRET}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            )
        return [self.binary, str(config), "--sentinel"]


class TlsSentinelGroup(SentinelGroup):
    """Master, replica and sentinels, all TLS-only; ready once every sentinel knows the
    replica and the other sentinels (which they learn over TLS)."""

    def __init__(self, certs: Certs, sentinels: int = 2, down_after_ms: int = 1000) -> None:
        self.servers = []
        try:
            self.master = self._add(TlsNode(certs))
            self.replica = self._add(
                TlsNode(certs, "--replicaof", "127.0.0.1", str(self.master.port))
            )
            wait_ready(self._replicating, "the replica to sync over TLS", self.replica)
            self.sentinels = [
                self._add(TlsSentinel(certs, self.master.port, down_after_ms))
                for _ in range(sentinels)
            ]
            for sentinel in self.sentinels:
                wait_ready(lambda s=sentinel: self._knows_all(s), "sentinels to meet", sentinel)
        except BaseException:
            self.close()
            raise

    def tls_url(self, password: str = SECRET, master: str = MASTER_NAME, **settings: Any) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        query = "&".join(f"{k}={v}" for k, v in settings.items())
        return f"rediss+sentinel://:{password}@{hosts}/{master}?{query}"
