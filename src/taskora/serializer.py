"""JSON serialization for job data, results and progress.

JSON only, never pickle: data read back from Redis is untrusted, and JSON keeps the stored
shapes readable by the TypeScript implementation. NaN and infinity are rejected (they are not
JSON and the TypeScript reader refuses them).
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Callable
from typing import Any

from .errors import SerializationError

__all__ = ["dumps", "loads"]

_encoder = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))
_encode = _encoder.encode
try:  # the C encoder that JSONEncoder.encode builds per call, behind two Python frames
    from _json import make_encoder as _c_encoder
except ImportError:  # pragma: no cover - a Python without the C accelerator
    _c_encoder = None  # type: ignore[assignment,misc]
_encode_default = _encoder.default
_encode_string = json.encoder.encode_basestring  # ensure_ascii=False: what _encoder uses
_decoder = json.JSONDecoder()
_decode = _decoder.decode
# the decoder's own scanner, called directly for the usual text (a value with nothing around
# it): JSONDecoder.decode adds two whitespace regex matches around this very call
_scan = json.scanner.make_scanner(_decoder)  # type: ignore[arg-type]  # (typeshed: a duck type)


def dumps(value: Any, what: str | Callable[[], str] = "data") -> str:
    """Serialize ``value``; raise SerializationError naming ``what`` (a string, or a
    callable that makes one only when needed) if it is not plain JSON."""
    try:
        if _c_encoder is None or type(value) is str:
            return _encode(value)
        # exactly what _encode does for a non-string: a fresh circular-reference memo each time
        encode = _c_encoder(
            {}, _encode_default, _encode_string, None, ":", ",", False, False, False
        )
        return "".join(encode(value, 0))
    except (ValueError, TypeError) as exc:  # NaN / infinity, circular references, objects
        name = what if isinstance(what, str) else what()
        raise SerializationError(f"{name} is not JSON-serializable: {exc}") from None
    except RecursionError:
        name = what if isinstance(what, str) else what()
        raise SerializationError(f"{name} is nested too deeply to serialize") from None


def loads(raw: str | bytes, what: str = "data") -> Any:
    """Parse stored JSON; raise SerializationError (never anything else) when it is malformed."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        try:
            value, end = _scan(text, 0)
        except StopIteration:  # empty, or not a JSON value: decode reports it
            return _decode(text)
        if end != len(text):  # whitespace or more after the value: decode has the rules
            return _decode(text)
        return value
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SerializationError(f"{what} is not valid JSON: {exc}") from None
