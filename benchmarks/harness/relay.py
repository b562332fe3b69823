"""The round trip's floor: the least a dispatch -> worker -> result trip can cost on this machine.

Two processes relay one message at a time through redis-server, the hops every round trip of a
Redis job queue makes, with nothing else: the producer writes ``LPUSH q`` and ``BLPOP r`` in one
write and waits; the worker, blocked in ``BLPOP q``, answers with ``LPUSH r`` and its next
``BLPOP q`` in one write. Four one-way hops and three processes' wake-ups per trip, blocking
sockets, no event loop, replies counted rather than parsed: what any queue's sequential round trip
is read against (``round trip`` workloads, "fraction of the floor" in the report). Standard
library only; prints one ``@@RESULT@@ <json>`` line from the producer.

    python -m harness.relay producer|worker PORT N [WARMUP]
"""

from __future__ import annotations

import json
import socket
import sys
import time

QUEUE, REPLY = b"relay:q", b"relay:r"


def _command(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


LPUSH_Q = _command(b"LPUSH", QUEUE, b"x")
LPUSH_R = _command(b"LPUSH", REPLY, b"x")
BLPOP_Q = _command(b"BLPOP", QUEUE, b"0")
BLPOP_R = _command(b"BLPOP", REPLY, b"0")
# An LPUSH reply is one line (":1"); a BLPOP reply five ("*2", "$7", key, "$1", "x").
LINES_PER_TRIP = 6


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _await_lines(sock: socket.socket, need: int) -> None:
    seen = 0
    while seen < need:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis-server closed the connection")
        seen += chunk.count(b"\r\n")


def worker(port: int, trips: int) -> None:
    sock = _connect(port)
    sock.sendall(BLPOP_Q)
    _await_lines(sock, LINES_PER_TRIP - 1)
    for _ in range(trips - 1):
        sock.sendall(LPUSH_R + BLPOP_Q)
        _await_lines(sock, LINES_PER_TRIP)
    sock.sendall(LPUSH_R)
    _await_lines(sock, 1)
    sock.close()


def producer(port: int, n: int, warmup: int) -> dict[str, float]:
    sock = _connect(port)
    for _ in range(warmup):
        sock.sendall(LPUSH_Q + BLPOP_R)
        _await_lines(sock, LINES_PER_TRIP)
    latencies = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        sock.sendall(LPUSH_Q + BLPOP_R)
        _await_lines(sock, LINES_PER_TRIP)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    sock.close()
    latencies.sort()
    return {"relay": n / elapsed, "relay_p50_ms": 1000 * latencies[len(latencies) // 2]}


if __name__ == "__main__":
    role, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    warmup = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    if role == "worker":
        worker(port, n)
    else:
        print("@@RESULT@@ " + json.dumps(producer(port, n, warmup)), flush=True)
