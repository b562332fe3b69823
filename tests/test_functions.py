"""The scripts as a Redis Functions library (scripts.py): loaded once per server, named by
its code's hash, reloaded when it is gone, and EVALSHA where it cannot be loaded.

The rest of the suite runs on Functions (the test servers are Redis >= 7); the contract
suite (tests/test_backend_contract.py) runs once more with EVALSHA forced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

import taskora
from taskora.backends.redis import RedisBackend
from taskora.backends.redis.scripts import (
    _REFUSED_OVER_MAXMEMORY,
    LIBRARY,
    LIBRARY_BODY,
    SCRIPTS,
    SOURCES,
    library,
)
from tests.redis_server import RedisServer, script_calls


@pytest.fixture
def server() -> Iterator[RedisServer]:
    s = RedisServer()
    yield s
    s.close()


def _libraries(server: RedisServer) -> dict[str, dict[str, set[str]]]:
    """FUNCTION LIST: library name -> function name -> its flags."""
    out: dict[str, dict[str, set[str]]] = {}
    with server.client() as r:
        lib: dict[bytes, Any]
        for lib in r.execute_command("FUNCTION", "LIST"):  # redis-py makes each a dict
            out[lib[b"library_name"].decode()] = {
                fn[b"name"].decode(): {flag.decode() for flag in fn[b"flags"]}
                for fn in lib[b"functions"]
            }
    return out


def _app(server: RedisServer, prefix: str) -> tuple[taskora.App, Any]:
    app = taskora.App(server.url, prefix=prefix)

    @app.task("double")
    async def double(n: int) -> int:
        return 2 * n

    return app, double


# -- the library's text --------------------------------------------------------------------------
def test_the_library_is_made_from_the_script_files() -> None:
    """Each file's text is in the library as it is (nothing copied by hand); the name and the
    function names carry the hash of the code, so another version's library is another one."""
    assert LIBRARY.code.startswith(f"#!lua name={LIBRARY.name}\n")
    for name, source in SOURCES.items():
        assert source in LIBRARY.code
        assert SCRIPTS[name].function == LIBRARY.functions[name] == f"{LIBRARY.name}_{name}"
    assert library(LIBRARY_BODY) == LIBRARY
    other = library(LIBRARY_BODY + "\n-- another version")
    assert other.name != LIBRARY.name
    assert not set(other.functions.values()) & set(LIBRARY.functions.values())


# -- on a server ---------------------------------------------------------------------------------
async def test_the_library_is_loaded_once_with_the_flags_of_each_script(
    server: RedisServer,
) -> None:
    apps = [_app(server, "lib")[0] for _ in range(4)]
    try:
        # connected at once: all but one find it loaded ("already exists"), which is success
        backends = await asyncio.gather(*(app._connected_backend() for app in apps))
        assert all(b.client.functions for b in backends)
    finally:
        for app in apps:
            await app.close()
    assert _libraries(server) == {
        LIBRARY.name: {
            LIBRARY.functions[name]: set() if name in _REFUSED_OVER_MAXMEMORY else {"allow-oom"}
            for name in SCRIPTS
        }
    }
    with server.client() as r:
        assert r.info("commandstats")["cmdstat_function|load"]["calls"] == 4


async def test_two_versions_run_side_by_side(server: RedisServer) -> None:
    """A rolling deploy: another taskora version's library (another hash) is loaded beside
    ours, and each version's calls run its own functions."""
    other = library(
        LIBRARY_BODY.replace("local EVENTS_MAXLEN = '10000'", "local EVENTS_MAXLEN = '9999'")
    )
    assert other.name != LIBRARY.name
    with server.client() as r:
        r.execute_command("FUNCTION", "LOAD", other.code)
    app, double = _app(server, "two")
    try:
        async with app:
            assert await double.dispatch(21).wait_for(20) == 42
    finally:
        await app.close()
    assert set(_libraries(server)) == {LIBRARY.name, other.name}
    with server.client() as r:
        stats = r.info("commandstats")
        assert script_calls(r, "fcall") > 0 and script_calls(r, "evalsha") == 0
        assert stats["cmdstat_function|load"]["calls"] == 2


@pytest.mark.parametrize("functions", [True, False], ids=["fcall", "evalsha"])
async def test_a_flushed_server_gets_its_scripts_again(
    server: RedisServer, functions: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FUNCTION FLUSH and SCRIPT FLUSH (as a restart without persistence or a promoted
    replica loses them): dispatch, claim and finish load what they miss and go on."""
    monkeypatch.setattr(RedisBackend, "functions", functions)
    app, double = _app(server, "flush")
    try:
        async with app:
            assert await double.dispatch(1).wait_for(20) == 2
            for round_ in range(3):
                with server.client() as r:
                    r.execute_command("FUNCTION", "FLUSH")
                    r.script_flush()
                handles = [double.dispatch(i) for i in range(10)]
                assert [await h.wait_for(20) for h in handles] == [2 * i for i in range(10)]
                assert (LIBRARY.name in _libraries(server)) is functions, round_
    finally:
        await app.close()
    with server.client() as r:
        assert script_calls(r, "evalsha" if functions else "fcall") == 0


async def test_a_full_redis_at_connect_runs_the_scripts_by_evalsha(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis refuses FUNCTION LOAD over maxmemory (not SCRIPT LOAD): a process that connects
    then (a new version deployed onto a full Redis) runs EVALSHA, as before Functions, and
    works once memory is freed."""
    server = RedisServer("--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
    app, double = _app(server, "full")
    try:
        with monkeypatch.context() as m:  # taskora was here before (its meta hash is)
            m.setattr(RedisBackend, "functions", False)
            earlier = _app(server, "full")[0]
            await earlier._connected_backend()
            await earlier.close()
        with server.client() as r:
            n = 0
            with pytest.raises(Exception, match="maxmemory"):
                while n < 10_000:
                    r.set(f"filler:{n}", "x" * 10_000)
                    n += 1
        with caplog.at_level(logging.INFO, logger="taskora"):
            backend = await app._connected_backend()
        assert not backend.client.functions
        assert any("EVALSHA" in r.getMessage() and "OOM" in r.getMessage() for r in caplog.records)
        with server.client() as r:
            r.delete(*(f"filler:{i}" for i in range(n)))
        async with app:
            assert await double.dispatch(4).wait_for(20) == 8
        with server.client() as r:
            assert script_calls(r, "fcall") == 0 and script_calls(r, "evalsha") > 0
        assert _libraries(server) == {}
    finally:
        await app.close()
        server.close()


async def test_a_user_not_allowed_functions_runs_the_scripts_by_evalsha(
    server: RedisServer,
) -> None:
    with server.client() as r:
        r.execute_command(
            "ACL", "SETUSER", "nofn", "on", ">pw", "~*", "&*", "+@all", "-function", "-fcall"
        )
    app = taskora.App(f"redis://nofn:pw@127.0.0.1:{server.port}/0", prefix="acl")
    double = app.task("double")(lambda n: 2 * n)
    try:
        async with app:
            assert await double.dispatch(5).wait_for(20) == 10
            assert not (await app._connected_backend()).client.functions
    finally:
        await app.close()
    assert _libraries(server) == {}
