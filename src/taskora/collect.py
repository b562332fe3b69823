"""Batch collect: dispatches accumulate per key and run as one job (docs/design.md#collect).

``Collect`` is the task option; ``collect_flow`` turns one dispatch into the item and the
``Flow`` the backend appends it with (one round trip: ``lua/collect.lua`` or
``backends/memory_collect.py``). The flush itself happens in the backend, atomically with
respect to appends, so this module only validates and shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .backends.base import Flow
from .durations import Duration, to_ms
from .errors import ConfigError

__all__ = ["Collect", "CollectInfo", "collect_flow", "collect_key"]


@dataclass(frozen=True, slots=True, init=False)
class Collect:
    """Accumulate dispatches per ``key`` (a string, or a function of the data giving one) and
    run them as one job: after ``delay`` without a new item, at ``max_size`` items, or
    ``max_wait`` after the first item (0 = no limit for either)."""

    key: str | Callable[[Any], str]
    delay_ms: int
    max_size: int
    max_wait_ms: int

    def __init__(
        self,
        key: str | Callable[[Any], str],
        delay: Duration,
        max_size: int = 0,
        max_wait: Duration = 0,
    ) -> None:
        if isinstance(key, str):
            check_key(key)
        elif not callable(key):
            raise ConfigError(
                f"Collect.key must be a string or a function of the data, got {key!r}"
            )
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
            raise ConfigError(f"Collect.max_size must be an integer >= 0, got {max_size!r}")
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "delay_ms", to_ms(delay, "Collect.delay", allow_zero=False))
        object.__setattr__(self, "max_size", max_size)
        object.__setattr__(self, "max_wait_ms", to_ms(max_wait, "Collect.max_wait"))


@dataclass(frozen=True, slots=True)
class CollectInfo:
    """What is buffered under one key: item count, first and last append (epoch ms)."""

    count: int
    oldest_at: int
    newest_at: int


def check_key(key: object) -> str:
    """A collect key is a non-empty string of printable characters (it becomes part of a
    Redis key name; docs/design.md#decisions, 10)."""
    if not isinstance(key, str):
        raise ConfigError(f"collect key must be a string, got {type(key).__name__} {key!r}")
    if not key or len(key) > 512 or any(ord(ch) < 32 for ch in key):
        raise ConfigError(f"collect key must be 1 to 512 printable characters, got {key!r}")
    return key


def collect_key(collect: Collect, data: Any) -> str:
    """The key of one dispatch: the fixed key, or the key function's answer (checked)."""
    key = collect.key
    if isinstance(key, str):
        return key
    return check_key(key(data))


def collect_flow(collect: Collect, key: str) -> Flow:
    return Flow(
        "collect",
        key,
        delay_ms=collect.delay_ms,
        max=collect.max_size,
        window_ms=collect.max_wait_ms,
    )
