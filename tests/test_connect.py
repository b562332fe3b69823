"""Where to connect: URL forms, and the one clear error each bad setting or unreachable
server gives, without the password (TLS errors: test_tls.py; Sentinel: test_sentinel.py)."""

from __future__ import annotations

import pytest

import taskora
from taskora.backends.redis.address import parse_address
from tests.redis_server import refused_port

SECRET = "s3cret-pw"


def test_sentinel_urls_parse() -> None:
    address = parse_address(
        f"redis+sentinel://app:{SECRET}@10.0.0.1:26379,[::1]:26380,sentinel-3/orders"
        "?db=2&sentinel_password=other"
    )
    assert address.sentinels == (("10.0.0.1", 26379), ("::1", 26380), ("sentinel-3", 26379))
    assert (address.master_name, address.db, address.username) == ("orders", 2, "app")
    assert address.password == SECRET and address.sentinel_password == "other"
    described = address.describe()
    assert described == (
        "redis+sentinel://app@10.0.0.1:26379,[::1]:26380,sentinel-3:26379/orders?db=2"
    )
    assert SECRET not in repr(address) and "other" not in repr(address)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://h:26379", "names the master"),
        ("redis+sentinel://h:26379/", "names the master"),
        ("redis+sentinel:///mymaster", "at least one sentinel"),
        ("redis+sentinel://h:port/mymaster", "port"),
        ("redis+sentinel://h:26379/mymaster?db=x", "database"),
        ("redis://h:99999/0", "port"),
        ("redis://h:6379/zero", "database"),
        ("redis://h:6379/0?connect_timeout=soon", "connect_timeout"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(taskora.ConfigError) as info:
        taskora.App(url.replace("://", f"://u:{SECRET}@"))
    assert problem in str(info.value) and SECRET not in str(info.value)


async def test_an_unreachable_server_is_named_without_the_password() -> None:
    with refused_port() as port:
        app = taskora.App(f"redis://u:{SECRET}@127.0.0.1:{port}/0")

        @app.task()
        async def noop(data: None) -> None:
            return None

        with pytest.raises(taskora.BackendError) as info:
            await noop.dispatch(None)
        assert str(info.value) == (
            f"Redis at redis://u@127.0.0.1:{port}/0: "
            f"cannot connect to 127.0.0.1:{port}: Connection refused"
        )
        await app.close()
