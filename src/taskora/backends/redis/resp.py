"""A small, fast Redis client for taskora's own commands.

One connection serves any number of concurrent callers: each command is written the moment
it is issued and replies are matched in order, so concurrent commands pipeline by
themselves (as ioredis does) and no connection pool is needed. Commands are packed and
replies parsed by hiredis, in C. On the hot paths this costs a few microseconds per command
instead of the tens that a general-purpose client spends.

Blocking commands (BZPOPMIN, XREAD BLOCK) get a client of their own, so they never hold up
the others. A lost connection fails the commands in flight with ``ConnectionError``; the
next command reconnects (with a few retries and backoff), re-authenticating and re-selecting
the database. Connections are opened by connect.py (TLS, Sentinel, connect errors).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import hiredis

from .address import Address, parse_address, ssl_context
from .connect import PermanentError, check_master, dropped, handshake, open_transport, peer_of

__all__ = ["Address", "Packed", "ReplyError", "RespClient", "parse_address", "ssl_context"]

Arg = str | bytes | int | float
# hiredis packs a command (a tuple of arguments) into RESP in C; its stub types are too narrow.
_pack = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)


class Packed:
    """A command whose leading arguments never change (a script's SHA and keys), packed
    once: ``pack(rest)`` packs only the rest, the same bytes as packing it all."""

    __slots__ = ("_count", "_head")

    def __init__(self, head: Sequence[Arg]) -> None:
        packed = _pack(tuple(head))
        self._head = packed[packed.index(b"\n") + 1 :]  # without the "*<count>" header
        self._count = len(head)

    def pack(self, rest: Sequence[Arg]) -> bytes:
        tail = _pack(tuple(rest))
        header = b"*%d\r\n" % (self._count + len(rest))
        return b"".join((header, self._head, tail[tail.index(b"\n") + 1 :]))


class ReplyError(Exception):
    """An error reply from Redis (``-ERR ...``, ``-NOSCRIPT ...``, ``-WRONGTYPE ...``)."""

    @property
    def code(self) -> str:
        return str(self).split(" ", 1)[0]


# Replies that mean the server is no longer the master (demoted in a failover): the
# connection is dropped, so every command reconnects (through Sentinel, to the new master).
# Nothing was written: a replica refuses a write before making it.
_NOT_MASTER = frozenset(("READONLY", "UNBLOCKED"))


def _is_replica(reply: Any) -> bool:
    """A ``ROLE`` reply of anything but a master (the handshake asks it behind Sentinel;
    a master's is a 3-item list, which the subscriber ignores)."""
    return isinstance(reply, list) and bool(reply) and reply[0] in (b"slave", b"sentinel")


class _Call:
    """A reply slot that hands the reply (or the error) to ``fn`` right from the reader: no
    Future, no callback scheduled, no extra turn of the loop. ``fn`` should not raise; if it
    does, the error goes to the loop's exception handler, never into the reader."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], None]) -> None:
        self.fn = fn

    def done(self) -> bool:
        return False

    def set_result(self, result: Any, /) -> None:
        try:
            self.fn(result)
        except Exception as exc:
            _report(exc)

    def set_exception(self, exception: BaseException, /) -> None:
        try:
            self.fn(exception)
        except Exception as exc:
            _report(exc)


def _report(exc: Exception) -> None:
    asyncio.get_running_loop().call_exception_handler(
        {"message": "taskora: a reply callback failed", "exception": exc}
    )


class _Protocol(asyncio.Protocol):
    __slots__ = ("_lost", "_peer", "_pending", "_reader", "_transport", "received")

    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=ReplyError)
        # replies are matched in order to these: futures, or _Call slots (send_call)
        self._pending: collections.deque[asyncio.Future[Any] | _Call] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._lost: BaseException | None = None
        self._peer = "the server"
        self.received = 0

    @property
    def closed(self) -> bool:
        return self._lost is not None or self._transport is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._peer = peer_of(transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if not pending:  # a reply nobody asked for: the stream is out of sync
                self._fail(ConnectionError("unexpected reply from Redis"))
                return
            future = pending.popleft()
            self.received += 1
            if future.done():
                continue
            if isinstance(reply, ReplyError):
                if reply.code in _NOT_MASTER:
                    future.set_exception(ConnectionError(str(reply)))
                    self._fail(ConnectionError(f"the server became a replica: {reply}"))
                    return
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(dropped(exc, self._peer))

    def _fail(self, error: ConnectionError) -> None:
        if self._lost is None:
            self._lost = error
        if self._transport is not None:
            self._transport.close()
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(type(error)(str(error)))

    def send_many(self, packed: list[bytes]) -> list[asyncio.Future[Any]]:
        """Queue several commands and write them with one syscall."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in packed]
        if self._lost is not None or self._transport is None:
            for future in futures:
                future.set_exception(ConnectionError(str(self._lost or "not connected")))
            return futures
        self._pending.extend(futures)
        self._transport.write(b"".join(packed))
        return futures

    def send_call(self, packed: bytes, fn: Callable[[Any], None]) -> bool:
        """Write a command whose reply goes to ``fn`` (see _Call); False when not connected."""
        if self._lost is not None or self._transport is None:
            return False
        self._pending.append(_Call(fn))
        self._transport.write(packed)
        return True

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._lost is not None or self._transport is None:
            future.set_exception(ConnectionError(str(self._lost or "not connected")))
            return future
        self._pending.append(future)
        self._transport.write(packed)
        return future

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def abort(self, reason: str) -> None:
        self._fail(ConnectionError(reason))


class RespClient:
    """A lazily (re)connecting, self-pipelining connection to one Redis server."""

    def __init__(
        self,
        address: Address,
        name: str = "",
        *,
        retries: int = 3,
        connect_timeout: float = 5.0,
        reply_timeout: float | None = 30.0,
    ) -> None:
        self.address = address
        self.name = name
        self.retries = retries
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._last_progress = 0.0
        self._closed = False
        self.round_trips = 0  # calls of execute() and pipeline(): what the hot paths cost
        # taskora's scripts run as the Functions library on this server (FCALL), not EVALSHA:
        # set by the backend when it loaded the library (scripts.py)
        self.functions = False

    def __repr__(self) -> str:
        return f"RespClient({self.address.describe()!r}, name={self.name!r})"

    # -- commands -------------------------------------------------------------------------
    async def execute(self, *args: Arg) -> Any:
        """Run one command, reconnecting and retrying on a lost connection."""
        self.round_trips += 1
        packed = _pack(args)
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            try:
                return await protocol.send(packed)
            except ConnectionError:
                pass
        return await self._retrying(packed)

    def send_now(self, *args: Arg) -> asyncio.Future[Any] | None:
        """Write the command at once and return the future of its reply, or None when not
        connected (then use ``execute``). No retry: the caller falls back on an error."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            return None
        self.round_trips += 1
        return protocol.send(_pack(args))

    def send_now_call(self, fn: Callable[[Any], None], *args: Arg) -> bool:
        """``send_now`` whose reply (or error: a ReplyError, a ConnectionError) is handed to
        ``fn`` from the connection's reader, with no future and no loop turn in between;
        False when not connected (``fn`` is never called then). ``fn`` must not raise."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            return False
        self.round_trips += 1
        return protocol.send_call(_pack(args), fn)

    def send_packed_call(self, packed: bytes, fn: Callable[[Any], None]) -> bool:
        """``send_now_call`` of a command packed already (``Packed``)."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            return False
        self.round_trips += 1
        return protocol.send_call(packed, fn)

    def send_many_now(self, commands: Sequence[Sequence[Arg]]) -> list[asyncio.Future[Any]] | None:
        """Write several commands in one go; their reply futures, or None when not
        connected. No retry: the caller falls back on an error."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            return None
        self.round_trips += 1
        return protocol.send_many([_pack(tuple(cmd)) for cmd in commands])

    async def _retrying(self, packed: bytes) -> Any:
        return await self._with_retries(lambda protocol: protocol.send(packed))

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send several commands at once; replies (or ReplyError instances) in order."""
        if not commands:
            return []
        self.round_trips += 1
        packed = [_pack(tuple(cmd)) for cmd in commands]

        def send(protocol: _Protocol) -> Awaitable[list[Any]]:
            futures = [protocol.send(p) for p in packed]
            return asyncio.gather(*futures, return_exceptions=True)

        return list(await self._with_retries(send))

    async def _with_retries(self, send: Callable[[_Protocol], Awaitable[Any]]) -> Any:
        """Connect if needed and send; on a lost connection retry with backoff (not when
        the connect failed for good: a certificate, an unknown master name)."""
        delay = 0.05
        for attempt in range(self.retries + 1):
            try:
                return await send(await self._connected())
            except PermanentError:
                raise
            except (TimeoutError, ConnectionError, OSError):
                if attempt == self.retries or self._closed:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    # -- connection -----------------------------------------------------------------------
    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return protocol
        if self._closed:
            raise ConnectionError("client closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        a = self.address
        transport, protocol = await open_transport(a, _Protocol, self.connect_timeout)
        try:
            setup = handshake(a, self.name)
            if a.tls and not setup:
                # TLS 1.3 tells of a refused client certificate only after the handshake:
                # one reply proves the server took us, so that failure is met here
                setup.append(("PING",))
            if setup:
                replies = await asyncio.wait_for(
                    asyncio.gather(
                        *(protocol.send(_pack(cmd)) for cmd in setup), return_exceptions=True
                    ),
                    self.connect_timeout,
                )
                for reply in replies:
                    if isinstance(reply, BaseException):
                        raise reply
                if a.sentinels:
                    check_master(a, replies[-1], transport)
        except BaseException:
            transport.close()
            raise
        self._protocol = protocol
        self._arm_watchdog()
        return protocol

    def _arm_watchdog(self) -> None:
        """Drop a connection whose replies stopped coming (a dead peer without a FIN)."""
        if self.reply_timeout is None or self._watchdog is not None:
            return
        self._last_progress = time.monotonic()
        self._watchdog = asyncio.get_running_loop().call_later(1.0, self._check_progress, -1)

    def _check_progress(self, seen: int) -> None:
        self._watchdog = None
        protocol = self._protocol
        if protocol is None or protocol.closed or self._closed:
            return
        now = time.monotonic()
        if protocol.backlog == 0 or protocol.received != seen:
            self._last_progress = now
        elif self.reply_timeout is not None and now - self._last_progress > self.reply_timeout:
            protocol.abort(f"no reply from Redis for {self.reply_timeout:.0f}s")
            return
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(1.0, self._check_progress, protocol.received)

    def disconnect(self) -> None:
        """Drop the connection now (commands in flight fail); the next command reconnects."""
        if self._protocol is not None:
            self._protocol.abort("disconnected")

    async def close(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
            self._connecting = None
        if self._protocol is not None:
            self._protocol.abort("client closed")
            self._protocol = None


class _SubscriberProtocol(asyncio.Protocol):
    def __init__(self, subscriber: Subscriber) -> None:
        self._reader = hiredis.Reader(replyError=ReplyError)
        self._subscriber = subscriber
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            if isinstance(reply, list) and len(reply) == 3:
                kind = reply[0]
                if kind in (b"message", b"smessage"):
                    self._subscriber.on_message(reply[1].decode(), reply[2])
                elif kind in (b"subscribe", b"ssubscribe"):
                    self._subscriber._confirmed(reply[1].decode())
                elif kind == b"sunsubscribe":  # asked for, or its slot moved (cluster)
                    self._subscriber._dropped(reply[1].decode())
            elif isinstance(reply, ReplyError) or _is_replica(reply):
                # NOPERM, a failed AUTH, or a replica Sentinel named too early: retry later
                if self.transport is not None:
                    self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class Subscriber:
    """A connection in subscribe mode for the channels it is told about. It reconnects and
    re-subscribes by itself; ``on_reconnect`` runs once the channels are subscribed again,
    to tell the owner that messages may have been missed while the connection was down.

    ``sharded``: SSUBSCRIBE, one channel per command (a cluster node takes one slot per
    command); ``on_dropped`` hears of a lost connection and of a channel the server dropped
    (its slot moved), for the cluster layer to re-read where channels live."""

    def __init__(
        self,
        address: Address,
        name: str,
        on_message: Callable[[str, bytes], None],
        on_reconnect: Callable[[], None] | None = None,
        *,
        sharded: bool = False,
        on_dropped: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        self.name = name
        self.on_message = on_message
        self._on_reconnect = on_reconnect
        self._on_dropped = on_dropped
        self._verb = "SSUBSCRIBE" if sharded else "SUBSCRIBE"
        self._unverb = "SUNSUBSCRIBE" if sharded else "UNSUBSCRIBE"
        self._channels: set[str] = set()
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        self._protocol: _SubscriberProtocol | None = None
        self._runner: asyncio.Task[None] | None = None
        self._resubscribing: set[str] = set()

    async def subscribe(self, channel: str) -> None:
        """Subscribe, returning once Redis confirmed it (messages from then on arrive)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(channel, []).append(future)
        self._channels.add(channel)
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"{self.name}-subscriber")
        elif self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.write(_pack((self._verb, channel)))
        await asyncio.wait_for(future, 30)

    def _confirmed(self, channel: str) -> None:
        self._back(channel)
        for future in self._waiting.pop(channel, ()):
            if not future.done():
                future.set_result(None)

    def _back(self, channel: str) -> None:
        if channel in self._resubscribing:
            self._resubscribing.discard(channel)
            if not self._resubscribing and self._on_reconnect is not None:
                self._on_reconnect()  # every channel is back: from here on nothing is missed

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        self._back(channel)
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.write(_pack((self._unverb, channel)))

    def _dropped(self, channel: str | None = None) -> None:
        if (channel is None or channel in self._channels) and self._on_dropped is not None:
            self._on_dropped()

    async def _run(self) -> None:
        delay = 0.05
        a = self.address
        first = True
        while True:
            try:
                transport, protocol = await open_transport(
                    a, lambda: _SubscriberProtocol(self), a.connect_timeout
                )
            except OSError:  # ConnectionError and TimeoutError included
                self._dropped()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            setup: list[tuple[Arg, ...]] = list(handshake(a, self.name, select=False))
            if self._channels and self._verb == "SUBSCRIBE":
                setup.append(("SUBSCRIBE", *sorted(self._channels)))
            elif self._channels:
                setup += [(self._verb, channel) for channel in sorted(self._channels)]
            transport.write(b"".join(_pack(cmd) for cmd in setup))
            self._protocol = protocol
            self._resubscribing = set() if first else set(self._channels)
            first = False
            delay = 0.05
            try:
                await protocol.lost
            finally:
                self._protocol = None
                transport.close()
            self._dropped()
            await asyncio.sleep(delay)

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(BaseException):
                await self._runner
            self._runner = None
        self._protocol = None
        for futures in self._waiting.values():
            for future in futures:
                future.cancel()
        self._waiting.clear()
