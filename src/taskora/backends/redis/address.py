"""Where and how to reach Redis: the URL forms and the TLS settings.

``redis://``, ``rediss://`` (TLS), ``unix://`` and ``redis+sentinel://`` (the master found
through Sentinel; ``rediss+sentinel://`` over TLS) all parse into one :class:`Address`.
Errors name the problem and never show the password.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["SENTINEL_SCHEMES", "Address", "parse_address", "ssl_context"]

SENTINEL_SCHEMES = ("redis+sentinel", "valkey+sentinel", "rediss+sentinel", "valkeys+sentinel")


@dataclass(frozen=True)
class Address:
    """Where and how to connect. ``repr`` and ``describe()`` never show a password.

    With ``sentinels`` set, ``host``/``port`` are unused: each new connection asks the
    sentinels in turn where the master ``master_name`` is now (see ``connect.py``); with
    ``tls``, sentinels and master alike are reached over TLS with the same settings.
    """

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_options: dict[str, Any] = field(default_factory=dict, repr=False)
    connect_timeout: float = 5.0
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        user = f"{self.username}@" if self.username else ""
        if self.sentinels:
            hosts = ",".join(_hostport(host, port) for host, port in self.sentinels)
            db = f"?db={self.db}" if self.db else ""
            scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
            return f"{scheme}://{user}{hosts}/{self.master_name}{db}"
        if self.path:
            return f"unix://{self.path}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{user}{_hostport(self.host, self.port)}/{self.db}"

    def server(self) -> str:
        """The one server this address names: ``host:port`` or the socket path."""
        return self.path or _hostport(self.host, self.port)

    def at(self, host: str, port: int) -> Address:
        """The same settings for one server (a master Sentinel named, a cluster node)."""
        return replace(self, host=host, port=port, path=None, sentinels=())

    def sentinel(self, host: str, port: int) -> Address:
        """How to reach one of the sentinels: their own credentials, no database, the same
        TLS settings as the master."""
        return Address(
            host=host,
            port=port,
            username=self.sentinel_username,
            password=self.sentinel_password,
            tls=self.tls,
            tls_options=self.tls_options,
            connect_timeout=self.connect_timeout,
        )


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(url: str) -> Address:
    """Parse ``redis://[user:pass@]host:port/db``, ``rediss://...`` (TLS, ``ssl_*`` query
    settings), ``unix:///path?db=`` or ``redis+sentinel://[user:pass@]host:port[,host:port]
    /master-name[?db=]`` (``rediss+sentinel://``: TLS). A ``ValueError`` says what is wrong,
    without the password."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(
            "a Redis URL starts with redis://, rediss://, unix:// or redis+sentinel://"
        )
    if scheme in SENTINEL_SCHEMES:
        return _parse_sentinel(rest, tls=scheme.split("+")[0] in ("rediss", "valkeys"))
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("the port of the Redis URL is not a number from 0 to 65535") from None
    query = _query(parts.query)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    timeout = _timeout(query)
    if scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL needs the socket path: unix:///run/redis.sock")
        db = _db(query.get("db", "0"))
        return Address(
            path=parts.path,
            db=db,
            username=username,
            password=password,
            connect_timeout=timeout,
        )
    if scheme not in ("redis", "rediss", "valkey", "valkeys"):
        raise ValueError(f"unknown Redis URL scheme {scheme!r}")
    return Address(
        host=parts.hostname or "127.0.0.1",
        port=port or 6379,
        db=_db((parts.path or "/").lstrip("/") or query.get("db", "0")),
        username=username,
        password=password,
        tls=scheme in ("rediss", "valkeys"),
        tls_options=_tls_options(query),
        connect_timeout=timeout,
    )


def _parse_sentinel(rest: str, tls: bool) -> Address:
    netloc, _, tail = rest.partition("/")
    path, _, query_text = tail.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_sentinel_host(item) for item in hosts.split(",") if item.strip())
    if not sentinels:
        raise ValueError("a redis+sentinel:// URL needs at least one sentinel host:port")
    master_name = unquote(path.strip("/"))
    if not master_name or "/" in master_name:
        raise ValueError(
            "a redis+sentinel:// URL names the master as its path: "
            "redis+sentinel://host:26379,host2:26379/mymaster"
        )
    query = _query(query_text)
    return Address(
        db=_db(query.get("db", "0")),
        username=username,
        password=password,
        connect_timeout=_timeout(query),
        sentinels=sentinels,
        master_name=master_name,
        sentinel_username=query.get("sentinel_username"),
        sentinel_password=query.get("sentinel_password"),
        tls=tls,
        tls_options=_tls_options(query),
    )


def _sentinel_host(item: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [::1]:26379
        host, _, port_text = item[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not port_text:
        return host, 26379
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"sentinel {host!r}: the port is not a number from 1 to 65535")
    return host, int(port_text)


def _tls_options(query: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in query.items() if k.startswith("ssl_")}


def _query(text: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(text).items()}


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"the Redis database must be a number, not {text!r}")
    return int(text)


def _timeout(query: Mapping[str, str]) -> float:
    text = query.get("connect_timeout") or query.get("socket_connect_timeout")
    if text is None:
        return 5.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 3600:
        raise ValueError(f"connect_timeout must be a number of seconds, not {text!r}")
    return value


_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "cert_none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "cert_optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
    "cert_required": ssl.CERT_REQUIRED,
}


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


def ssl_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    """A TLS context from redis-py's ``ssl_*`` settings (URL query strings or a client's).
    The server's certificate is verified unless ``ssl_cert_reqs=none``. A file that cannot
    be read raises ``ValueError`` naming the setting."""
    reqs = options.get("ssl_cert_reqs") or "required"
    if isinstance(reqs, str):
        if reqs.lower() not in _CERT_REQS:
            raise ValueError(f"ssl_cert_reqs must be one of none, optional, required: {reqs!r}")
        verify = _CERT_REQS[reqs.lower()]
    else:
        verify = ssl.VerifyMode(reqs)
    with _reading("ssl_ca_certs / ssl_ca_path / ssl_ca_data", options.get("ssl_ca_certs")):
        context = ssl.create_default_context(
            cafile=options.get("ssl_ca_certs"),
            capath=options.get("ssl_ca_path"),
            cadata=options.get("ssl_ca_data"),
        )
    check = options.get("ssl_check_hostname")
    context.check_hostname = verify != ssl.CERT_NONE and (check is None or _flag(check))
    context.verify_mode = verify
    for flag in options.get("ssl_include_verify_flags") or ():
        context.verify_flags |= flag
    for flag in options.get("ssl_exclude_verify_flags") or ():
        context.verify_flags &= ~flag
    if options.get("ssl_certfile"):
        with _reading("ssl_certfile / ssl_keyfile", options["ssl_certfile"]):
            context.load_cert_chain(
                options["ssl_certfile"], options.get("ssl_keyfile"), options.get("ssl_password")
            )
    elif options.get("ssl_keyfile"):
        raise ValueError("ssl_keyfile is set without ssl_certfile")
    if options.get("ssl_min_version") is not None:
        context.minimum_version = ssl.TLSVersion(int(options["ssl_min_version"]))
    if options.get("ssl_ciphers"):
        context.set_ciphers(options["ssl_ciphers"])
    return context


@contextlib.contextmanager
def _reading(setting: str, path: object) -> Iterator[None]:
    """Turn an unreadable certificate or key file into a ValueError naming the setting."""
    try:
        yield
    except ssl.SSLError as exc:
        raise ValueError(f"{setting}: not a valid PEM file ({exc.reason})") from None
    except OSError as exc:
        where = f" {path}" if path else ""
        raise ValueError(f"{setting}{where}: {exc.strerror or exc}") from None
