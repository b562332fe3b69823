"""Schedules: the declared form (validated at declaration), the stored form, and fire times.

A schedule is stored as one JSON record (the reference's shape: ``task``, ``data``, ``every``
in ms or ``cron`` + ``timezone``, ``onMissed``, ``overlap``, ``lastRun``, ``lastJobId``) plus
its next fire time (absent while paused). Fire times are absolute epoch ms on the backend's
clock; ``every`` fire times sit on a fixed grid from the first one, cron fire times follow
the wall clock of ``timezone`` across DST changes (cronsim: a nonexistent local time runs
at the first valid minute after the gap, a repeated local time runs once; ``*`` hours run
every real hour). See docs/design.md#scheduling.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import serializer
from .durations import Duration, to_ms
from .errors import ConfigError, SerializationError

__all__ = ["Schedule", "ScheduleInfo", "ScheduleSpec", "fire_job_id", "plan_fires"]

_LIMIT = re.compile(r"^catch-up-limit:(\d+)$")
_SCHEDULE_NS = uuid.UUID("5c1e0d3b-7a52-4c3e-9f0e-0b6f2a3c9d10")
_NS_BYTES = _SCHEDULE_NS.bytes
_VARIANT = "89ab" * 4  # a hex digit with its top two bits set to 10
_encode_record = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_json_string = json.encoder.encode_basestring_ascii  # what _encode_record writes for a str
MAX_FIRES_PER_TICK = 100  # a long catch-up continues on the next tick


@dataclass(frozen=True, slots=True)
class Schedule:
    """An inline schedule: ``@app.task(..., schedule=Schedule(every="5m"))``."""

    every: Duration | None = None
    cron: str | None = None
    timezone: str | None = None
    data: Any = None
    on_missed: str = "skip"
    overlap: bool = False

    def __post_init__(self) -> None:
        """Checked where it is written (ConfigError, a ValueError, naming the problem), not
        first when a task takes it."""
        ScheduleSpec.build(
            "(inline)",
            "",
            data=self.data,
            every=self.every,
            cron=self.cron,
            timezone=self.timezone,
            on_missed=self.on_missed,
            overlap=self.overlap,
        )


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """One schedule as ``app.schedules.list()`` reports it."""

    name: str
    task: str
    every: timedelta | None
    cron: str | None
    timezone: str | None
    next_run: datetime | None
    last_run: datetime | None
    last_job_id: str | None
    paused: bool
    data: Any = None
    on_missed: str = "skip"
    overlap: bool = False


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A validated schedule. ``to_json`` is what the backend stores."""

    task: str
    data: Any
    every_ms: int | None
    cron: str | None
    timezone: str | None
    on_missed: str
    overlap: bool
    last_run: int | None = None
    last_job_id: str | None = None

    @classmethod
    def build(
        cls,
        name: str,
        task: str,
        *,
        data: Any = None,
        every: Duration | None = None,
        cron: str | None = None,
        timezone: str | None = None,
        on_missed: str = "skip",
        overlap: bool = False,
    ) -> ScheduleSpec:
        """Validate a declaration; raises ConfigError (a ValueError) naming the problem."""
        where = f"schedule {name!r}"
        if (every is None) == (cron is None):
            raise ConfigError(f"{where}: give exactly one of every= or cron=")
        every_ms = None
        if every is not None:
            every_ms = to_ms(every, f"{where}: every", allow_zero=False)
        if cron is not None:
            check_cron(cron, timezone, where)
        elif timezone is not None:
            raise ConfigError(f"{where}: timezone applies to cron schedules only")
        check_on_missed(on_missed, where)
        if not isinstance(overlap, bool):
            raise ConfigError(f"{where}: overlap must be True or False, got {overlap!r}")
        try:  # JSON only: fail now, not at a fire time
            serializer.dumps(data, lambda: f"data for {where}")
        except SerializationError as exc:
            raise ConfigError(str(exc)) from None
        return cls(task, data, every_ms, cron, timezone, on_missed, overlap)

    def to_json(self) -> str:
        record: dict[str, Any] = {"task": self.task}
        if self.data is not None:
            record["data"] = self.data
        if self.every_ms is not None:
            record["every"] = self.every_ms
        if self.cron is not None:
            record["cron"] = self.cron
        if self.timezone is not None:
            record["timezone"] = self.timezone
        record["onMissed"] = self.on_missed
        record["overlap"] = self.overlap
        if self.last_run is not None:
            record["lastRun"] = self.last_run
        if self.last_job_id is not None:
            record["lastJobId"] = self.last_job_id
        return _encode_record(record)

    @classmethod
    def from_json(cls, text: str) -> ScheduleSpec:
        """Parse a stored record; ValueError (or KeyError/TypeError) when it is not one."""
        record = json.loads(text)
        every = record.get("every")
        last_run = record.get("lastRun")
        return cls(
            task=str(record["task"]),
            data=record.get("data"),
            every_ms=None if every is None else int(every),
            cron=record.get("cron"),
            timezone=record.get("timezone"),
            on_missed=str(record.get("onMissed", "skip")),
            overlap=bool(record.get("overlap", False)),
            last_run=None if last_run is None else int(last_run),
            last_job_id=record.get("lastJobId"),
        )

    def same_timing(self, other: ScheduleSpec) -> bool:
        return (self.every_ms, self.cron, self.timezone) == (
            other.every_ms,
            other.cron,
            other.timezone,
        )

    def with_history(self, other: ScheduleSpec) -> ScheduleSpec:
        return replace(self, last_run=other.last_run, last_job_id=other.last_job_id)

    def fired(self, last_run: int | None, last_job_id: str | None) -> ScheduleSpec:
        """This schedule after a tick (``replace`` with the history, without its field
        introspection: once per fire time)."""
        return ScheduleSpec(
            self.task,
            self.data,
            self.every_ms,
            self.cron,
            self.timezone,
            self.on_missed,
            self.overlap,
            last_run,
            last_job_id,
        )

    def first_fire(self, now_ms: int) -> int:
        """The first fire time strictly after ``now_ms``."""
        if self.every_ms is not None:
            return now_ms + self.every_ms
        assert self.cron is not None
        return next_cron(self.cron, self.timezone, now_ms)


def history_json(stem: str, last_run: int, last_job_id: str) -> str:
    """``spec.fired(last_run, last_job_id).to_json()`` where ``stem`` is
    ``spec.fired(None, None).to_json()``: the history fields come last in the record, so
    they are appended to the stem instead of encoding the whole record at every fire."""
    return f'{stem[:-1]},"lastRun":{int(last_run)},"lastJobId":{_json_string(last_job_id)}}}'


def check_on_missed(value: object, where: str) -> None:
    if value in ("skip", "catch-up"):
        return
    match = _LIMIT.match(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) < 1:
        raise ConfigError(
            f"{where}: on_missed must be 'skip', 'catch-up' or 'catch-up-limit:N' (N >= 1), "
            f"got {value!r}"
        )


def check_cron(cron: object, timezone: object, where: str) -> None:
    if not isinstance(cron, str):
        raise ConfigError(f"{where}: cron must be a string, got {cron!r}")
    if timezone is not None:
        _zone(timezone, where)
    try:
        next_cron(cron, None, 0)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _zone(name: object, where: str = "schedule") -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: timezone must be an IANA name, got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: unknown timezone {name!r}") from None


def _seconds_field(field: str) -> list[int]:
    """The seconds of a 6-field expression (the first field), as a sorted list."""
    out: set[int] = set()
    for part in field.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ConfigError(f"bad seconds step in cron field {field!r}")
            step = int(step_text)
        if body == "*":
            low, high = 0, 59
        elif "-" in body:
            a, _, b = body.partition("-")
            if not (a.isdigit() and b.isdigit()):
                raise ConfigError(f"bad seconds range in cron field {field!r}")
            low, high = int(a), int(b)
        elif body.isdigit():
            low = int(body)
            high = 59 if step_text else low
        else:
            raise ConfigError(f"bad seconds in cron field {field!r}")
        if not 0 <= low <= high <= 59:
            raise ConfigError(f"seconds out of range in cron field {field!r}")
        out.update(range(low, high + 1, step))
    return sorted(out)


def _cron_iter(expr: str, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Fire times strictly after ``after`` (aware), in order."""
    from cronsim import CronSim, CronSimError  # imported on first use: `import taskora` stays light

    fields = expr.split()
    if len(fields) not in (5, 6):
        raise ConfigError(f"cron {expr!r} must have 5 fields (or 6, seconds first)")
    seconds = _seconds_field(fields[0]) if len(fields) == 6 else [0]
    minutes_expr = " ".join(fields[-5:])
    local = after.astimezone(tz)
    # cronsim yields minutes strictly after its start: start one minute before this one, so
    # later seconds of the current minute are found. The seconds field is ours because
    # cronsim's own seconds support skips the fire time in a spring-forward gap.
    start = local.replace(second=0, microsecond=0) - timedelta(minutes=1)
    try:
        minutes = CronSim(minutes_expr, start)
    except CronSimError as exc:
        raise ConfigError(f"invalid cron {expr!r}: {exc}") from None
    for minute in minutes:
        for second in seconds:
            at = minute.replace(second=second)
            if at > local:
                yield at


def next_cron(expr: str, timezone: str | None, after_ms: int) -> int:
    """The first fire time of ``expr`` strictly after ``after_ms``."""
    return next(cron_fires(expr, timezone, after_ms))


def cron_fires(expr: str, timezone: str | None, after_ms: int) -> Iterator[int]:
    """The fire times of ``expr`` strictly after ``after_ms``, in order."""
    times = _cron_times.get((expr, timezone))
    if times is None:
        if len(_cron_times) >= _CRON_KEEP:
            _cron_times.clear()
        times = _cron_times[(expr, timezone)] = _CronTimes(expr, timezone)
    at: int | None = after_ms
    while at is not None:
        at = times.after(at)
        if at is not None:
            yield at


def _fresh_cron_fires(expr: str, timezone: str | None, after_ms: int) -> Iterator[int]:
    tz = _zone(timezone) if timezone is not None else ZoneInfo("UTC")
    after = datetime.fromtimestamp(after_ms / 1000, UTC)
    for at in _cron_iter(expr, tz, after):
        yield int(at.timestamp() * 1000)


class _CronTimes:
    """The fire times of one cron expression in one zone, each computed once: which time
    follows which is remembered, and the walk goes on from the latest one found without a
    new ``CronSim`` (whose start costs several steps: a tick asks for the time after the
    fire time it runs, so a minute-by-minute schedule in virtual time asked anew each
    minute)."""

    __slots__ = ("_expr", "_front", "_lock", "_next", "_timezone", "_walk")

    def __init__(self, expr: str, timezone: str | None) -> None:
        self._expr, self._timezone = expr, timezone
        self._next: dict[int, int | None] = {}  # ms -> the first fire time after it (None: none)
        self._walk: Iterator[int] | None = None  # the walk, last at _front
        self._front: int | None = None
        self._lock = threading.Lock()  # app.schedules may be used from another thread

    def after(self, ms: int) -> int | None:
        """The first fire time strictly after ``ms`` (None: cronsim found none)."""
        found = self._next.get(ms, False)
        if found is not False:
            return found
        with self._lock:
            if self._walk is None or self._front != ms:
                self._walk, self._front = None, None  # a new walk (the old one is left)
                walk = _fresh_cron_fires(self._expr, self._timezone, ms)
            else:
                walk = self._walk
            nxt = next(walk, None)  # a bad expression raises here, before anything is kept
            if len(self._next) >= _CRON_KEEP:
                self._next.clear()
            self._next[ms] = nxt
            self._walk, self._front = (walk, nxt) if nxt is not None else (None, None)
            return nxt


_CRON_KEEP = 4096  # expressions remembered, and fire times per expression
_cron_times: dict[tuple[str, str | None], _CronTimes] = {}


@dataclass(slots=True)  # not frozen: one per tick of each due schedule
class FirePlan:
    fires: tuple[int, ...]  # fire times to dispatch, oldest first
    next_ms: int  # the next fire time after the last one considered
    more: bool  # next_ms is already due (a catch-up continues on the next tick)


def plan_fires(spec: ScheduleSpec, due_ms: int, now_ms: int) -> FirePlan:
    """Which fire times to dispatch now: ``due_ms`` (the armed fire time) and those after it
    up to ``now_ms``, thinned by ``on_missed``: ``skip`` keeps the latest, ``catch-up`` all
    (at most MAX_FIRES_PER_TICK per tick), ``catch-up-limit:N`` the latest N."""
    if spec.on_missed == "catch-up":
        keep = None
    elif spec.on_missed == "skip":
        keep = 1
    else:
        keep = int(spec.on_missed.rsplit(":", 1)[1])
    if spec.every_ms is not None:
        every = spec.every_ms
        count = (now_ms - due_ms) // every + 1 if now_ms >= due_ms else 0
        if keep is None and count > MAX_FIRES_PER_TICK:
            fires = [due_ms + i * every for i in range(MAX_FIRES_PER_TICK)]
            return FirePlan(tuple(fires), due_ms + MAX_FIRES_PER_TICK * every, True)
        first = 0 if keep is None else max(0, count - keep)
        fires = [due_ms + i * every for i in range(first, count)]
        return FirePlan(tuple(fires), due_ms + max(count, 1) * every, False)
    assert spec.cron is not None
    collected: list[int] = []
    following = due_ms
    if due_ms <= now_ms:
        collected.append(due_ms)
        for at in cron_fires(spec.cron, spec.timezone, due_ms):
            if at > now_ms:
                following = at
                break
            collected.append(at)
            if keep is None and len(collected) == MAX_FIRES_PER_TICK:
                return FirePlan(tuple(collected), next_cron(spec.cron, spec.timezone, at), True)
            if keep is not None and len(collected) > keep:
                del collected[0]
    else:
        following = due_ms
    if keep is not None:
        collected = collected[-keep:]
    return FirePlan(tuple(collected), following, False)


def fire_job_id(name: str, fire_ms: int) -> str:
    """The job id of one fire time: the same in every process, so a re-sent dispatch of the
    same fire time finds its job instead of making a second one. It is
    ``str(uuid.uuid5(namespace, name + NUL + fire_ms))`` spelled out, a third of its cost (the
    ``UUID`` object in between was most of it; once per fire, docs/design.md#testing)."""
    h = hashlib.sha1(_NS_BYTES + f"{name}\x00{fire_ms}".encode()).hexdigest()
    # version 5 in the 13th digit; the RFC 4122 variant in the 17th (its top bits 10)
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:32]}"


def to_info(name: str, record: str, next_ms: int | None) -> ScheduleInfo:
    spec = ScheduleSpec.from_json(record)
    return ScheduleInfo(
        name=name,
        task=spec.task,
        every=None if spec.every_ms is None else timedelta(milliseconds=spec.every_ms),
        cron=spec.cron,
        timezone=spec.timezone,
        next_run=None if next_ms is None else _aware(next_ms),
        last_run=None if spec.last_run is None else _aware(spec.last_run),
        last_job_id=spec.last_job_id,
        paused=next_ms is None,
        data=spec.data,
        on_missed=spec.on_missed,
        overlap=spec.overlap,
    )


def _aware(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def coerce_schedule(value: object, task: str) -> Schedule:
    if isinstance(value, Schedule):
        return value
    if isinstance(value, Mapping):
        try:
            return Schedule(**dict(value))
        except TypeError as exc:
            raise ConfigError(f"task {task!r}: schedule: {exc}") from None
    raise ConfigError(f"task {task!r}: schedule must be a taskora.Schedule or a dict")
