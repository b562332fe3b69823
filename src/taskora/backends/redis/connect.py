"""Opening one connection to Redis.

Every connection taskora makes (commands, blocking waits, pub/sub) is opened by
:func:`open_transport`, so TLS, the connect timeout, Sentinel and the wording of connect
errors live in one place. With a Sentinel address each new connection asks the sentinels
where the master is *now*: a connection lost in a failover reconnects to the new master by
itself, and so does one that finds it is talking to a replica (``ROLE`` in the handshake,
``READONLY`` replies; see resp.py).

A failure that retrying cannot mend (a certificate that does not verify, a client certificate
the server refuses, a master name no sentinel knows) is a :class:`PermanentError`: callers
that retry lost connections raise it at once instead.
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

__all__ = [
    "PermanentError",
    "check_master",
    "dropped",
    "find_master",
    "handshake",
    "open_transport",
    "peer_of",
    "request",
]

P = TypeVar("P", bound=asyncio.BaseProtocol)
Command = tuple[str | int, ...]
# hiredis packs a command into RESP in C; its stub types are too narrow.
_pack = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)


class PermanentError(ConnectionError):
    """A connect failure that the same settings will meet again: not worth a retry."""


# SSLError subclasses for a connection cut short (a server restarting mid-handshake), which a
# retry can mend; any other SSLError is a verdict: a certificate or an alert.
_CUT_SHORT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError, ssl.SSLWantReadError)


def _tls_verdict(exc: BaseException | None) -> bool:
    return (
        isinstance(exc, ssl.SSLError)
        and not isinstance(exc, _CUT_SHORT)
        and "EOF" not in str(exc.reason or "")
    )


def _tls_error(exc: ssl.SSLError, where: str) -> ConnectionError:
    """The error for a failed TLS handshake, in words; permanent unless it was cut short."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentError(
            f"TLS: the certificate of {where} does not verify ({exc.verify_message}); "
            "ssl_ca_certs must name the CA that signed it"
        )
    reason = str(exc.reason or exc)
    text = reason.lower().replace("_", " ")
    if not _tls_verdict(exc):
        return ConnectionError(f"TLS handshake with {where} was cut short ({text})")
    if "CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
        # TLS 1.3 reports a refused client certificate after the handshake (see dropped())
        return PermanentError(
            f"TLS: {where} refused the client certificate ({text}); ssl_certfile and "
            "ssl_keyfile must name one signed by a CA the server trusts"
        )
    return PermanentError(f"TLS handshake with {where} failed ({text})")


def dropped(exc: Exception | None, peer: str) -> ConnectionError:
    """The error for a connection to ``peer`` (see :func:`peer_of`) that ended. With TLS 1.3
    a server that refuses the client certificate says so by an alert after the handshake, in
    place of the first reply: that is permanent too."""
    if exc is None:
        return ConnectionError(f"{peer} closed the connection")
    if isinstance(exc, ssl.SSLError) and _tls_verdict(exc):
        return _tls_error(exc, peer)
    return ConnectionError(f"connection lost: {exc}")


def peer_of(transport: asyncio.BaseTransport) -> str:
    """``host:port`` of the server (read at connection_made: a TLS transport forgets it once
    the connection is lost)."""
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "the server"


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
        raise PermanentError(f"TLS settings for {where}: {exc}") from None
    try:
        if address.path:
            coro = loop.create_unix_connection(protocol_factory, address.path)
        else:
            coro = loop.create_connection(protocol_factory, address.host, address.port, ssl=context)
        transport, protocol = await asyncio.wait_for(coro, timeout)
    except ssl.SSLError as exc:
        raise _tls_error(exc, where) from None
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
        text = kind.decode() if isinstance(kind, bytes) else repr(kind)
        raise ConnectionError(
            f"{peer_of(transport)}, named by Sentinel as master {address.master_name!r}, "
            f"is a {text} (a failover is under way)"
        )


SENTINEL_TIMEOUT = 2.0


async def find_master(address: Address, timeout: float) -> Address:
    """Ask the sentinels in turn where the master is; the first that knows wins. Each gets
    at most ``SENTINEL_TIMEOUT`` s, so a silent one does not hold up the others for long.

    When every sentinel answered (none knows the name, or refused the query) or refused us
    for good (TLS, login), the error is a :class:`PermanentError`; one that could not be
    reached might know the name once it is back, so then it is not."""
    timeout = min(timeout, SENTINEL_TIMEOUT)
    problems: list[str] = []
    permanent = True
    for host, port in address.sentinels:
        sentinel = address.sentinel(host, port)
        try:
            (reply,) = await request(
                sentinel, [("SENTINEL", "get-master-addr-by-name", address.master_name)], timeout
            )
        except ConnectionError as exc:
            problems.append(str(exc))
            permanent = permanent and isinstance(exc, PermanentError)
            continue
        if isinstance(reply, Exception):
            problems.append(f"sentinel {sentinel.server()} answered: {reply}")
        elif not reply:
            problems.append(f"sentinel {sentinel.server()} does not know it")
        else:
            return address.at(reply[0].decode(), int(reply[1]))
    error = PermanentError if permanent else ConnectionError
    raise error(f"no sentinel named the master {address.master_name!r}: {'; '.join(problems)}")


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
            raise PermanentError(f"{address.server()} refused the login: {reply}")
    return replies[len(setup) :]


class _Exchange(asyncio.Protocol):
    """Collects a known number of replies."""

    def __init__(self, count: int) -> None:
        self._reader = hiredis.Reader()
        self._peer = "the server"
        self._count = count
        self._got: list[Any] = []
        self.replies: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            self._got.append(reply)
            if len(self._got) == self._count and not self.replies.done():
                self.replies.set_result(self._got)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._peer = peer_of(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.replies.done():
            self.replies.set_exception(dropped(exc, self._peer))
