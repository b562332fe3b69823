"""Redis Cluster: find the cluster at connect, route every command by its key's slot
(docs/design.md#redis-cluster).

The routing sits above resp.py: a ``ClusterClient`` is a ``RespClient`` whose commands go,
each over a self-pipelining connection of its own per node, to the master that owns the slot
of the command's key. Every key of a task shares the hash tag ``{task}`` (decision 11), so
every script and every pipeline of one task lands on one node in one write, as on a single
Redis: the hot paths cost the same round trips. A ``MOVED`` reply updates the slot map (and
re-reads it in the background); an ``ASK`` reply (a slot being migrated) sends that one command
to the importing node after ``ASKING``; a lost node re-reads the map until its replica took
over (at most ``FAILOVER_PATIENCE_S``).

Results and cancellations use sharded pub/sub: in cluster mode every script runs a variant of
itself that says ``SPUBLISH`` where it says ``PUBLISH`` (the same text otherwise, loaded under
its own SHA), and ``ClusterSubscriber`` holds one ``SSUBSCRIBE`` connection per node that
owns a watched channel. A message then crosses no cluster bus: it scales with the masters.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ...errors import BackendError
from .connect import PermanentError
from .resp import Address, Arg, ReplyError, RespClient, Subscriber, parse_address
from .scripts import LIBRARY, LIBRARY_BODY, SCRIPTS, library

if TYPE_CHECKING:
    from ..base import Deliver
    from .backend import RedisBackend
    from .events_reader import EventsReader

__all__ = [
    "ClusterClient",
    "ClusterEvents",
    "ClusterSubscriber",
    "Topology",
    "describe_seeds",
    "discover",
    "key_slot",
    "masters",
    "split_seeds",
]

SLOTS = 16384
MAX_REDIRECTS = 16
FAILOVER_PATIENCE_S = 15.0  # how long a command waits for a lost master's replica to take over
_IO = (ConnectionError, OSError, asyncio.TimeoutError)
_WAIT_CODES = ("TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN")
Node = tuple[str, int]


# -- slots --------------------------------------------------------------------------------
def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc16_table()


@lru_cache(maxsize=65536)
def _slot_of_tag(tag: bytes) -> int:
    crc = 0
    for byte in tag:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc % SLOTS


def key_slot(key: str | bytes) -> int:
    """The cluster slot of a key: CRC16 of its hash tag (the first ``{...}``, if not empty)."""
    raw = key.encode() if isinstance(key, str) else key
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return _slot_of_tag(raw)


# Commands with no key: sent to any master; SCRIPT and FUNCTION are sent to every master.
_EVERY_MASTER = ("SCRIPT", "FUNCTION")
_KEYLESS = frozenset(
    {"TIME", "CONFIG", "INFO", "PING", "CLUSTER", "CLIENT", "SCAN", "ECHO", "DBSIZE"}
    | set(_EVERY_MASTER)
)


def command_slot(args: Sequence[Arg]) -> int | None:
    """The slot of the command's (first) key, None for a command without one."""
    name = str(args[0]).upper()
    if name in _KEYLESS or len(args) < 2:
        return None
    if name in ("EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL", "FCALL_RO"):
        return key_slot(_text(args[3])) if int(args[2]) > 0 else None
    if name in ("XREAD", "XREADGROUP"):
        upper = [str(a).upper() if isinstance(a, str) else "" for a in args]
        return key_slot(_text(args[upper.index("STREAMS") + 1]))
    return key_slot(_text(args[1]))


def _text(value: Arg) -> str | bytes:
    return value if isinstance(value, str | bytes) else str(value)


# -- sharded script variants ----------------------------------------------------------------------
_PUBLISH = re.compile(r"redis\.call\('PUBLISH',")


def _sharded(source: str) -> str:
    return _PUBLISH.sub("redis.call('SPUBLISH',", source)


# plain SHA -> (sharded SHA, sharded source): the variant a cluster runs instead
SHARDED: dict[str, tuple[str, str]] = {}
for _script in SCRIPTS.values():
    _source = _sharded(_script.source)
    SHARDED[_script.sha] = (hashlib.sha1(_source.encode()).hexdigest(), _source)
_BY_SOURCE = {script.source: SHARDED[script.sha][1] for script in SCRIPTS.values()}
# the Functions library's variant (its own name, so its own function names)
SHARDED_LIBRARY = library(_sharded(LIBRARY_BODY))
_BY_SOURCE[LIBRARY.code] = SHARDED_LIBRARY.code
# plain function name -> sharded function name
SHARDED_FUNCTIONS = {
    LIBRARY.functions[name]: SHARDED_LIBRARY.functions[name] for name in LIBRARY.functions
}


def sharded_command(args: Sequence[Arg]) -> tuple[Arg, ...]:
    """The command a cluster runs: a script's sharded variant in place of the plain one."""
    name = args[0]
    if name == "FCALL":
        function = SHARDED_FUNCTIONS.get(str(args[1]))
        if function is not None:
            return ("FCALL", function, *args[2:])
    elif name == "EVALSHA":
        variant = SHARDED.get(str(args[1]))
        if variant is not None:
            return ("EVALSHA", variant[0], *args[2:])
    elif name in _EVERY_MASTER and len(args) == 3 and str(args[1]).upper() == "LOAD":
        return (name, "LOAD", _BY_SOURCE.get(str(args[2]), args[2]))
    return tuple(args)


# -- seeds --------------------------------------------------------------------------------
def split_seeds(url: str) -> list[str]:
    """``redis://[auth@]h1:7000,h2:7001/0?q`` -> one URL per node, each with the same auth,
    database and query (a URL naming one node is returned as it is)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.endswith("+sentinel"):  # a sentinel URL lists sentinels, not seeds
        return [url]
    hosts, slash, tail = rest.partition("/")
    query = ""
    if not slash:
        hosts, qmark, query_text = hosts.partition("?")
        query = qmark + query_text
    auth, at, netloc = hosts.rpartition("@")
    if "," not in netloc:
        return [url]
    prefix = f"{scheme}://{auth}{at}"
    suffix = f"/{tail}" if slash else query
    return [prefix + node.strip() + suffix for node in netloc.split(",") if node.strip()]


def describe_seeds(seeds: Sequence[Address]) -> str:
    """The seed list as a URL, without any password."""
    if len(seeds) == 1:
        return seeds[0].describe()
    first = seeds[0]
    scheme = "rediss" if first.tls else "redis"
    user = f"{first.username}@" if first.username else ""
    nodes = ",".join(f"{s.host}:{s.port}" for s in seeds)
    return f"{scheme}://{user}{nodes}/{first.db}"


def _node(address: Address) -> Node:
    return (address.host, address.port)


def _at(seed: Address, host: str, port: int) -> Address:
    return dataclasses.replace(seed, host=host, port=port)


# -- the slot map --------------------------------------------------------------------------------
class Topology:
    """Who owns each slot, shared by every routed client and subscriber of one backend."""

    def __init__(self, seeds: Sequence[Address], url: str) -> None:
        self.seeds = list(seeds)
        self.url = url
        self._owner: list[Node] = []
        self._addresses: dict[Node, Address] = {}
        self.masters: list[Node] = []
        self._refreshing: asyncio.Future[None] | None = None
        self._listeners: list[Callable[[], None]] = []
        self.refreshes = 0
        self.replies: dict[str, int] = {}  # MOVED / ASK / TRYAGAIN ... seen (tests, benchmarks)

    def load(self, reply: Any, asked: Address) -> None:
        """Read a ``CLUSTER SLOTS`` reply: [[start, end, [host, port, id], replicas...]...]."""
        owner: list[Node | None] = [None] * SLOTS
        addresses: dict[Node, Address] = {}
        masters: list[Node] = []
        for entry in reply:
            host_raw, port = entry[2][0], int(entry[2][1])
            host = host_raw.decode() if isinstance(host_raw, bytes) else str(host_raw)
            node = (host or asked.host, port)  # an empty host: the node we asked
            addresses.setdefault(node, _at(asked, *node))
            if node not in masters:
                masters.append(node)
            for slot in range(int(entry[0]), int(entry[1]) + 1):
                owner[slot] = node
        fallback = masters[0] if masters else _node(asked)
        addresses.setdefault(fallback, _at(asked, *fallback))
        changed = self._owner != owner
        self._owner = [node or fallback for node in owner]
        self._addresses = addresses
        self.masters = masters or [fallback]
        if changed:
            for listener in list(self._listeners):
                listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def owner(self, slot: int | None) -> Node:
        return self.masters[0] if slot is None else self._owner[slot]

    def address(self, node: Node) -> Address:
        return self._addresses.get(node) or _at(self.seeds[0], *node)

    def moved(self, slot: int, target: Node) -> None:
        """A MOVED reply: this slot is served elsewhere now; re-read the whole map soon."""
        self._owner[slot] = target
        self._addresses.setdefault(target, _at(self.seeds[0], *target))
        self.refresh_soon()

    def refresh_soon(self) -> None:
        if self._refreshing is None:
            task = asyncio.ensure_future(self.refresh())
            task.add_done_callback(_retrieved)

    async def refresh(self) -> None:
        """Re-read the slot map from the first node that answers (one read at a time)."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        self._refreshing = asyncio.get_running_loop().create_future()
        try:
            candidates = [self.address(n) for n in self.masters]
            candidates += [s for s in self.seeds if _node(s) not in self.masters]
            for address in candidates:
                client = RespClient(address, retries=0, connect_timeout=1.0)
                try:
                    reply = await client.execute("CLUSTER", "SLOTS")
                except (ReplyError, *_IO):
                    continue
                finally:
                    await client.close()
                if reply:
                    self.load(reply, address)
                    self.refreshes += 1
                    return
        finally:
            self._refreshing.set_result(None)
            self._refreshing = None


async def discover(seeds: Sequence[Address], url: str) -> Topology | None:
    """Ask every seed what it is: the slot map of its cluster, or None on a plain Redis.

    One clear ``BackendError`` when no seed answers, when the seeds disagree (nodes of two
    clusters, or a cluster node beside a plain Redis), or when a cluster URL names a database
    other than 0. The URL in it never shows a password."""
    answers: list[tuple[Address, Any, Any]] = []
    failures: list[str] = []
    for seed in seeds:
        client = RespClient(seed, connect_timeout=seed.connect_timeout)
        try:
            my_id, slots = await client.pipeline([("CLUSTER", "MYID"), ("CLUSTER", "SLOTS")])
        except (ReplyError, *_IO) as exc:
            failures.append(f"{seed.host}:{seed.port}: {str(exc) or type(exc).__name__}")
            continue
        finally:
            await client.close()
        answers.append((seed, my_id, slots))
    if not answers:
        if len(seeds) == 1:
            raise BackendError(f"Redis at {url}: {failures[0].split(': ', 1)[1]}")
        raise BackendError(f"Redis at {url}: no seed node answered ({'; '.join(failures)})")
    plain = [a for a, my_id, _ in answers if isinstance(my_id, ReplyError)]
    if plain and len(plain) == len(answers):
        if len(seeds) > 1:
            raise BackendError(
                f"Redis at {url}: several nodes were given but {_where(plain[0])} is not a "
                "cluster node (cluster_enabled is off): give one URL per plain Redis"
            )
        return None
    if plain:
        raise BackendError(
            f"Redis at {url}: the seed nodes disagree: {_where(plain[0])} is a plain Redis, "
            "the others are cluster nodes"
        )
    first, _, slots = answers[0]
    members = {_text_id(node[2]) for entry in slots for node in entry[2:] if len(node) > 2}
    for seed, my_id, _ in answers[1:]:
        if _text_id(my_id) not in members:
            raise BackendError(
                f"Redis at {url}: the seed nodes disagree: {_where(seed)} is not a node of "
                f"the cluster {_where(first)} belongs to"
            )
    if first.db:
        raise BackendError(
            f"Redis at {url}: a Redis Cluster has only database 0, the URL names {first.db}"
        )
    topology = Topology(seeds, url)
    topology.load(slots, first)
    return topology


def _where(address: Address) -> str:
    return f"{address.host}:{address.port}"


def _text_id(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _target(exc: ReplyError) -> Node:
    """``MOVED 3999 127.0.0.1:6381`` / ``ASK ...`` -> (host, port)."""
    where = str(exc).split()[2]
    host, _, port = where.rpartition(":")
    return host, int(port)


# -- routed commands ------------------------------------------------------------------------------
class ClusterClient(RespClient):
    """A ``RespClient`` over a cluster: one self-pipelining connection per node it talks to,
    each command sent to the owner of its key's slot. A role (main, a task's blocking waits,
    the events reader) gets its own ``ClusterClient``, so blocking commands never share a
    connection with the others, as in plain mode."""

    def __init__(
        self,
        topology: Topology,
        name: str = "",
        *,
        connect_timeout: float = 5.0,
        reply_timeout: float | None = 30.0,
    ) -> None:
        super().__init__(
            topology.seeds[0],
            name,
            connect_timeout=connect_timeout,
            reply_timeout=reply_timeout,
        )
        self.topology = topology
        self._nodes: dict[Node, RespClient] = {}

    def __repr__(self) -> str:
        return f"ClusterClient({self.topology.url!r}, name={self.name!r})"

    def node(self, node: Node) -> RespClient:
        conn = self._nodes.get(node)
        if conn is None:
            if self._closed:
                raise ConnectionError("client closed")
            conn = self._nodes[node] = RespClient(
                self.topology.address(node),
                self.name,
                retries=1,  # a node that stays gone is a failover: re-read the map instead
                connect_timeout=self.connect_timeout,
                reply_timeout=self.reply_timeout,
            )
        return conn

    def commands_per_node(self) -> dict[Node, int]:
        return {node: conn.round_trips for node, conn in self._nodes.items()}

    # -- commands ---------------------------------------------------------------------------
    async def execute(self, *args: Arg) -> Any:
        self.round_trips += 1
        command = sharded_command(args)
        if command[0] in _EVERY_MASTER:
            return await self._broadcast(command)
        return await self._run(command_slot(command), command)

    def send_now(self, *args: Arg) -> asyncio.Future[Any] | None:
        """Written at once to the slot's node when connected (None otherwise). No retry: the
        caller's fallback (``execute``) follows a MOVED or ASK reply."""
        command = sharded_command(args)
        conn = self._nodes.get(self.topology.owner(command_slot(command)))
        sent = None if conn is None else conn.send_now(*command)
        if sent is not None:
            self.round_trips += 1
        return sent

    def send_now_call(self, fn: Callable[[Any], None], *args: Arg) -> bool:
        """``send_now`` with the reply handed to ``fn`` (RespClient.send_now_call)."""
        command = sharded_command(args)
        conn = self._nodes.get(self.topology.owner(command_slot(command)))
        if conn is None or not conn.send_now_call(fn, *command):
            return False
        self.round_trips += 1
        return True

    def send_many_now(self, commands: Sequence[Sequence[Arg]]) -> list[asyncio.Future[Any]] | None:
        """Several commands of one slot, in one write (None when they span nodes)."""
        routed = [sharded_command(c) for c in commands]
        owners = {self.topology.owner(command_slot(c)) for c in routed}
        if len(owners) != 1:
            return None
        conn = self._nodes.get(owners.pop())
        sent = None if conn is None else conn.send_many_now(routed)
        if sent is not None:
            self.round_trips += 1
        return sent

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """One pipeline per node, all at once; replies (or ReplyError instances) in order."""
        if not commands:
            return []
        self.round_trips += 1
        routed = [sharded_command(c) for c in commands]
        slots = [command_slot(c) for c in routed]
        out: list[Any] = [None] * len(routed)
        groups: dict[Node, list[int]] = {}
        for i, (command, slot) in enumerate(zip(routed, slots, strict=True)):
            if command[0] in _EVERY_MASTER:
                groups.setdefault(("*", 0), []).append(i)
            else:
                groups.setdefault(self.topology.owner(slot), []).append(i)

        async def run(node: Node, picks: list[int]) -> None:
            if node == ("*", 0):
                for i in picks:
                    out[i] = await self._as_reply(self._broadcast(routed[i]))
                return
            try:
                replies: list[Any] = await self.node(node).pipeline([routed[i] for i in picks])
            except _IO:
                replies = [None] * len(picks)
            for i, reply in zip(picks, replies, strict=True):
                if reply is None or _redirected(reply):  # in order, each on its own now
                    reply = await self._as_reply(self._run(slots[i], routed[i]))
                out[i] = reply

        if len(groups) == 1:
            await run(*groups.popitem())
        else:
            await asyncio.gather(*(run(node, picks) for node, picks in groups.items()))
        return out

    @staticmethod
    async def _as_reply(call: Any) -> Any:
        try:
            return await call
        except ReplyError as exc:
            return exc

    async def _broadcast(self, command: tuple[Arg, ...]) -> Any:
        """SCRIPT LOAD, FUNCTION LOAD: every master gets the script or library (a master
        that cannot be reached now gets it on its first NOSCRIPT or "Function not found");
        the first answer is returned. A master that refuses the library over maxmemory
        fails the load: the caller runs by EVALSHA instead."""
        replies = await asyncio.gather(
            *(self._run_on(node, command) for node in self.topology.masters),
            return_exceptions=True,
        )
        if command[0] == "FUNCTION":
            for reply in replies:
                if isinstance(reply, ReplyError) and reply.code == "OOM":
                    raise reply
        for reply in replies:
            if not isinstance(reply, BaseException):
                return reply
        raise replies[0]

    async def _run_on(self, node: Node, command: tuple[Arg, ...]) -> Any:
        return await self.node(node).execute(*command)

    async def _run(self, slot: int | None, command: tuple[Arg, ...]) -> Any:
        """Send to the slot's owner, following MOVED and ASK, and waiting out a failover."""
        deadline = time.monotonic() + FAILOVER_PATIENCE_S
        delay = 0.05
        asking: Node | None = None
        redirects = 0
        while True:
            node = asking or self.topology.owner(slot)
            try:
                if asking is not None:
                    _, reply = await self.node(node).pipeline([("ASKING",), command])
                    if isinstance(reply, Exception):
                        raise reply
                    return reply
                return await self.node(node).execute(*command)
            except ReplyError as exc:
                code = exc.code
                asking = None
                self.topology.replies[code] = self.topology.replies.get(code, 0) + 1
                if code in ("MOVED", "ASK") and slot is not None:
                    redirects += 1
                    if redirects > MAX_REDIRECTS:
                        raise
                    if code == "MOVED":
                        self.topology.moved(slot, _target(exc))
                    else:
                        asking = _target(exc)
                    continue
                if code not in _WAIT_CODES or time.monotonic() > deadline:
                    raise
            except PermanentError:  # a node's certificate does not verify: no failover mends it
                raise
            except _IO:
                if self._closed or time.monotonic() > deadline:
                    raise
                asking = None
                await self.topology.refresh()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    def disconnect(self) -> None:
        for conn in self._nodes.values():
            conn.disconnect()

    async def close(self) -> None:
        self._closed = True
        nodes, self._nodes = self._nodes, {}
        for conn in nodes.values():
            await conn.close()


def _redirected(reply: Any) -> bool:
    return isinstance(reply, ReplyError) and reply.code in ("MOVED", "ASK", *_WAIT_CODES)


def masters(client: RespClient) -> list[RespClient]:
    """A connection to every master (for SCAN), or the one client of a plain Redis."""
    if isinstance(client, ClusterClient):
        return [client.node(node) for node in client.topology.masters]
    return [client]


# -- sharded pub/sub ------------------------------------------------------------------------------
class ClusterSubscriber(Subscriber):
    """Channels subscribed with ``SSUBSCRIBE`` on the master that owns their slot: one
    subscriber connection per such node. When a node drops a channel (its slot moved) or
    its connection is lost, the map is re-read and channels whose owner changed move there;
    then ``on_reconnect`` tells the owner that messages may have been missed meanwhile."""

    def __init__(
        self,
        topology: Topology,
        name: str,
        on_message: Callable[[str, bytes], None],
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(topology.seeds[0], name, on_message, on_reconnect)
        self.topology = topology
        self._nodes: dict[Node, Subscriber] = {}
        self._where: dict[str, Node] = {}
        self._placing: asyncio.Task[None] | None = None
        self._closed = False
        topology.on_change(self._replace_soon)

    def _sub(self, node: Node) -> Subscriber:
        sub = self._nodes.get(node)
        if sub is None:
            sub = self._nodes[node] = Subscriber(
                self.topology.address(node),
                self.name,
                self.on_message,
                self._on_reconnect,
                sharded=True,
                on_dropped=self._node_dropped,
            )
        return sub

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        slot = key_slot(channel)
        deadline = time.monotonic() + FAILOVER_PATIENCE_S
        while True:
            node = self.topology.owner(slot)
            self._where[channel] = node
            try:
                await asyncio.wait_for(self._sub(node).subscribe(channel), 3.0)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
                await self.topology.refresh()
                if self.topology.owner(slot) != node:
                    await self._nodes[node].unsubscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        node = self._where.pop(channel, None)
        if node is not None and node in self._nodes:
            await self._nodes[node].unsubscribe(channel)

    def _node_dropped(self) -> None:
        """A node dropped a channel or its connection: find out where the channels are now."""
        if self._closed:
            return
        self.topology.refresh_soon()

    def _replace_soon(self) -> None:
        if self._closed or (self._placing is not None and not self._placing.done()):
            return
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to move
            self._placing = asyncio.get_running_loop().create_task(self._replace())

    async def _replace(self) -> None:
        """The map changed: move every channel whose slot has a new owner, then drop
        subscriber connections that serve nothing (a node gone for good)."""
        moved = False
        for channel, node in list(self._where.items()):
            owner = self.topology.owner(key_slot(channel))
            if owner == node:
                continue
            moved = True
            with contextlib.suppress(*_IO):
                await self._nodes[node].unsubscribe(channel)
            with contextlib.suppress(*_IO, asyncio.TimeoutError):
                await self.subscribe(channel)
        in_use = set(self._where.values())
        for node in list(self._nodes):
            if node not in in_use:
                await self._nodes.pop(node).close()
        if moved and self._on_reconnect is not None:
            self._on_reconnect()

    async def close(self) -> None:
        self._closed = True
        if self._placing is not None:
            self._placing.cancel()
            with contextlib.suppress(BaseException):
                await self._placing
        nodes, self._nodes = self._nodes, {}
        for sub in nodes.values():
            await sub.close()
        self._where.clear()


# -- events --------------------------------------------------------------------------------
class ClusterEvents:
    """The events reader on a cluster: ``XREAD`` cannot read streams of two slots at once, so
    each slot with watched tasks gets its own reader (and blocking connection)."""

    def __init__(
        self,
        backend: RedisBackend,
        deliver: Deliver,
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._backend = backend
        self._deliver = deliver
        self._on_error = on_error
        self._readers: dict[int, EventsReader] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def watch(self, tasks: Iterable[str]) -> None:
        from .events_reader import EventsReader

        by_slot: dict[int, list[str]] = {}
        for task in tasks:
            by_slot.setdefault(key_slot(self._backend.keys(task).events), []).append(task)
        for slot, group in by_slot.items():
            reader = self._readers.get(slot)
            if reader is None:
                backend = self._backend
                reader = self._readers[slot] = EventsReader(backend, self._deliver, self._on_error)
            reader.watch(group)
        for slot in list(self._readers.keys() - by_slot.keys()):
            closing = asyncio.ensure_future(self._readers.pop(slot).close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    @property
    def reads(self) -> int:
        return sum(reader.reads for reader in self._readers.values())

    async def close(self) -> None:
        readers, self._readers = self._readers, {}
        for reader in readers.values():
            await reader.close()
        for closing in list(self._closing):
            with contextlib.suppress(BaseException):
                await closing


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def seed_addresses(url: str) -> list[Address]:
    return [parse_address(seed) for seed in split_seeds(url)]
