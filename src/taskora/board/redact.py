"""Redaction: what the board shows never carries a secret (decision 12).

Keys are matched case-insensitively with ``_``/``-``/spaces ignored, as substrings (so
``db_password`` and ``X-Api-Key`` match ``password`` and ``apikey``): a few harmless keys
are hidden too, which is the safe side. Strings anywhere (data, results, errors, log
messages) are scanned for secret-looking values: ``key=value`` / ``"key": "value"`` pairs
with a secret-looking key, ``Bearer``/``Basic`` credentials, passwords in URLs, private-key
blocks and a few well-known token shapes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["DEFAULT_KEYS", "REDACTED", "Redactor"]

REDACTED = "[REDACTED]"
DEFAULT_KEYS = (
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "authorization",
    "credential",
    "privatekey",
    "cookie",
)

_TOKEN_SHAPES = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # cloud access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}\b"  # forge tokens
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}\b"  # chat bot tokens
    r"|\bsk-[A-Za-z0-9_-]{16,}\b"  # API secret keys
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",  # JWTs
    re.DOTALL,
)
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{6,}")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")


def _norm(key: str) -> str:
    return re.sub(r"[\s_\-.]", "", key).lower()


class Redactor:
    """Deep redaction with the default secret words plus ``extra`` ones (keys)."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        words = list(DEFAULT_KEYS)
        for word in extra:
            if not isinstance(word, str) or not _norm(word):
                raise ValueError(f"redact: expected non-empty key names, got {word!r}")
            words.append(_norm(word))
        self.words = tuple(dict.fromkeys(words))
        # a pair in free text: key (containing a secret word, separators allowed inside)
        # then = or : then the value (quoted, or up to a delimiter)
        alternation = "|".join("[-_ ]?".join(re.escape(ch) for ch in word) for word in self.words)
        self._pair = re.compile(
            rf"(?i)([\w.-]*(?:{alternation})[\w.-]*[\"']?\s*[:=]\s*)"
            r"(\"[^\"]*\"|'[^']*'|[^\s,;&}\])\"']+)"
        )

    def secret_key(self, key: str) -> bool:
        normal = _norm(key)
        return any(word in normal for word in self.words)

    def text(self, value: str) -> str:
        """A string with secret-looking values replaced."""
        if not value:
            return value
        value = _TOKEN_SHAPES.sub(REDACTED, value)
        value = _AUTH_SCHEME.sub(lambda m: m.group(1) + m.group(2) + REDACTED, value)
        value = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + "@", value)
        return self._pair.sub(self._pair_sub, value)

    @staticmethod
    def _pair_sub(match: re.Match[str]) -> str:
        if match.group(2).strip("\"'") == REDACTED:
            return match.group(0)
        return match.group(1) + REDACTED

    def __call__(self, value: Any) -> Any:
        """A deep copy of a JSON-like value with secret keys' values and secret-looking
        strings replaced by ``[REDACTED]``."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                k: REDACTED if isinstance(k, str) and self.secret_key(k) else self(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value
