"""``RedisBackend(client=...)`` carries every connection setting of a redis-py client over
and opens its own connections with them: address, database, credentials, unix socket, TLS."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.credentials import UsernamePasswordCredentialProvider

import taskora
from taskora.backends.redis.resp import ssl_context
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis_only


def test_tcp_settings_are_carried() -> None:
    client = aioredis.Redis(
        host="127.0.0.2", port=6390, db=3, username="alice", password="pw", socket_connect_timeout=2
    )
    address = taskora.RedisBackend(client=client).address
    assert (address.host, address.port, address.db) == ("127.0.0.2", 6390, 3)
    assert (address.username, address.password) == ("alice", "pw")
    assert address.connect_timeout == 2 and not address.tls


def test_unix_socket_and_credential_provider_are_carried() -> None:
    provider = UsernamePasswordCredentialProvider("bob", "secret")
    client = redis.Redis(unix_socket_path="/tmp/r.sock", db=2, credential_provider=provider)
    address = taskora.RedisBackend(client=client).address
    assert (address.path, address.db, address.username, address.password) == (
        "/tmp/r.sock",
        2,
        "bob",
        "secret",
    )
    assert "secret" not in repr(taskora.RedisBackend(client=client))


def test_tls_settings_are_carried_into_the_tls_context(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    client = aioredis.Redis(
        host="127.0.0.1",
        port=6390,
        ssl=True,
        ssl_ca_certs=str(cert),
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        ssl_cert_reqs="optional",
        ssl_check_hostname=False,
        ssl_min_version=ssl.TLSVersion.TLSv1_3,
        ssl_ciphers="ECDHE+AESGCM",
    )
    address = taskora.RedisBackend(client=client).address
    assert address.tls
    assert address.describe().startswith("rediss://")
    options = address.tls_options
    assert options["ssl_ca_certs"] == str(cert) and options["ssl_keyfile"] == str(key)
    context = ssl_context(options)
    assert context.verify_mode == ssl.CERT_OPTIONAL
    assert context.check_hostname is False
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert len(context.get_ca_certs()) == 1  # the CA file was loaded


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def _round_trip(client: Any, prefix: str) -> None:
    """A job dispatched and run through an App built on the client's settings."""
    app = taskora.App(taskora.RedisBackend(client=client), prefix=prefix)

    @app.task("echo")
    async def echo(data: dict[str, int]) -> int:
        return data["n"]

    try:
        async with app:
            assert await echo.dispatch({"n": 7}).wait_for(30) == 7
    finally:
        await app.close()


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[RedisServer]:
    sock = tmp_path / "redis.sock"
    server = RedisServer("--unixsocket", str(sock), "--unixsocketperm", "700")
    yield server
    server.close()


async def test_unix_socket_user_password_and_db_work_for_real(
    private_server: RedisServer, tmp_path: Path, prefix: str
) -> None:
    with private_server.client() as admin:
        admin.execute_command("ACL", "SETUSER", "carol", "on", ">pa55", "~*", "&*", "+@all")
        admin.config_set("requirepass", "unused-default")
    client = aioredis.Redis(
        unix_socket_path=str(tmp_path / "redis.sock"), db=5, username="carol", password="pa55"
    )
    try:
        await _round_trip(client, prefix)
        assert await client.dbsize() > 0  # taskora wrote into db 5, as the client would
    finally:
        await client.aclose()


async def test_tls_works_for_real(tmp_path: Path, prefix: str) -> None:
    cert, key = _self_signed(tmp_path)
    tls_port = free_port()
    try:
        server = RedisServer(
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
        )
    except RuntimeError as exc:
        pytest.skip(f"this redis-server has no TLS: {exc}")
    try:
        client = aioredis.Redis(host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_certs=str(cert))
        try:
            await _round_trip(client, prefix)
        finally:
            await client.aclose()
        # Without the CA the server's certificate is refused: the settings really apply.
        untrusted = aioredis.Redis(host="127.0.0.1", port=tls_port, ssl=True)
        with pytest.raises(taskora.BackendError):
            await _round_trip(untrusted, prefix)
        await untrusted.aclose()
    finally:
        server.close()
