"""JSON serialization for job data, results and progress.

JSON only, never pickle: data read back from Redis is untrusted, and JSON keeps the stored
shapes readable by the TypeScript implementation. NaN and infinity are rejected (they are not
JSON and the TypeScript reader refuses them).
"""

from __future__ import annotations

import json
from typing import Any

from .errors import SerializationError

__all__ = ["dumps", "loads"]

_encoder = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))
_decode = json.JSONDecoder().decode


def dumps(value: Any, what: str = "data") -> str:
    """Serialize ``value``; raise SerializationError naming ``what`` if it is not plain JSON."""
    try:
        return _encoder.encode(value)
    except ValueError as exc:  # NaN / infinity, circular references
        raise SerializationError(f"{what} is not JSON-serializable: {exc}") from None
    except TypeError as exc:
        raise SerializationError(f"{what} is not JSON-serializable: {exc}") from None
    except RecursionError:
        raise SerializationError(f"{what} is nested too deeply to serialize") from None


def loads(raw: str | bytes, what: str = "data") -> Any:
    """Parse stored JSON; raise SerializationError (never anything else) when it is malformed."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return _decode(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SerializationError(f"{what} is not valid JSON: {exc}") from None
