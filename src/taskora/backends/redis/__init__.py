"""The Redis backend (also Valkey)."""

from .backend import WIRE_VERSION, RedisBackend

__all__ = ["WIRE_VERSION", "RedisBackend"]
