"""The board's security parts (decision 12), free of any web framework: who may log in,
server-side sessions that expire, CSRF tokens, the login rate limit, the open-redirect
guard and what counts as loopback. ``server.py`` wires them into requests."""

from __future__ import annotations

import hmac
import inspect
import ipaddress
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = [
    "Authenticator",
    "LoginLimiter",
    "Session",
    "Sessions",
    "is_loopback_host",
    "safe_next",
    "tokens_equal",
]

Check = Callable[[str, str], "bool | Awaitable[bool]"]
MIN_PASSWORD = 8


class Authenticator:
    """``auth=``: a shared password (a string, e.g. from an environment variable) or a
    callback ``(username, password) -> bool`` (sync or async) for real user checks."""

    def __init__(self, auth: str | Check) -> None:
        if isinstance(auth, str):
            if len(auth) < MIN_PASSWORD:
                raise ConfigError(
                    f"board auth: the password must have at least {MIN_PASSWORD} characters"
                )
            self._password: bytes | None = auth.encode()
            self._check: Check | None = None
        elif callable(auth):
            self._password, self._check = None, auth
        else:
            raise ConfigError(
                "board auth must be a password (str) or a callable (username, password) -> bool"
            )

    async def verify(self, username: str, password: str) -> bool:
        if self._password is not None:
            return hmac.compare_digest(password.encode(), self._password)
        assert self._check is not None
        outcome: Any = self._check(username, password)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        return outcome is True


@dataclass(slots=True)
class Session:
    id: str
    user: str
    csrf: str
    expires: float  # time.monotonic() deadline


@dataclass
class Sessions:
    """Server-side sessions in this process: a random id (the cookie) maps to the user and
    a CSRF token; each expires ``ttl_s`` after login. Bounded: beyond ``limit`` sessions,
    the oldest is dropped (that user logs in again)."""

    ttl_s: float
    limit: int = 10_000
    _by_id: OrderedDict[str, Session] = field(default_factory=OrderedDict)

    def create(self, user: str) -> Session:
        self._sweep()
        session = Session(
            secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), self._now() + self.ttl_s
        )
        self._by_id[session.id] = session
        while len(self._by_id) > self.limit:
            self._by_id.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if session.expires <= self._now():
            del self._by_id[session_id]
            return None
        return session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)

    def _sweep(self) -> None:
        now = self._now()
        while self._by_id:
            first = next(iter(self._by_id.values()))
            if first.expires > now:
                break
            self._by_id.popitem(last=False)

    @staticmethod
    def _now() -> float:
        return time.monotonic()


class LoginLimiter:
    """At most ``attempts`` failed logins per client address in ``window_s`` seconds;
    then that address is refused until the window has room again."""

    def __init__(self, attempts: int = 5, window_s: float = 60.0, clients: int = 10_000) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self.clients = clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str) -> int:
        """0 when ``client`` may try now, else seconds to wait."""
        stamps = self._failures.get(client)
        if stamps is None:
            return 0
        now = time.monotonic()
        while stamps and stamps[0] <= now - self.window_s:
            stamps.popleft()
        if len(stamps) < self.attempts:
            return 0
        return max(1, int(stamps[0] + self.window_s - now + 0.999))

    def failed(self, client: str) -> None:
        stamps = self._failures.setdefault(client, deque())
        self._failures.move_to_end(client)
        stamps.append(time.monotonic())
        while len(self._failures) > self.clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


def safe_next(target: str | None, base: str) -> str:
    """Where to go after login: ``target`` only when it is a path inside the board (no
    scheme, no host, no ``//`` or backslash, no control characters); else the board's home."""
    home = base.rstrip("/") + "/"
    if not target or not isinstance(target, str):
        return home
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in target) or "\\" in target:
        return home
    if "//" in target or not target.startswith("/"):
        return home
    inside = base.rstrip("/")
    if target != inside and not target.startswith(inside + "/"):
        return home
    if "/../" in target + "/" or "/./" in target + "/":
        return home
    return target


def tokens_equal(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())


LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback_host(host: str | None) -> bool:
    """True for loopback addresses and ``localhost`` (a bind address or a Host header's
    host part; a unix socket, None, counts as local)."""
    if host is None:
        return True
    host = host.strip().lower()
    if host.startswith("[") and "]" in host:
        host = host[1 : host.index("]")]
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """The host part of a Host header (``[::1]:8080`` -> ``::1``, ``a:80`` -> ``a``)."""
    header = header.strip()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header
