"""Durations: parsed once at the edge into integer milliseconds."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from .errors import ConfigError

__all__ = ["Duration", "optional_ms", "to_ms"]

Duration = int | float | timedelta | str

_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def to_ms(value: object, name: str, *, allow_zero: bool = True) -> int:
    """Convert seconds (int/float), a timedelta or ``"500ms" | "5s" | "2m" | "1h" | "1d"`` to ms.

    Raises ConfigError naming ``name`` for negative, NaN, infinite or malformed values.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a duration, got {value!r}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if not match:
            raise ConfigError(
                f"{name}: cannot parse duration {value!r} (use seconds, a timedelta, "
                f"or '500ms', '5s', '2m', '1h', '1d')"
            )
        ms = float(match.group(1)) * _UNIT_MS[match.group(2)]
        return _checked(round(ms), name, allow_zero)
    else:
        raise ConfigError(f"{name} must be a duration, got {type(value).__name__}")
    if math.isnan(seconds) or math.isinf(seconds):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return _checked(round(seconds * 1000), name, allow_zero)


def _checked(ms: int, name: str, allow_zero: bool) -> int:
    if ms < 0:
        raise ConfigError(f"{name} must not be negative, got {ms} ms")
    if ms == 0 and not allow_zero:
        raise ConfigError(f"{name} must be positive")
    return ms


def optional_ms(value: object, name: str) -> int | None:
    """``to_ms`` for timeouts where None means "no limit"."""
    return None if value is None else to_ms(value, name)
