"""A Sentinel-managed Redis for tests: one master, one replica and three sentinels
(``redis-server --sentinel``), each on a free loopback port, always stopped."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from tests.redis_server import RedisServer

MASTER_NAME = "mymaster"


class SentinelServer(RedisServer):
    """``redis-server <config> --sentinel`` watching one master (the config file is its own:
    Sentinel rewrites it)."""

    def __init__(self, master_port: int, down_after_ms: int) -> None:
        self.master_port = master_port
        self.down_after_ms = down_after_ms
        super().__init__()

    def args(self) -> list[str]:
        config = self.dir / "sentinel.conf"
        if not config.exists():
            config.write_text(
                f"port {self.port}\n"
                "bind 127.0.0.1\n"
                "daemonize no\n"
                f"dir {self.dir}\n"
                f"logfile {self.dir / 'redis.log'}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
        return [self.binary, str(config), "--sentinel"]


class SentinelGroup:
    """Master, replica and sentinels, ready once every sentinel knows the replica and the
    other sentinels (a failover needs both)."""

    def __init__(self, sentinels: int = 3, down_after_ms: int = 1000) -> None:
        self.servers: list[RedisServer] = []
        try:
            fast = ("--repl-diskless-sync-delay", "0")  # a replica syncs now, not in 5 s
            self.master = self._add(RedisServer(*fast))
            self.replica = self._add(
                RedisServer(*fast, "--replicaof", "127.0.0.1", str(self.master.port))
            )
            wait_ready(self._replicating, "the replica to sync", self.replica)
            self.sentinels = [
                self._add(SentinelServer(self.master.port, down_after_ms)) for _ in range(sentinels)
            ]
            for sentinel in self.sentinels:
                wait_ready(lambda s=sentinel: self._knows_all(s), "sentinels to meet", sentinel)
        except BaseException:
            self.close()
            raise

    def _add(self, server: RedisServer) -> RedisServer:
        self.servers.append(server)
        return server

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}"

    def master_port(self) -> int:
        """The master's port as the first sentinel that answers sees it."""
        for sentinel in self.sentinels:
            if sentinel.proc is None:
                continue
            try:
                with sentinel.client() as client:
                    host_port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            except (redis.exceptions.ConnectionError, OSError):
                continue
            if host_port:
                return int(host_port[1])
        raise RuntimeError("no sentinel answered")

    def server(self, port: int) -> RedisServer:
        return self.master if self.master.port == port else self.replica

    def replica_of(self, port: int) -> RedisServer:
        return self.replica if self.master.port == port else self.master

    def wait_healthy(self) -> None:
        """Until the replica follows the current master and every sentinel sees both
        well (after a failover, before the next one)."""
        wait_ready(self._healthy, "the group to settle", self.sentinels[0])

    def _healthy(self) -> bool:
        port = self.master_port()
        replica = self.replica_of(port)
        if replica.proc is None:
            raise RuntimeError("the replica is gone (killed by an earlier test)")
        with replica.client() as client:
            info = client.info("replication")
        if info.get("master_port") != port or info.get("master_link_status") != "up":
            return False
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                master = _fields(client.execute_command("SENTINEL", "MASTER", MASTER_NAME))
                replicas = client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
            seen = [_fields(r) for r in replicas]
            if master.get("flags") != "master" or [r.get("flags") for r in seen] != ["slave"]:
                return False
            if seen[0].get("port") != str(replica.port):
                return False
        return True

    def _replicating(self) -> bool:
        with self.replica.client() as client:
            info = client.info("replication")
        return info.get("master_link_status") == "up"

    def _knows_all(self, sentinel: RedisServer) -> bool:
        with sentinel.client() as client:
            replicas = client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
            others = client.execute_command("SENTINEL", "SENTINELS", MASTER_NAME)
        return len(replicas) == 1 and len(others) == len(self.sentinels) - 1

    def close(self) -> None:
        for server in reversed(self.servers):
            server.close()


def _fields(reply: object) -> dict[str, str]:
    """A Sentinel reply as a dict (a flat list of names and values, or already a dict)."""
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    flat = [_text(x) for x in reply]  # type: ignore[attr-defined]
    return dict(zip(flat[::2], flat[1::2], strict=False))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def wait_ready(ready: Callable[[], object], what: str, server: RedisServer) -> None:
    """Poll ``ready`` until true (a group starting up); a server that exits fails at once."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if ready():
                return
        except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError, OSError):
            if server.proc is not None and server.proc.poll() is not None:
                raise RuntimeError(f"{what}: server exited: {server.log_tail()}") from None
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}: {server.log_tail()}")
        time.sleep(0.05)
