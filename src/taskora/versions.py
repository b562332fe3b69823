"""Versioned payloads: a task's ``version``, ``since`` and ``migrate`` (docs/design.md#versions).

A job carries the payload version it was dispatched with (``_v``). The worker runs jobs up to
its task's version: older ones are migrated step by step (``migrate[n]`` turns version ``n``
into ``n + 1``), jobs older than ``since`` fail, and newer ones are never handed to it (the
claim parks them for a worker of their version).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

Migration = Callable[[Any], Any]


class MigrationError(Exception):
    """A job that cannot be brought to the worker's version; its message is the job's error."""


@dataclass(frozen=True, slots=True)
class Versioning:
    """A task's resolved versions: ``steps[n]`` migrates payload version ``n`` to ``n + 1``
    (missing steps are skipped: the input schema's defaults fill in)."""

    version: int = 1
    since: int = 1
    steps: Mapping[int, Migration] = field(default_factory=dict)

    def upgrade(self, data: Any, v: int) -> Any:
        """``data`` of payload version ``v`` (<= version) as the current version expects."""
        if v < self.since:
            raise MigrationError(
                f"job version {v} is below the minimum supported version {self.since} "
                f"(since={self.since}): its migration is no longer available"
            )
        for n in range(v, self.version):
            step = self.steps.get(n)
            if step is None:
                continue
            try:
                data = step(data)
            except Exception as exc:
                name = getattr(step, "__qualname__", repr(step))
                raise MigrationError(
                    f"migration {n} -> {n + 1} ({name}) raised {type(exc).__name__}: {exc}"
                ) from exc
        return data


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be an integer >= 1, got {value!r}")
    return value


def resolve(
    where: str,
    version: int | None,
    since: int | None,
    migrate: Sequence[Migration] | Mapping[int, Migration] | None,
) -> Versioning:
    """Check a declaration and resolve it. A list of migrations starts at ``since``, so it
    fixes the version (``since + len``); an explicit version that disagrees is an error
    (the reference silently ignores it)."""
    s = 1 if since is None else _positive(since, f"{where}: since")
    steps: dict[int, Migration] = {}
    v = 1 if version is None else _positive(version, f"{where}: version")
    if v < s and not (isinstance(migrate, Sequence) and version is None):
        raise ConfigError(f"{where}: version ({v}) must not be below since ({s})")
    if migrate is None:
        pass
    elif isinstance(migrate, Mapping):
        for key, fn in migrate.items():
            _positive(key, f"{where}: migrate key")
            if not s <= key < v:
                raise ConfigError(
                    f"{where}: migrate key {key} is outside since..version-1 ({s}..{v - 1})"
                )
            steps[key] = fn
    elif isinstance(migrate, Sequence) and not isinstance(migrate, str | bytes):
        steps = {s + i: fn for i, fn in enumerate(migrate)}
        v = s + len(steps)
        if version is not None and _positive(version, f"{where}: version") != v:
            raise ConfigError(
                f"{where}: version={version} but since={s} with {len(steps)} migrations "
                f"means version {v}"
            )
    else:
        raise ConfigError(f"{where}: migrate must be a list or a dict, got {migrate!r}")
    for n, fn in steps.items():
        if not callable(fn):
            raise ConfigError(f"{where}: migration {n} -> {n + 1} is not callable: {fn!r}")
    if v < s:
        raise ConfigError(f"{where}: version ({v}) must not be below since ({s})")
    return Versioning(v, s, steps)
