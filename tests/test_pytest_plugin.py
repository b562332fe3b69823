"""The pytest plugin (entry point ``pytest11``): fixtures taskora_app and taskora_runner."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
import redis

from tests.redis_server import RedisServer

pytest_plugins = ["pytester"]

CONFTEST = """
import pytest
import taskora

app = taskora.App("memory://")
seen = []

@app.task(retry=taskora.Retry(attempts=2, delay="1h"))
async def greet(name: str, ctx: taskora.Context) -> str:
    if ctx.attempt == 1:
        raise RuntimeError("first try fails")
    seen.append(name)
    return "hi " + name

@pytest.fixture
def taskora_app():
    return app
"""

TESTS = """
import conftest

async def test_execute(taskora_runner):
    execution = await taskora_runner.execute(conftest.greet, "ada")
    assert (execution.state, execution.attempts, execution.result) == ("completed", 2, "hi ada")

async def test_advance(taskora_runner):
    taskora_runner.dispatch(conftest.greet, "bob", delay="1d")
    await taskora_runner.advance("1d")
    assert conftest.seen[-1] == "ada"  # its first attempt failed: retried 1 h on
    await taskora_runner.advance("2h")
    assert conftest.seen[-1] == "bob"

def test_swapped(taskora_runner):
    assert conftest.app.backend is taskora_runner.backend
"""


def test_registered_by_entry_point() -> None:
    names = {ep.value for ep in entry_points(group="pytest11")}
    assert "taskora.pytest_plugin" in names


def test_fixtures_run_a_users_tasks_in_virtual_time(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_user=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_dispose_restores_the_original_backend(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_user="""
import conftest
original = conftest.app.backend

def test_one(taskora_runner):
    assert conftest.app.backend is not original

def test_two():
    assert conftest.app.backend is original
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_without_an_app_fixture_the_error_says_what_to_do(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_x(taskora_runner):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*define a fixture named taskora_app*"])


REDIS_CONFTEST = """
import pytest
import taskora

app = taskora.App("memory://")
original = app.backend

@app.task
async def greet(name: str) -> str:
    return "hi " + name

@pytest.fixture
def taskora_app():
    return app
"""

REDIS_TESTS = """
import pathlib
import conftest

def note(app):
    with pathlib.Path("prefixes.txt").open("a") as out:
        out.write(app.prefix + "\\n")

async def test_a_round_trip_through_redis(taskora_redis_app):
    app = taskora_redis_app
    assert app is conftest.app and type(app.backend).__name__ == "RedisBackend"
    note(app)
    async with app:
        assert await conftest.greet.dispatch("ada").wait_for(30) == "hi ada"

async def test_keys_left_behind_are_deleted(taskora_redis_app):
    app = taskora_redis_app
    note(app)
    await conftest.greet.dispatch("bob", delay="1h")
    assert (await app.counts("greet"))["delayed"] == 1
    await app.close()

def test_the_app_is_back_afterwards():
    assert conftest.app.backend is conftest.original and conftest.app.prefix is None

async def test_left_running(taskora_redis_app):
    note(taskora_redis_app)
    await taskora_redis_app.start()
"""


def test_redis_app_gets_a_fresh_prefix_and_its_keys_are_deleted(
    pytester: pytest.Pytester,
) -> None:
    server = RedisServer()
    try:
        pytester.makeini("[pytest]\nasyncio_mode = auto\n")
        pytester.makeconftest(REDIS_CONFTEST)
        pytester.makepyfile(test_user=REDIS_TESTS)
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "--taskora-redis-url", server.url
        )
        result.assert_outcomes(passed=4, errors=1)  # the last one left its app running
        result.stdout.fnmatch_lines(["*ERROR at teardown of test_left_running*"])
        result.stdout.fnmatch_lines(["*left running workers; close it inside the block*"])
        prefixes = (pytester.path / "prefixes.txt").read_text().split()
        assert len(prefixes) == 3 and len(set(prefixes)) == 3
        with redis.Redis(port=server.port) as client:
            assert client.dbsize() == 0  # both tests wrote keys; none is left
    finally:
        server.close()


def test_redis_app_is_skipped_without_the_option(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    pytester.makeconftest(REDIS_CONFTEST)
    pytester.makepyfile(test_user="def test_x(taskora_redis_app):\n    raise AssertionError\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*taskora_redis_app needs a Redis*--taskora-redis-url*"])
