"""The typed script layer: every ``lua/*.lua`` script, its Python wrapper, and the one send path.

``lib.lua`` holds helpers shared by the per-task scripts. On a server with Redis Functions
(Redis >= 7.0, Valkey) the scripts run as one library (``LIBRARY``, generated here from the
files as they are: ``lib.lua`` once, each script a function), called by FCALL: a call no longer
rebuilds the helpers (~24,000 of a call's ~150,000 instructions of fixed cost; -8.5 % of
redis-server's instructions per sequential round trip, docs/design.md#functions-or-evalsha).
Elsewhere each script is sent by EVALSHA with ``lib.lua`` prepended. Both are content-addressed
(the library's name and its functions' names carry the hash of its code), so two versions of
taskora can run side by side during a rolling deploy.

Each script starts with a machine-readable header naming its KEYS and ARGV::

    --- KEYS: @task                  (the standard per-task keys, keys.TASK_KEY_NAMES)
    --- KEYS: records times lock     (or named keys, in order)
    --- ARGV: B #jobs jobs{id data version} want ids...

ARGV items: ``name`` is one value; ``B`` is the task's key base (``@task`` scripts only);
``#rows`` is the number of rows of group ``rows``; ``rows{a b}`` is that group, each row's
fields in order (without a ``#rows`` before it, it runs to the end); ``name...`` is the rest
of ARGV. Several ``--- ARGV:`` lines join into one list.

A wrapper is a dataclass declared here with ``@lua(name)``: its fields are the header's names
in snake case and in the same order (``task: TaskKeys`` for ``@task``; counts and ``B`` are
derived), and ``decode`` turns the raw reply into a typed one. The header alone drives the
encoding (``argv``); ``tests/test_scripts.py`` checks every wrapper against its header, so a
script and its caller cannot drift apart. A new script needs a header and a declaration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import operator
import re
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

from ..base import Claimed, EnqueueResult, NewJob, ReadyStep, StallReport, WorkflowAdvance
from .keys import TaskKeys
from .resp import Arg, ReplyError, RespClient

__all__ = [
    "LIBRARY",
    "SCRIPTS",
    "WRAPPERS",
    "Call",
    "Cancel",
    "CollectItem",
    "CollectPush",
    "EnqueueFlow",
    "EnqueueJobs",
    "ExpireDue",
    "ExtendLocks",
    "FindEnds",
    "FinishClaim",
    "FinishClaimReply",
    "FinishOutcome",
    "Handshake",
    "Header",
    "Library",
    "Meta",
    "Repair",
    "RetryFailed",
    "ScheduleDue",
    "ScheduleLock",
    "ScheduleRead",
    "ScheduleWrite",
    "Script",
    "StalledCheck",
    "Trim",
    "WorkerBeat",
    "WorkflowAdvanceCall",
    "WorkflowCreate",
    "WorkflowEnd",
    "WorkflowRow",
    "WorkflowStarted",
    "library",
    "library_loaded",
    "load_library",
    "missing",
    "parse_header",
    "run_pipelined",
]

log = logging.getLogger("taskora.redis")

R = TypeVar("R")
TASK = "@task"


# -- headers ---------------------------------------------------------------------------------
class Item(NamedTuple):
    """One ARGV item of a header: kind is value | base | count | group | rest."""

    kind: str
    name: str
    fields: tuple[str, ...] = ()


class Header(NamedTuple):
    keys: tuple[str, ...]  # (TASK,) or key names
    argv: tuple[Item, ...]


_ITEM = re.compile(r"(\w+)\{([^}]*)\}|#(\w+)|(\w+)\.\.\.|(\w+)|(\S+)")


def parse_header(source: str) -> Header:
    """The ``--- KEYS:`` / ``--- ARGV:`` lines of a script (ValueError when malformed)."""
    keys: list[str] | None = None
    text: list[str] = []
    for line in source.splitlines():
        if line.startswith("--- KEYS:"):
            keys = line.removeprefix("--- KEYS:").split()
        elif line.startswith("--- ARGV:"):
            text.append(line.removeprefix("--- ARGV:"))
    if keys is None or not text:
        raise ValueError("no '--- KEYS:' or no '--- ARGV:' header line")
    items: list[Item] = []
    for m in _ITEM.finditer(" ".join(text)):
        group, fields, count, rest, name, junk = m.groups()
        if junk is not None:
            raise ValueError(f"unreadable ARGV item {junk!r}")
        if group is not None:
            items.append(Item("group", group, tuple(fields.split())))
        elif count is not None:
            items.append(Item("count", count))
        elif rest is not None:
            items.append(Item("rest", rest))
        elif name == "B":
            items.append(Item("base", name))
        else:
            items.append(Item("value", name))
    _check(tuple(keys), items)
    return Header(tuple(keys), tuple(items))


def _check(keys: tuple[str, ...], items: list[Item]) -> None:
    for i, item in enumerate(items):
        counted = any(x.kind == "count" and x.name == item.name for x in items[:i])
        if item.kind == "rest" or (item.kind == "group" and not counted):
            if i != len(items) - 1:
                raise ValueError(f"{item.name}: an open-ended item must come last")
        if item.kind == "count" and not any(
            x.kind == "group" and x.name == item.name for x in items[i + 1 :]
        ):
            raise ValueError(f"#{item.name} counts no later group")
        if item.kind == "base" and keys != (TASK,):
            raise ValueError("B is only defined for @task scripts")


def snake(name: str) -> str:
    """Header names are the Lua side's camelCase; wrapper fields are their snake case."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


# -- scripts ---------------------------------------------------------------------------------
class Script:
    """One Lua script: its source as EVALSHA sends it (lib.lua prepended where used), SHA and
    header; ``function`` is its name in the Functions library (``LIBRARY``)."""

    __slots__ = ("function", "header", "name", "repairable", "sha", "source")

    def __init__(self, name: str, source: str, header: Header) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.header = header
        self.function = ""  # set by _library
        # a WRONGTYPE from a per-task script may be a foreign key: repair.lua moves it aside
        self.repairable = header.keys == (TASK,) and name != "repair"


# Scripts without lib.lua: the handshake (on the meta key) and ``schedule_*`` (on the schedule
# keys) run outside any task.
_ALONE = ("handshake", "schedule_")
# Per-call state lib.lua's helpers read (its K and NOW), set as a script starts.
_ENTER = "enter(KEYS)"


def _load() -> tuple[dict[str, Script], dict[str, str], str]:
    """Every ``lua/<name>.lua`` becomes SCRIPTS[name]; lib.lua is prepended to the per-task
    scripts, not to those of _ALONE. Also returns each file's own text and lib.lua's."""
    folder = resources.files(__package__).joinpath("lua")
    sources = {
        entry.name.removesuffix(".lua"): entry.read_text()
        for entry in folder.iterdir()
        if entry.name.endswith(".lua")
    }
    lib = sources.pop("lib")
    scripts = {
        name: Script(
            name,
            source if name.startswith(_ALONE) else f"{lib}\n{_ENTER}\n{source}",
            parse_header(source),
        )
        for name, source in sorted(sources.items())
    }
    return scripts, sources, lib


# -- the Functions library ----------------------------------------------------------------------
# On a server with Redis Functions (Redis >= 7.0, Valkey) the scripts run as one library,
# loaded once: lib.lua's helpers are made once, not on every call, and each call only sets
# its state (enter) and runs its script. The library's name carries a hash of its code, and
# so do its functions' names (they are global on a server): two taskora versions coexist on
# one server during a rolling deploy, as their EVALSHA scripts do.
#
# Memory: a function without flags is refused whole when Redis is over maxmemory; an EVALSHA
# script is refused at its first write that may grow memory (one that deleted or popped first
# runs to its end). The dispatch scripts add before anything else: they keep no flag (refused
# up front, nothing written, the same error). The others change jobs that exist (finish,
# claim, cancel, retry, trim...) and delete or pop first, so workers drain a full Redis:
# they are flagged 'allow-oom', as good as running past their first write.
_REFUSED_OVER_MAXMEMORY = frozenset({"enqueue", "enqueue_flow", "collect", "workflow_create"})


class Library(NamedTuple):
    name: str  # taskora_<hash of the code>
    code: str  # as FUNCTION LOAD takes it
    functions: dict[str, str]  # script name -> function name


def _library_body(sources: dict[str, str], lib: str) -> str:
    """The library's code without its name: lib.lua once, then one function per script,
    whose body is the script's file as it is (KEYS and ARGV are the function's arguments)."""
    parts = [lib]
    for name, source in sorted(sources.items()):
        flags = "" if name in _REFUSED_OVER_MAXMEMORY else "'allow-oom'"
        enter = "" if name.startswith(_ALONE) else f"{_ENTER}\n"
        parts.append(
            f"redis.register_function{{function_name = FN .. '{name}', flags = {{{flags}}},\n"
            f"callback = function(KEYS, ARGV)\n{enter}{source}\nend}}"
        )
    return "\n".join(parts)


def library(body: str) -> Library:
    """A library of the given body (cluster.py makes a variant of it), named by its hash."""
    name = "taskora_" + hashlib.sha1(body.encode()).hexdigest()[:12]
    code = f"#!lua name={name}\nlocal FN = '{name}_'\n{body}"
    return Library(name, code, {script: f"{name}_{script}" for script in SCRIPTS})


SCRIPTS, SOURCES, _LIB = _load()
LIBRARY_BODY = _library_body(SOURCES, _LIB)
LIBRARY = library(LIBRARY_BODY)
for _script in SCRIPTS.values():
    _script.function = LIBRARY.functions[_script.name]


# -- wrappers --------------------------------------------------------------------------------
def _flag(value: Any) -> Any:
    """Booleans travel as '1' / '0', as every script reads them."""
    if value is True:
        return "1"
    if value is False:
        return "0"
    return value


Step = Callable[[Any, list[Arg]], None]


def _step(item: Item) -> Step:
    """How one header item appends its values to ARGV."""
    get = operator.attrgetter(snake(item.name))
    if item.kind == "base":

        def base(call: Any, out: list[Arg]) -> None:
            out.append(call.task.base)

        return base
    if item.kind == "value":

        def value(call: Any, out: list[Arg]) -> None:
            out.append(_flag(get(call)))

        return value
    if item.kind == "count":

        def count(call: Any, out: list[Arg]) -> None:
            out.append(len(get(call)))

        return count
    if item.kind == "rest":

        def rest(call: Any, out: list[Arg]) -> None:
            out.extend(get(call))

        return rest
    row: Any = operator.attrgetter(*(snake(f) for f in item.fields))
    if len(item.fields) == 1:

        def column(call: Any, out: list[Arg]) -> None:
            out.extend(map(row, get(call)))

        return column

    def group(call: Any, out: list[Arg]) -> None:
        for r in get(call):  # rows carry no booleans: no conversion on this hot loop
            out.extend(row(r))

    return group


def _values(items: list[Item]) -> Step:
    """Several plain values in a row: one attribute fetch, booleans mapped inline (a finish
    call has ten of them, encoded twice per job on the worker's hot path)."""
    if len(items) == 1:
        return _step(items[0])
    get = operator.attrgetter(*(snake(item.name) for item in items))

    def values(call: Any, out: list[Arg]) -> None:
        out.extend(["1" if v is True else "0" if v is False else v for v in get(call)])

    return values


def _encoder(header: Header) -> Callable[[Any], list[Arg]]:
    """ARGV of a call, built from the header: the one place positions are counted."""
    steps: list[Step] = []
    run: list[Item] = []
    for item in header.argv:
        if item.kind == "value":
            run.append(item)
            continue
        if run:
            steps.append(_values(run))
            run = []
        steps.append(_step(item))
    if run:
        steps.append(_values(run))

    def encode(call: Any) -> list[Arg]:
        out: list[Arg] = []
        for step in steps:
            step(call, out)
        return out

    return encode


class Call(Generic[R]):
    """Base of the wrappers: one call of a script with named keys and arguments.

    ``run`` is the send path; ``command`` is the same call as a command for a pipeline or a
    batched write, whose raw reply ``decode`` reads (on an error reply, ``run`` it instead).
    """

    __slots__ = ()
    script: ClassVar[Script]
    _argv: ClassVar[Callable[[Any], list[Arg]]]
    _key_names: ClassVar[tuple[str, ...]]

    def keys(self) -> Sequence[str]:
        if not self._key_names:
            task: TaskKeys = getattr(self, "task")  # noqa: B009 (declared by the subclass)
            return task.standard
        return [getattr(self, name) for name in self._key_names]

    def argv(self) -> list[Arg]:
        return type(self)._argv(self)

    def command(self, functions: bool) -> tuple[Arg, ...]:
        """The call as one command: FCALL of its function in the library (``functions``:
        the server has it, ``client.functions``) or EVALSHA of its script."""
        keys = self.keys()
        script = self.script
        if functions:
            return ("FCALL", script.function, len(keys), *keys, *self.argv())
        return ("EVALSHA", script.sha, len(keys), *keys, *self.argv())

    def decode(self, raw: Any) -> R:
        raise NotImplementedError

    async def run(self, client: RespClient) -> R:
        return self.decode(await _send(client, self))


def missing(exc: ReplyError) -> bool:
    """The script or function is not on the server (restarted without persistence, a
    promoted replica, SCRIPT / FUNCTION FLUSH): nothing ran, load it and run the call again."""
    return exc.code == "NOSCRIPT" or str(exc).startswith("ERR Function not found")


def library_loaded(reply: Any) -> bool:
    """Whether a FUNCTION LOAD reply means the library is on the server: loaded now, or
    already (by another process: its name is its code's hash, so it is the same code)."""
    if not isinstance(reply, Exception):
        return True
    text = str(reply)
    return (
        isinstance(reply, ReplyError)
        and text.startswith("ERR Library ")
        and text.endswith(" already exists")
    )


async def load_library(client: RespClient) -> None:
    """FUNCTION LOAD of the library; raises ReplyError when the server refuses it."""
    try:
        await client.execute("FUNCTION", "LOAD", LIBRARY.code)
    except ReplyError as exc:
        if not library_loaded(exc):
            raise


async def _reload(client: RespClient, call: Call[Any]) -> tuple[Arg, ...]:
    """Load what ``call`` runs; returns the command to run it again. Redis refuses FUNCTION
    LOAD over maxmemory (not SCRIPT LOAD): then this call goes by EVALSHA."""
    if client.functions:
        try:
            await load_library(client)
            return call.command(True)
        except ReplyError as exc:
            if exc.code != "OOM":
                raise
    await client.execute("SCRIPT", "LOAD", call.script.source)
    return call.command(False)


async def _send(client: RespClient, call: Call[Any]) -> Any:
    """The one send path: FCALL (or EVALSHA on a server without Functions); when the library
    or script is missing load it and run again; on WRONGTYPE from a per-task script move the
    foreign keys aside and run again."""
    script = call.script
    command = call.command(client.functions)
    try:
        return await client.execute(*command)
    except ReplyError as exc:
        if missing(exc):
            command = await _reload(client, call)
            return await client.execute(*command)
        if exc.code != "WRONGTYPE" or not script.repairable:
            raise
    moved = await Repair(getattr(call, "task")).run(client)  # noqa: B009
    log.error("taskora: moved malformed keys aside: %s", list(moved))
    return await client.execute(*command)


async def run_pipelined(client: RespClient, calls: Sequence[Call[R]]) -> list[R]:
    """Several calls in one round trip; a call whose script is missing goes the send path."""
    functions = client.functions
    replies = await client.pipeline([call.command(functions) for call in calls])
    out: list[R] = []
    for call, reply in zip(calls, replies, strict=True):
        if isinstance(reply, ReplyError) and missing(reply):
            out.append(await call.run(client))
        elif isinstance(reply, Exception):
            raise reply
        else:
            out.append(call.decode(reply))
    return out


WRAPPERS: dict[str, type[Call[Any]]] = {}

C = TypeVar("C", bound=type[Call[Any]])


def lua(name: str) -> Callable[[C], C]:
    """Bind a wrapper to ``lua/<name>.lua``: its encoder is built from the script's header."""

    def bind(cls: C) -> C:
        script = SCRIPTS[name]
        cls.script = script
        cls._argv = staticmethod(_encoder(script.header))
        keys = script.header.keys
        cls._key_names = () if keys == (TASK,) else tuple(snake(k) for k in keys)
        WRAPPERS[name] = cls
        return cls

    return bind


def _str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _opt(value: Any) -> str | None:
    return None if value is None else _str(value)


def _strs(values: list[Any]) -> tuple[str, ...]:
    return tuple(_str(v) for v in values)


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


# -- the scripts' wrappers (one per lua/*.lua, in name order) ------------------------------------
@lua("cancel")
@dataclasses.dataclass(slots=True)
class Cancel(Call[str]):
    """Reply: 'cancelled' | 'flagged' | 'not_cancellable'."""

    task: TaskKeys
    id: str
    reason: str

    def decode(self, raw: Any) -> str:
        return _str(raw)


@lua("enqueue")
@dataclasses.dataclass(slots=True)
class EnqueueJobs(Call[list[EnqueueResult]]):
    """Reply: per job its creation event id, or none when the id already existed."""

    task: TaskKeys
    jobs: Sequence[NewJob]

    def decode(self, raw: Any) -> list[EnqueueResult]:
        return [EnqueueResult(True, event_id=_str(created) or None) for created in raw]


@lua("enqueue_flow")
@dataclasses.dataclass(slots=True)
class EnqueueFlow(Call[EnqueueResult]):
    task: TaskKeys
    kind: str
    id: str
    data: str
    version: int
    max_attempts: int
    priority: int
    delay_ms: int
    ttl_ms: int
    concurrency_key: str
    concurrency_limit: int
    flow_key: str
    kind_args: Sequence[Arg]

    def decode(self, raw: Any) -> EnqueueResult:
        enqueued, existing, replaced, event_id = (_str(v) for v in raw)
        return EnqueueResult(
            enqueued == "1",
            existing_id=existing or None,
            replaced_id=replaced or None,
            event_id=event_id or None,
        )


@lua("expire_due")
@dataclasses.dataclass(slots=True)
class ExpireDue(Call[list[str]]):
    """Reply: the ids expired now."""

    task: TaskKeys
    ids: Sequence[str]

    def decode(self, raw: Any) -> list[str]:
        return [_str(r) for r in raw]


class HeldLock(NamedTuple):
    id: str
    token: str


class CollectItem(NamedTuple):
    id: str  # the item's dispatch id
    item: str  # the item, JSON
    version: int
    max_attempts: int
    key: str
    delay_ms: int
    max_size: int
    max_wait_ms: int


@lua("collect")
@dataclasses.dataclass(slots=True)
class CollectPush(Call[list[EnqueueResult]]):
    """Reply per item: the batch job it joined (none: its own dispatch id started one)."""

    task: TaskKeys
    items: Sequence[CollectItem]

    def decode(self, raw: Any) -> list[EnqueueResult]:
        return [EnqueueResult(True, existing_id=_str(batch) or None) for batch in raw]


@lua("find_ends")
@dataclasses.dataclass(slots=True)
class FindEnds(Call[list[tuple[str, str, str | None]]]):
    """Reply: (job id, state, detail or None) per job found in the done stream, in order."""

    task: TaskKeys
    start: str
    ids: Sequence[str]

    def decode(self, raw: Any) -> list[tuple[str, str, str | None]]:
        return [
            (job.decode(), state.decode(), None if d is None else d.decode("utf-8", "replace"))
            for job, state, d in zip(raw[::3], raw[1::3], raw[2::3], strict=True)
        ]


@lua("extend_locks")
@dataclasses.dataclass(slots=True)
class ExtendLocks(Call[list[int]]):
    """Reply per job: 1 renewed, 0 lost, -1 renewed but cancellation was requested."""

    task: TaskKeys
    ttl_ms: int
    held: Sequence[HeldLock]

    def decode(self, raw: Any) -> list[int]:
        return [int(r) for r in raw]


class FinishOutcome(NamedTuple):
    id: str
    token: str
    kind: str
    payload: str
    retry_delay_ms: int


class FinishClaimReply(NamedTuple):
    refused: tuple[str, ...]
    claimed: tuple[Claimed, ...]
    next_due: int  # due ms of the next delayed job when nothing is waiting (0: none)


@lua("finish_claim")
@dataclasses.dataclass(slots=True)
class FinishClaim(Call[FinishClaimReply]):
    task: TaskKeys
    outcomes: Sequence[FinishOutcome]
    want: int
    lock_ttl_ms: int
    token_base: str
    token_seq: int
    singleton: bool
    completed_max: int
    failed_max: int
    after_wait: bool
    reserve: int
    max_version: int = 0

    def decode(self, raw: Any) -> FinishClaimReply:
        refused, flat, next_due = raw
        return FinishClaimReply(tuple(r.decode() for r in refused), _claimed(flat), int(next_due))


def _claimed(flat: list[Any]) -> tuple[Claimed, ...]:
    """The claimed jobs of a FINISH_AND_CLAIM reply (8 values each). Decoded once per job
    on a worker's hot path: the numbers are read in one try, the tolerant reading is the
    rare fallback."""
    out = []
    for i in range(0, len(flat), 8):
        version, attempt, ts = flat[i + 2], flat[i + 3], flat[i + 4]
        try:
            version, attempt, ts = int(version), int(attempt), int(ts)
        except (TypeError, ValueError):
            version, attempt, ts = _int(version, 1), _int(attempt, 1), _int(ts, 0)
        trace = flat[i + 7]
        out.append(
            Claimed(
                flat[i].decode(),
                flat[i + 1],
                version,
                attempt,
                ts,
                flat[i + 5].decode(),
                None,
                flat[i + 6] == b"1",
                _str(trace) if trace else None,
            )
        )
    return tuple(out)


class Meta(NamedTuple):
    """The stored meta hash (None where a field is missing)."""

    wire_version: str | None
    min_compat: str | None
    written_by: str | None
    written_at: str | None


@lua("handshake")
@dataclasses.dataclass(slots=True)
class Handshake(Call[Meta]):
    meta: str
    wire_version: int
    min_compat: int
    written_by: str

    def decode(self, raw: Any) -> Meta:
        return Meta(*(_opt(v) for v in raw))


@lua("repair")
@dataclasses.dataclass(slots=True)
class Repair(Call[tuple[str, ...]]):
    """Reply: the keys moved aside."""

    task: TaskKeys

    def decode(self, raw: Any) -> tuple[str, ...]:
        return _strs(raw)


@lua("retry_failed")
@dataclasses.dataclass(slots=True)
class RetryFailed(Call[list[str]]):
    """Reply: the ids retried."""

    task: TaskKeys
    limit: int
    ids: Sequence[str]

    def decode(self, raw: Any) -> list[str]:
        return [_str(r) for r in raw]


class DueSchedules(NamedTuple):
    now: int  # the server's clock
    due: list[tuple[str, int, str]]  # name, fire time ms, record


@lua("schedule_due")
@dataclasses.dataclass(slots=True)
class ScheduleDue(Call[DueSchedules | None]):
    """Reply: None when the token does not hold the leader lock."""

    records: str
    times: str
    lock: str
    token: str
    limit: int

    def decode(self, raw: Any) -> DueSchedules | None:
        if raw is None:
            return None
        due = [
            (_str(raw[i]), int(float(_str(raw[i + 1]))), _str(raw[i + 2]))
            for i in range(1, len(raw), 3)
        ]
        return DueSchedules(int(raw[0]), due)


@lua("schedule_lock")
@dataclasses.dataclass(slots=True)
class ScheduleLock(Call[bool]):
    """Reply: whether this token holds the lock afterwards."""

    lock: str
    token: str
    ttl_ms: int
    release: bool

    def decode(self, raw: Any) -> bool:
        return bool(raw)


@lua("schedule_read")
@dataclasses.dataclass(slots=True)
class ScheduleRead(Call[list[tuple[str, str, int | None]]]):
    """Reply: per schedule its name, record and next fire time (None: paused)."""

    records: str
    times: str
    name: str

    def decode(self, raw: Any) -> list[tuple[str, str, int | None]]:
        out = []
        for i in range(0, len(raw), 3):
            score = _str(raw[i + 2])
            out.append((_str(raw[i]), _str(raw[i + 1]), int(float(score)) if score else None))
        return out


@lua("schedule_write")
@dataclasses.dataclass(slots=True)
class ScheduleWrite(Call[bool]):
    """Reply: whether it was written (False: the schedule had changed)."""

    records: str
    times: str
    name: str
    record_mode: str
    expected_record: Arg
    next_mode: str
    expected_next_ms: Arg
    record: str
    next_ms: Arg

    def decode(self, raw: Any) -> bool:
        return bool(raw)


@lua("stalled_check")
@dataclasses.dataclass(slots=True)
class StalledCheck(Call[StallReport]):
    task: TaskKeys
    max_stalled_count: int

    def decode(self, raw: Any) -> StallReport:
        recovered, failed, cancelled, returned = raw
        return StallReport(_strs(recovered), _strs(failed), _strs(cancelled), _strs(returned))


@lua("trim")
@dataclasses.dataclass(slots=True)
class Trim(Call[int]):
    """Reply: how many jobs were deleted."""

    task: TaskKeys
    batch: int
    completed_age_ms: int
    completed_max: int
    failed_age_ms: int
    failed_max: int
    cancelled_age_ms: int
    cancelled_max: int
    expired_age_ms: int
    expired_max: int

    def decode(self, raw: Any) -> int:
        return int(raw)


# -- workflows (docs/design.md#workflows; the record is the only key: its own slot) ---------
class WorkflowRow(NamedTuple):
    """One node as workflow_create.lua reads it (every field a string)."""

    task: str
    version: int
    max_attempts: int
    data: str
    inputs: str
    waits: int
    then: str


@lua("workflow_create")
@dataclasses.dataclass(slots=True)
class WorkflowCreate(Call[bool]):
    """Reply: whether the record was created (False: the id exists)."""

    wf: str
    name: str
    output: str
    deadline_ms: int
    lease_ms: int
    steps: Sequence[WorkflowRow]

    def decode(self, raw: Any) -> bool:
        return bool(raw)


@lua("workflow_started")
@dataclasses.dataclass(slots=True)
class WorkflowStarted(Call[None]):
    wf: str

    def decode(self, raw: Any) -> None:
        return None


@lua("workflow_advance")
@dataclasses.dataclass(slots=True)
class WorkflowAdvanceCall(Call[WorkflowAdvance]):
    wf: str
    wf_id: str
    channel: str
    node: int
    result: str
    keep_ms: int

    def decode(self, raw: Any) -> WorkflowAdvance:
        rows = raw[1:]
        ready = tuple(
            ReadyStep(
                int(rows[i]),
                _str(rows[i + 1]),
                _str(rows[i + 2]),
                int(rows[i + 3]),
                int(rows[i + 4]),
            )
            for i in range(0, len(rows), 5)
        )
        return WorkflowAdvance(_str(raw[0]), ready)


@lua("workflow_end")
@dataclasses.dataclass(slots=True)
class WorkflowEnd(Call["list[tuple[int, str]]"]):
    """Reply: the (node, task) steps to cancel."""

    wf: str
    wf_id: str
    channel: str
    state: str
    node: int
    message: str
    keep_ms: int

    def decode(self, raw: Any) -> list[tuple[int, str]]:
        return [(int(raw[i]), _str(raw[i + 1])) for i in range(0, len(raw), 2)]


# -- the worker registry (docs/design.md#workers; two keys under {:workers}) -----------------
@lua("worker_beat")
@dataclasses.dataclass(slots=True)
class WorkerBeat(Call[int]):
    """Reply: how many entries of workers gone without a clean close were removed."""

    records: str
    expiries: str
    id: str
    record: str
    ttl_ms: int

    def decode(self, raw: Any) -> int:
        return _int(raw, 0)
