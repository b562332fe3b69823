"""``rediss://`` against a real TLS-only redis-server (``--port 0 --tls-port``) with
certificates made here by the ``openssl`` CLI: a CA, a server certificate, a client
certificate (``--tls-auth-clients yes``), and a second CA that signed none of them.

Every connection taskora opens (commands, blocking waits, the result and cancel
subscribers) can only go over TLS: the server has no plain port.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis

import taskora
from tests.certs import Certs, make_ca, make_leaf
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis_only

SECRET = "tls-s3cret-pw"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    where = tmp_path_factory.mktemp("tls")
    ca, ca_key = make_ca(where, "ca")
    server, server_key = make_leaf(where, "server", ca, ca_key, 1001)
    client, client_key = make_leaf(where, "client", ca, ca_key, 1002)
    other_ca, _ = make_ca(where, "other-ca")
    return Certs(ca, server, server_key, client, client_key, other_ca)


class TlsServer(RedisServer):
    """A redis-server listening on TLS only, asking clients for a certificate."""

    def __init__(self, certs: Certs) -> None:
        self.certs = certs
        super().__init__(
            "--port",
            "0",
            "--tls-cert-file",
            str(certs.server),
            "--tls-key-file",
            str(certs.server_key),
            "--tls-ca-cert-file",
            str(certs.ca),
            "--tls-auth-clients",
            "yes",
            "--requirepass",
            SECRET,
        )

    def args(self) -> list[str]:
        args = [self.binary, "--tls-port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")]
        return [*args, "--save", "", "--appendonly", "no", *self.extra]

    def client(self, timeout: float = 10) -> redis.Redis:
        return redis.Redis(
            port=self.port,
            password=SECRET,
            ssl=True,
            ssl_ca_certs=str(self.certs.ca),
            ssl_certfile=str(self.certs.client),
            ssl_keyfile=str(self.certs.client_key),
            socket_timeout=timeout,
        )

    def tls_url(self, password: str = SECRET, **settings: str) -> str:
        return f"rediss://:{password}@127.0.0.1:{self.port}/0?{urlencode(settings)}"


@pytest.fixture(scope="module")
def tls_server(certs: Certs) -> Iterator[TlsServer]:
    try:
        server = TlsServer(certs)
    except RuntimeError as exc:
        pytest.skip(f"this redis-server has no TLS: {exc}")
    yield server
    server.close()


def _app(url: str, prefix: str) -> tuple[taskora.App, taskora.Task[dict[str, float], float]]:
    app = taskora.App(url, prefix=prefix)

    @app.task("echo")
    async def echo(data: dict[str, float]) -> float:
        import asyncio

        await asyncio.sleep(data["sleep"])
        return data["n"]

    return app, echo


async def test_round_trip_and_pubsub_over_tls_with_a_client_certificate(
    tls_server: TlsServer, certs: Certs, prefix: str
) -> None:
    url = tls_server.tls_url(
        ssl_ca_certs=str(certs.ca),
        ssl_certfile=str(certs.client),
        ssl_keyfile=str(certs.client_key),
    )
    app, echo = _app(url, prefix)
    assert SECRET not in repr(app.backend) and app.backend.url.startswith("rediss://")
    async with app:
        await app.start(concurrency=4)
        handles = [echo.dispatch({"n": i, "sleep": 0.2}) for i in range(5)]
        # waiting before the jobs end: the results come by pub/sub
        assert [await handle.wait_for(30) for handle in handles] == [0, 1, 2, 3, 4]
        with tls_server.client() as admin:
            roles = {c["name"].rsplit(":", 1)[0]: c["cmd"] for c in admin.client_list()}
        assert roles["taskora:results"] == "subscribe", roles
        assert roles["taskora:cancel"] == "subscribe", roles
        assert "taskora:main" in roles and "taskora:block:echo" in roles, roles


async def test_a_wrong_ca_is_refused_with_a_clear_error(
    tls_server: TlsServer, certs: Certs, prefix: str
) -> None:
    url = tls_server.tls_url(
        ssl_ca_certs=str(certs.other_ca),
        ssl_certfile=str(certs.client),
        ssl_keyfile=str(certs.client_key),
    )
    app, echo = _app(url, prefix)
    with pytest.raises(taskora.BackendError) as info:
        await echo.dispatch({"n": 1, "sleep": 0})
    message = str(info.value)
    print(f"\nwrong CA: {message}")
    assert "does not verify" in message and f"127.0.0.1:{tls_server.port}" in message
    assert SECRET not in message
    await app.close()


async def test_verification_is_on_by_default(tls_server: TlsServer, prefix: str) -> None:
    app, echo = _app(tls_server.tls_url(), prefix)  # no CA given: the system's CAs
    with pytest.raises(taskora.BackendError) as info:
        await echo.dispatch({"n": 1, "sleep": 0})
    assert "does not verify" in str(info.value) and SECRET not in str(info.value)
    await app.close()


async def test_no_client_certificate_is_refused(
    tls_server: TlsServer, certs: Certs, prefix: str
) -> None:
    app, echo = _app(tls_server.tls_url(ssl_ca_certs=str(certs.ca)), prefix)
    with pytest.raises(taskora.BackendError) as info:
        await echo.dispatch({"n": 1, "sleep": 0})
    print(f"\nno client certificate: {info.value}")
    assert "certificate required" in str(info.value) and SECRET not in str(info.value)
    await app.close()


async def test_unreadable_certificate_files_are_named(
    tls_server: TlsServer, certs: Certs, tmp_path: Path, prefix: str
) -> None:
    missing = tmp_path / "nope.pem"
    app, echo = _app(tls_server.tls_url(ssl_ca_certs=str(missing)), prefix)
    with pytest.raises(taskora.BackendError) as info:
        await echo.dispatch({"n": 1, "sleep": 0})
    assert "ssl_ca_certs" in str(info.value) and str(missing) in str(info.value)
    await app.close()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    url = tls_server.tls_url(ssl_ca_certs=str(certs.ca), ssl_certfile=str(garbage))
    app, echo = _app(url, prefix)
    with pytest.raises(taskora.BackendError) as info:
        await echo.dispatch({"n": 1, "sleep": 0})
    assert "ssl_certfile" in str(info.value)
    await app.close()
