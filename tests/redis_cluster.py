"""A real Redis Cluster for tests: redis-server processes on free loopback ports, joined by
hand (CLUSTER ADDSLOTSRANGE, MEET, REPLICATE: no redis-cli needed), always torn down."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from tests.redis_server import RedisServer, free_port

SLOTS = 16384


def _wait(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"test cluster: {what} not reached within {timeout}s")
        time.sleep(0.05)


class ClusterNode(RedisServer):
    """A cluster-enabled redis-server; its cluster bus port is picked free too (not port +
    10000, which may be taken or > 65535)."""

    def __init__(self, node_timeout_ms: int) -> None:
        self.node_timeout_ms = node_timeout_ms
        self.bus = free_port()
        super().__init__()

    def new_ports(self) -> None:
        super().new_ports()
        self.bus = free_port()

    def args(self) -> list[str]:
        return [
            *super().args(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            # a node that lost its master keeps serving the other slots
            "--cluster-require-full-coverage",
            "no",
            "--repl-diskless-sync-delay",
            "0",
            "--cluster-port",
            str(self.bus),
        ]


class RedisCluster:
    """``masters`` masters owning equal slot ranges, each with ``replicas`` replicas.

    ``node_timeout_ms`` is the cluster's failure detection time: short, so an automatic
    failover in a test takes about a second."""

    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> None:
        self.servers: list[ClusterNode] = []
        try:
            for _ in range(masters * (1 + replicas)):
                self.servers.append(ClusterNode(node_timeout_ms))
            self._join(masters, replicas)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        """Seed URL naming every node (any one of them would do)."""
        return "redis://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers[:3])

    def node_id(self, server: RedisServer) -> str:
        with server.client() as c:
            return str(c.execute_command("CLUSTER", "MYID").decode())

    def _join(self, masters: int, replicas: int) -> None:
        heads = self.servers[:masters]
        per = SLOTS // masters
        for i, server in enumerate(heads):
            last = SLOTS - 1 if i == masters - 1 else (i + 1) * per - 1
            with server.client() as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
        with self.servers[0].client() as c:
            for other in self.servers[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", other.port, other.bus)
        total = len(self.servers)

        def everyone_known() -> bool:
            for server in self.servers:
                with server.client() as c:
                    lines = c.execute_command("CLUSTER", "NODES").decode().strip().splitlines()
                if len(lines) != total or any("handshake" in line for line in lines):
                    return False
            return True

        _wait("every node meeting every other", everyone_known)
        for r in range(replicas):
            for i, head in enumerate(heads):
                replica = self.servers[masters + r * masters + i]
                master_id = self.node_id(head)
                with replica.client() as c:
                    c.execute_command("CLUSTER", "REPLICATE", master_id)
        self.wait_healthy()
        if replicas:
            _wait("replicas in sync", lambda: self._replicas_linked(masters * replicas))

    def _replicas_linked(self, expected: int) -> bool:
        linked = 0
        for server in self.alive():
            info = self._info(server, "replication")
            if info.get("role") == "slave" and info.get("master_link_status") == "up":
                linked += 1
        return linked == expected

    def _info(self, server: RedisServer, section: str) -> dict[str, str]:
        with server.client() as c:
            return {k: str(v) for k, v in c.info(section).items()}

    def alive(self) -> list[RedisServer]:
        return [s for s in self.servers if s.proc is not None and s.proc.poll() is None]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every live node says cluster_state:ok and all agree on who owns every slot."""

        def healthy() -> bool:
            maps = set()
            for server in self.alive():
                if self._info(server, "cluster").get("cluster_enabled") != "1":
                    return False
                with server.client() as c:
                    if b"cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
                        return False
                    maps.add(self._owners(c))
            return (
                len(maps) == 1
                and sum(end - start + 1 for start, end, _ in next(iter(maps))) == SLOTS
            )

        _wait("a healthy cluster", healthy, timeout)

    @staticmethod
    def _owners(client: redis.Redis) -> tuple[tuple[int, int, int], ...]:
        raw = client.execute_command("CLUSTER", "SLOTS")
        return tuple(sorted((int(e[0]), int(e[1]), int(e[2][1])) for e in raw))

    def master_of(self, slot: int) -> RedisServer:
        with self.alive()[0].client() as c:
            for start, end, port in self._owners(c):
                if start <= slot <= end:
                    return next(s for s in self.servers if s.port == port)
        raise LookupError(slot)

    def masters(self) -> list[RedisServer]:
        return [s for s in self.alive() if self._info(s, "replication").get("role") == "master"]

    def replica_of(self, master: RedisServer) -> RedisServer:
        master_id = self.node_id(master)
        for server in self.alive():
            with server.client() as c:
                mine = c.execute_command("CLUSTER", "MYID").decode()
                for line in c.execute_command("CLUSTER", "NODES").decode().splitlines():
                    fields = line.split()
                    if fields[0] == mine and fields[3] == master_id:
                        return server
        raise LookupError("no replica")

    def close(self) -> None:
        for server in self.servers:
            server.close()
        self.servers.clear()
