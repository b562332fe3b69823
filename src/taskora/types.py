"""Public value types: job states and the frozen option objects users pass around.

Every option object validates itself on construction and keeps durations as integer
milliseconds, so the rest of the code never re-parses user input.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .durations import Duration, to_ms
from .errors import ConfigError

__all__ = [
    "NON_TERMINAL_STATES",
    "TERMINAL_STATES",
    "Debounce",
    "Deduplicate",
    "JobState",
    "LogEntry",
    "Retention",
    "Retry",
    "Stall",
    "TaskDefaults",
    "Throttle",
    "check_name",
]


class JobState(enum.StrEnum):
    WAITING = "waiting"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


TERMINAL_STATES = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED}
)
NON_TERMINAL_STATES = frozenset(
    {JobState.WAITING, JobState.DELAYED, JobState.ACTIVE, JobState.RETRYING}
)

# Names become part of Redis keys: glob and hash-tag characters, ':' in task names,
# whitespace and control characters would break key escaping or cluster slotting.
_BAD_NAME = re.compile(r"[{}*?\[\]\\\s\x00-\x1f\x7f]")


def check_name(value: object, what: str, *, allow_colon: bool = True) -> str:
    """Return ``value`` if it is safe inside a Redis key, else raise ConfigError naming it."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > 200:
        raise ConfigError(f"{what} is longer than 200 characters")
    bad = _BAD_NAME.search(value) or (None if allow_colon else re.search(":", value))
    if bad:
        raise ConfigError(
            f"{what} {value!r} contains {bad.group()!r}: glob, hash-tag, whitespace and "
            "control characters are not allowed"
        )
    return value


def _positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


BackoffName = Literal["fixed", "linear", "exponential"]
BackoffFn = Callable[[int], Any]


@dataclass(frozen=True, slots=True, init=False)
class Retry:
    """Retry policy: ``attempts`` counts total runs (3 = one run plus two retries).

    The delay before retry after failed attempt ``a`` (1-based) is ``delay`` (fixed),
    ``delay * a`` (linear), ``delay * 2**(a-1)`` (exponential) or ``backoff(a)`` seconds
    (callable), capped by ``max_delay`` and then jittered by +/-25 % when ``jitter``.
    ``no_retry_on`` wins over ``retry_on``; a handler timeout is retried only when a
    ``retry_on`` entry matches it.
    """

    attempts: int
    backoff: BackoffName | BackoffFn
    delay_ms: int
    max_delay_ms: int | None
    jitter: bool
    retry_on: tuple[type[BaseException], ...]
    no_retry_on: tuple[type[BaseException], ...]

    def __init__(
        self,
        attempts: int = 1,
        backoff: BackoffName | BackoffFn = "exponential",
        delay: Duration = 1,
        max_delay: Duration | None = None,
        jitter: bool = True,
        retry_on: Iterable[type[BaseException]] = (),
        no_retry_on: Iterable[type[BaseException]] = (),
    ) -> None:
        _set = object.__setattr__
        _set(self, "attempts", _positive_int(attempts, "Retry.attempts"))
        if not callable(backoff) and backoff not in ("fixed", "linear", "exponential"):
            raise ConfigError(
                f"Retry.backoff must be 'fixed', 'linear', 'exponential' or a callable, "
                f"got {backoff!r}"
            )
        _set(self, "backoff", backoff)
        _set(self, "delay_ms", to_ms(delay, "Retry.delay"))
        _set(
            self,
            "max_delay_ms",
            None if max_delay is None else to_ms(max_delay, "Retry.max_delay"),
        )
        _set(self, "jitter", bool(jitter))
        _set(self, "retry_on", _exception_types(retry_on, "Retry.retry_on"))
        _set(self, "no_retry_on", _exception_types(no_retry_on, "Retry.no_retry_on"))


def _exception_types(
    values: Iterable[type[BaseException]], name: str
) -> tuple[type[BaseException], ...]:
    out = tuple(values)
    for item in out:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigError(f"{name} must list exception classes, got {item!r}")
    return out


@dataclass(frozen=True, slots=True, init=False)
class Stall:
    """Crash recovery: check for dead workers' jobs every ``interval``; a job is recovered
    ``max_count`` times before it fails; a running job's lock lives ``lock_ttl`` unrenewed."""

    interval_ms: int
    max_count: int
    lock_ttl_ms: int

    def __init__(
        self, interval: Duration = 30, max_count: int = 1, lock_ttl: Duration = 30
    ) -> None:
        object.__setattr__(self, "interval_ms", to_ms(interval, "Stall.interval", allow_zero=False))
        object.__setattr__(self, "max_count", _positive_int(max_count, "Stall.max_count", 0))
        ttl = to_ms(lock_ttl, "Stall.lock_ttl", allow_zero=False)
        if ttl < 300:
            raise ConfigError("Stall.lock_ttl must be at least 300 ms")
        object.__setattr__(self, "lock_ttl_ms", ttl)


@dataclass(frozen=True, slots=True, init=False)
class Retention:
    """How long finished jobs are kept: by age and by count, per task and terminal state."""

    completed_age_ms: int
    completed_max: int
    failed_age_ms: int
    failed_max: int

    def __init__(
        self,
        completed_age: Duration = "1h",
        completed_max: int = 1000,
        failed_age: Duration = "7d",
        failed_max: int = 10_000,
    ) -> None:
        object.__setattr__(
            self, "completed_age_ms", to_ms(completed_age, "Retention.completed_age")
        )
        object.__setattr__(
            self, "completed_max", _positive_int(completed_max, "Retention.completed_max", 0)
        )
        object.__setattr__(self, "failed_age_ms", to_ms(failed_age, "Retention.failed_age"))
        object.__setattr__(self, "failed_max", _positive_int(failed_max, "Retention.failed_max", 0))


@dataclass(frozen=True, slots=True)
class TaskDefaults:
    """App-wide defaults for task options a task does not set itself."""

    retry: Retry | None = None
    timeout: Duration | None = 30
    concurrency: int = 1
    stall: Stall = field(default_factory=Stall)

    def __post_init__(self) -> None:
        _positive_int(self.concurrency, "TaskDefaults.concurrency")
        if self.timeout is not None:
            to_ms(self.timeout, "TaskDefaults.timeout")


@dataclass(frozen=True, slots=True, init=False)
class Debounce:
    """Only the last dispatch per ``key`` within ``delay`` runs, with the last data."""

    key: str
    delay_ms: int

    def __init__(self, key: str, delay: Duration) -> None:
        object.__setattr__(self, "key", _flow_key(key, "Debounce.key"))
        object.__setattr__(self, "delay_ms", to_ms(delay, "Debounce.delay", allow_zero=False))


@dataclass(frozen=True, slots=True, init=False)
class Throttle:
    """At most ``max`` accepted dispatches per ``window`` per ``key``; the rest are rejected."""

    key: str
    max: int
    window_ms: int

    def __init__(self, key: str, max: int, window: Duration) -> None:
        object.__setattr__(self, "key", _flow_key(key, "Throttle.key"))
        object.__setattr__(self, "max", _positive_int(max, "Throttle.max"))
        object.__setattr__(self, "window_ms", to_ms(window, "Throttle.window", allow_zero=False))


@dataclass(frozen=True, slots=True, init=False)
class Deduplicate:
    """Reject a dispatch while a job holding ``key`` is in one of ``states``."""

    key: str
    states: tuple[JobState, ...]

    def __init__(self, key: str, states: Iterable[str] | None = None) -> None:
        object.__setattr__(self, "key", _flow_key(key, "Deduplicate.key"))
        if states is None:
            chosen = tuple(sorted(NON_TERMINAL_STATES))
        else:
            if isinstance(states, str):
                raise ConfigError("Deduplicate.states must be a list of states, not a string")
            chosen = ()
            for state in states:
                if state not in NON_TERMINAL_STATES:
                    raise ConfigError(
                        f"Deduplicate.states: {state!r} is not one of "
                        f"{sorted(s.value for s in NON_TERMINAL_STATES)}"
                    )
                chosen += (JobState(state),)
            if not chosen:
                raise ConfigError("Deduplicate.states must name at least one state")
        object.__setattr__(self, "states", chosen)


def _flow_key(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
    if len(value) > 512 or any(ord(ch) < 32 for ch in value):
        raise ConfigError(f"{name} must be at most 512 printable characters")
    return value


def coerce_flow(
    value: object, cls: type[Debounce] | type[Throttle] | type[Deduplicate], name: str
) -> Any:
    """Accept the option object itself or the seed's dict shape."""
    if value is None or isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a {cls.__name__} or a dict, got {type(value).__name__}")
    params = dict(value)
    if cls is Deduplicate and "while" in params:
        params["states"] = params.pop("while")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"{name}: {exc}") from None


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One structured log line written by a handler through ``ctx.log``."""

    level: Literal["info", "warn", "error"]
    message: str
    meta: dict[str, Any]
    timestamp: int


def finite_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return float(value)
