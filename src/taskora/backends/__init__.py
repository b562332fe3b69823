"""Backends: where jobs live. ``backend_from_url`` picks one by URL scheme, importing lazily.

This module is the one place that names the concrete backends; each is imported only when
used (a URL with its scheme, or the ``MemoryBackend`` / ``RedisBackend`` attribute), so the
core never loads hiredis or the Redis client code it does not need (docs/design.md#layers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Backend

if TYPE_CHECKING:
    from .memory import MemoryBackend
    from .redis import RedisBackend

__all__ = ["Backend", "MemoryBackend", "RedisBackend", "backend_from_url"]


def __getattr__(name: str) -> Any:
    if name == "MemoryBackend":
        from .memory import MemoryBackend

        return MemoryBackend
    if name == "RedisBackend":
        from .redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module 'taskora.backends' has no attribute {name!r}")


def backend_from_url(url: str, prefix: str | None = None) -> Backend:
    from ..errors import ConfigError

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        from .memory import MemoryBackend

        return MemoryBackend(prefix=prefix)
    if scheme in (
        "redis",
        "rediss",
        "unix",
        "valkey",
        "valkeys",
        "redis+sentinel",
        "valkey+sentinel",
        "rediss+sentinel",
        "valkeys+sentinel",
    ):
        from .redis import RedisBackend

        return RedisBackend(url, prefix=prefix)
    raise ConfigError(
        f"unsupported backend URL {_safe(url)!r}: use redis://, rediss://, "
        "redis+sentinel://, rediss+sentinel://, unix:// or memory://"
    )


def _safe(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url
