"""Backends: where jobs live. ``backend_from_url`` picks one by URL scheme, importing lazily."""

from __future__ import annotations

from .base import Backend

__all__ = ["Backend", "backend_from_url"]


def backend_from_url(url: str, prefix: str | None = None) -> Backend:
    from ..errors import ConfigError

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        from .memory import MemoryBackend

        return MemoryBackend(prefix=prefix)
    if scheme in ("redis", "rediss", "unix", "valkey", "valkeys"):
        try:
            from .redis import RedisBackend
        except ImportError as exc:  # pragma: no cover - redis is a hard dependency today
            raise ConfigError(
                f"the Redis backend needs redis-py: pip install 'taskora' ({exc})"
            ) from exc
        return RedisBackend(url, prefix=prefix)
    raise ConfigError(
        f"unsupported backend URL {_safe(url)!r}: use redis://, rediss://, unix:// or memory://"
    )


def _safe(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url
