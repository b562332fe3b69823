"""``rediss+sentinel://``: TLS to the sentinels and to the master with the same ``ssl_*``
settings, against one TLS-only group per module (no server or sentinel has a plain port).

And which connect failures are retried: the ones that can mend (a refused or silent port, a
sentinel that cannot be reached) keep their retries; the ones the same settings meet again (a
certificate that does not verify, a client certificate refused, a master name no sentinel
knows) are raised at once. Attempts are counted at ``connect._open``, where every connection
(to a sentinel or a server) is opened.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from typing import Any

import pytest

import taskora
from taskora.backends.redis import connect
from taskora.backends.redis.address import parse_address
from tests.certs import Certs
from tests.redis_sentinel import MASTER_NAME
from tests.redis_sentinel_tls import SECRET, TlsSentinelGroup, make_certs
from tests.test_faults import wait_for

pytestmark = pytest.mark.redis_only


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    return make_certs(tmp_path_factory.mktemp("sentinel-tls"))


@pytest.fixture(scope="module")
def group(certs: Certs) -> Iterator[TlsSentinelGroup]:
    group = TlsSentinelGroup(certs)
    yield group
    group.close()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection attempt, as ``host:port``."""
    attempts: list[str] = []
    real = connect._open

    async def counting(address: Any, protocol_factory: Any, timeout: float) -> Any:
        attempts.append(address.server())
        return await real(address, protocol_factory, timeout)

    monkeypatch.setattr(connect, "_open", counting)
    return attempts


def _client_cert(certs: Certs, ca: str | None = None) -> dict[str, str]:
    return {
        "ssl_ca_certs": ca or str(certs.ca),
        "ssl_certfile": str(certs.client),
        "ssl_keyfile": str(certs.client_key),
    }


def _app(url: str, prefix: str) -> tuple[taskora.App, taskora.Task[int, int]]:
    app = taskora.App(url, prefix=prefix)

    @app.task("double")
    async def double(n: int) -> int:
        return 2 * n

    return app, double


async def _refused(url: str, prefix: str) -> str:
    app, double = _app(url, prefix)
    try:
        with pytest.raises(taskora.BackendError) as info:
            await double.dispatch(1)
    finally:
        await app.close()
    message = str(info.value)
    assert SECRET not in message
    return message


@pytest.mark.parametrize("scheme", ["rediss+sentinel", "valkeys+sentinel"])
def test_tls_sentinel_urls_parse(scheme: str) -> None:
    address = parse_address(
        f"{scheme}://:{SECRET}@10.0.0.1:26379,10.0.0.2/orders"
        "?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/c.key&db=3"
    )
    settings = {"ssl_ca_certs": "/ca.pem", "ssl_certfile": "/c.pem", "ssl_keyfile": "/c.key"}
    assert address.tls and address.tls_options == settings
    assert (address.master_name, address.db) == ("orders", 3)
    assert address.describe() == "rediss+sentinel://10.0.0.1:26379,10.0.0.2:26379/orders?db=3"
    sentinel = address.sentinel("10.0.0.2", 26379)  # the sentinels: the same TLS settings
    assert sentinel.tls and sentinel.tls_options == settings and sentinel.password is None
    master = address.at("10.0.0.9", 6379)
    assert master.tls and master.tls_options == settings and master.password == SECRET
    assert not parse_address("redis+sentinel://h:26379/orders").tls


async def test_round_trip_over_tls_through_the_sentinels(
    group: TlsSentinelGroup, certs: Certs, prefix: str
) -> None:
    url = group.tls_url(**_client_cert(certs))
    app, double = _app(url, prefix)
    assert app.backend.url.startswith("rediss+sentinel://") and SECRET not in app.backend.url
    async with app:
        await app.start(concurrency=2)
        handles = [double.dispatch(n) for n in range(3)]
        assert [await h.wait_for(30) for h in handles] == [0, 2, 4]
        master = group.server(group.master_port())
        with master.client() as admin:
            names = {c["name"].rsplit(":", 1)[0] for c in admin.client_list()}
        # commands, the blocking pop and the result subscriber: all on the master, over TLS
        assert {"taskora:main", "taskora:block:double", "taskora:results"} <= names, names


async def test_a_wrong_ca_is_refused_at_once(
    group: TlsSentinelGroup, certs: Certs, prefix: str, opened: list[str]
) -> None:
    message = await _refused(group.tls_url(**_client_cert(certs, str(certs.other_ca))), prefix)
    print(f"\nwrong CA: {message}")
    assert f"no sentinel named the master {MASTER_NAME!r}" in message
    for sentinel in group.sentinels:
        assert f"the certificate of 127.0.0.1:{sentinel.port} does not verify" in message
    # one pass over the sentinels, no retry: the same CA would fail the same way
    assert opened == [f"127.0.0.1:{s.port}" for s in group.sentinels]


async def test_no_client_certificate_is_refused_at_once(
    group: TlsSentinelGroup, certs: Certs, prefix: str, opened: list[str]
) -> None:
    message = await _refused(group.tls_url(ssl_ca_certs=str(certs.ca)), prefix)
    print(f"\nno client certificate (sentinels): {message}")
    for sentinel in group.sentinels:
        assert f"127.0.0.1:{sentinel.port} refused the client certificate" in message
    assert "certificate required" in message
    # one pass over the sentinels, or two when a TCP reset overtook one's alert (see the
    # master's case below); never the four passes of a transient failure
    one_pass = [f"127.0.0.1:{s.port}" for s in group.sentinels]
    assert opened in (one_pass, one_pass * 2, one_pass * 3), opened


async def test_the_master_refusing_the_client_certificate_is_refused_at_once(
    group: TlsSentinelGroup, certs: Certs, prefix: str, opened: list[str]
) -> None:
    """Straight to the master (TLS 1.3: the refusal comes after the handshake, in place of
    the first reply)."""
    port = group.master_port()
    url = f"rediss://:{SECRET}@127.0.0.1:{port}/0?ssl_ca_certs={certs.ca}"
    message = await _refused(url, prefix)
    print(f"\nno client certificate (master): {message}")
    assert f"127.0.0.1:{port} refused the client certificate" in message
    # No retry once the refusal is read. The first command goes out right after the handshake,
    # and the server closes with it unread: TCP may then send a reset that overtakes the
    # alert, a drop like any other, retried. So an attempt or two before the one that reads
    # the alert, never the four a transient failure gets (test_a_refused_port_keeps_the_retries).
    assert set(opened) == {f"127.0.0.1:{port}"} and len(opened) < 4, opened


async def test_a_master_name_no_sentinel_knows_is_refused_at_once(
    group: TlsSentinelGroup, certs: Certs, prefix: str, opened: list[str]
) -> None:
    message = await _refused(group.tls_url(master="no-such-master", **_client_cert(certs)), prefix)
    assert message.count("does not know it") == len(group.sentinels)
    assert opened == [f"127.0.0.1:{s.port}" for s in group.sentinels]


def _refusing_port() -> socket.socket:
    """A bound, never listening loopback socket: a connect there is refused (and no other
    process can take the port while we hold it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


async def test_an_unreachable_sentinel_keeps_the_retries(
    group: TlsSentinelGroup, certs: Certs, prefix: str, opened: list[str]
) -> None:
    """One sentinel down and the other not knowing the name: the one down might know it
    once it is back, so this is retried (3 retries: 4 passes over both)."""
    with _refusing_port() as down:
        port = down.getsockname()[1]
        alive = group.sentinels[0].port
        url = (
            f"rediss+sentinel://:{SECRET}@127.0.0.1:{port},127.0.0.1:{alive}/no-such-master"
            f"?ssl_ca_certs={certs.ca}&ssl_certfile={certs.client}&ssl_keyfile={certs.client_key}"
        )
        message = await _refused(url, prefix)
    assert f"cannot connect to 127.0.0.1:{port}" in message and "does not know it" in message
    assert opened == [f"127.0.0.1:{port}", f"127.0.0.1:{alive}"] * 4


async def test_a_refused_port_keeps_the_retries(prefix: str, opened: list[str]) -> None:
    with _refusing_port() as down:
        port = down.getsockname()[1]
        message = await _refused(f"redis://:{SECRET}@127.0.0.1:{port}/0", prefix)
    assert f"cannot connect to 127.0.0.1:{port}" in message
    assert opened == [f"127.0.0.1:{port}"] * 4


async def test_a_silent_server_keeps_the_retries(prefix: str, opened: list[str]) -> None:
    """A port that takes the TCP connection (the kernel's backlog) but never answers the
    TLS handshake: each attempt times out, and is retried."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        url = f"rediss://:{SECRET}@127.0.0.1:{port}/0?connect_timeout=0.2"
        message = await _refused(url, prefix)
    assert f"no answer from 127.0.0.1:{port} within 0.2 s" in message
    assert opened == [f"127.0.0.1:{port}"] * 4


async def test_the_clients_follow_a_failover_over_tls(
    group: TlsSentinelGroup, certs: Certs, prefix: str
) -> None:
    """The master SIGKILLed: the sentinels (talking TLS to each other and to the replica)
    promote the replica, and every connection of the app finds it through them. Last in the
    module: it leaves the group without its old master."""
    group.wait_healthy()
    app, double = _app(group.tls_url(**_client_cert(certs)), prefix)
    async with app:
        await app.start(concurrency=2)
        assert await double.dispatch(1).wait_for(30) == 2
        old = group.master_port()
        group.server(old).stop(kill=True)
        await wait_for(lambda: group.master_port() != old, 30, "the promotion")
        assert await double.dispatch(2).wait_for(30) == 4
        with group.server(group.master_port()).client() as admin:
            await wait_for(
                lambda: (
                    {"taskora:main", "taskora:block:double", "taskora:results"}
                    <= {c["name"].rsplit(":", 1)[0] for c in admin.client_list()}
                ),
                30,
                "every connection on the new master",
            )
