"""Opening one connection to Redis.

Every connection taskora makes (commands, blocking waits, pub/sub) is opened by
:func:`open_transport`, so TLS, the connect timeout, Sentinel and the wording of connect
errors live in one place. With a Sentinel address each new connection asks the sentinels
where the master is *now*: a connection lost in a failover reconnects to the new master by
itself, and so does one that finds it is talking to a replica (``ROLE`` in the handshake,
``READONLY`` replies; see resp.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import hiredis

from .address import Address, ssl_context

__all__ = ["check_master", "find_master", "handshake", "open_transport", "request"]

P = TypeVar("P", bound=asyncio.BaseProtocol)
Command = tuple[str | int, ...]
# hiredis packs a command into RESP in C; its stub types are too narrow.
_pack = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)


async def open_transport(
    address: Address, protocol_factory: Callable[[], P], timeout: float
) -> tuple[asyncio.Transport, P]:
    """Connect to the server ``address`` names (for a Sentinel address, the master the
    sentinels name now). Any failure is a ``ConnectionError`` that says where and why."""
    if address.sentinels:
        address = await find_master(address, timeout)
    return await _open(address, protocol_factory, timeout)


async def _open(
    address: Address, protocol_factory: Callable[[], P], timeout: float
) -> tuple[asyncio.Transport, P]:
    loop = asyncio.get_running_loop()
    where = address.server()
    try:
        context = ssl_context(address.tls_options) if address.tls and not address.path else None
    except ValueError as exc:
        raise ConnectionError(f"TLS settings for {where}: {exc}") from None
    try:
        if address.path:
            coro = loop.create_unix_connection(protocol_factory, address.path)
        else:
            coro = loop.create_connection(protocol_factory, address.host, address.port, ssl=context)
        transport, protocol = await asyncio.wait_for(coro, timeout)
    except ssl.SSLCertVerificationError as exc:
        raise ConnectionError(
            f"TLS: the certificate of {where} does not verify ({exc.verify_message}); "
            "ssl_ca_certs must name the CA that signed it"
        ) from None
    except ssl.SSLError as exc:
        raise ConnectionError(f"TLS handshake with {where} failed ({exc.reason or exc})") from None
    except TimeoutError:
        raise ConnectionError(f"no answer from {where} within {timeout:g} s") from None
    except OSError as exc:
        errno = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else None
        reason = os.strerror(errno) if errno else exc.strerror or str(exc) or type(exc).__name__
        raise ConnectionError(f"cannot connect to {where}: {reason}") from None
    sock = transport.get_extra_info("socket")
    if sock is not None and not address.path:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return transport, protocol


def handshake(address: Address, name: str, *, select: bool = True) -> list[Command]:
    """What a new connection sends first: credentials, database, its name, and (behind
    Sentinel) ``ROLE``, whose reply :func:`check_master` checks."""
    setup: list[Command] = []
    if address.password is not None:
        setup.append(
            ("AUTH", address.username, address.password)
            if address.username
            else ("AUTH", address.password)
        )
    if select and address.db:
        setup.append(("SELECT", address.db))
    if name:
        setup.append(("CLIENT", "SETNAME", f"{name}:{os.getpid()}"))
    if address.sentinels:
        setup.append(("ROLE",))
    return setup


def check_master(address: Address, role: Any, transport: asyncio.BaseTransport) -> None:
    """A sentinel may still name the old master for a moment after a failover (or one
    that came back as a replica): refuse that server, so the caller reconnects."""
    kind = role[0] if isinstance(role, list) and role else role
    if kind != b"master":
        peer = transport.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "the server"
        text = kind.decode() if isinstance(kind, bytes) else repr(kind)
        raise ConnectionError(
            f"{where}, named by Sentinel as master {address.master_name!r}, is a {text} "
            "(a failover is under way)"
        )


SENTINEL_TIMEOUT = 2.0


async def find_master(address: Address, timeout: float) -> Address:
    """Ask the sentinels in turn where the master is; the first that knows wins. Each gets
    at most ``SENTINEL_TIMEOUT`` s, so a silent one does not hold up the others for long."""
    timeout = min(timeout, SENTINEL_TIMEOUT)
    problems: list[str] = []
    for host, port in address.sentinels:
        sentinel = address.sentinel(host, port)
        try:
            (reply,) = await request(
                sentinel, [("SENTINEL", "get-master-addr-by-name", address.master_name)], timeout
            )
        except ConnectionError as exc:
            problems.append(str(exc))
            continue
        if isinstance(reply, Exception):
            problems.append(f"sentinel {sentinel.server()} answered: {reply}")
        elif not reply:
            problems.append(f"sentinel {sentinel.server()} does not know it")
        else:
            return address.at(reply[0].decode(), int(reply[1]))
    raise ConnectionError(
        f"no sentinel named the master {address.master_name!r}: {'; '.join(problems)}"
    )


async def request(address: Address, commands: Sequence[Command], timeout: float) -> list[Any]:
    """A short exchange on a connection of its own (asking a sentinel, probing a node):
    the replies to ``commands`` in order, an error reply as an Exception instance."""
    setup = handshake(address, "", select=False)
    count = len(setup) + len(commands)
    transport, protocol = await _open(address, lambda: _Exchange(count), timeout)
    try:
        transport.write(b"".join(_pack(cmd) for cmd in (*setup, *commands)))
        try:
            replies = await asyncio.wait_for(protocol.replies, timeout)
        except TimeoutError:
            raise ConnectionError(
                f"no answer from {address.server()} within {timeout:g} s"
            ) from None
    finally:
        transport.close()
    for reply in replies[: len(setup)]:
        if isinstance(reply, Exception):
            raise ConnectionError(f"{address.server()} refused the login: {reply}")
    return replies[len(setup) :]


class _Exchange(asyncio.Protocol):
    """Collects a known number of replies."""

    def __init__(self, count: int) -> None:
        self._reader = hiredis.Reader()
        self._count = count
        self._got: list[Any] = []
        self.replies: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            self._got.append(reply)
            if len(self._got) == self._count and not self.replies.done():
                self.replies.set_result(self._got)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.replies.done():
            self.replies.set_exception(ConnectionError("the server closed the connection"))
