"""Round trips on the hot paths.

Counted twice: by the client (each ``execute``/``pipeline`` is one round trip) and by a
private redis-server (``INFO commandstats``: FCALL, or EVALSHA on a server without Redis
Functions, is only ever sent by clients).
- a dispatch is one round trip (one script call); concurrent dispatches share one;
- a worker finishes a job and claims the next in one round trip (one script call);
- a result reaches a waiting handle with no command at all: it is pushed on the task's
  results channel.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

import taskora
from taskora import claimer
from taskora.backends.redis import RedisBackend
from tests.redis_server import RedisServer, script_calls


@pytest.fixture
def server() -> Iterator[RedisServer]:
    s = RedisServer()
    yield s
    s.close()


def _scripts(server: RedisServer, command: str | None = None) -> int:
    with server.client() as r:
        return script_calls(r, command)


def _trips(app: taskora.App) -> dict[str, int]:
    assert isinstance(app.backend, RedisBackend)
    return app.backend.round_trips()


@pytest.mark.parametrize("command", ["fcall", "evalsha"])
async def test_one_round_trip_per_dispatch(
    server: RedisServer, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On this server (Redis >= 7) the scripts run as Functions; EVALSHA when told to."""
    monkeypatch.setattr(RedisBackend, "functions", command == "fcall")
    app = taskora.App(server.url, prefix="rt")

    @app.task()
    async def noop(data: None) -> None:
        return None

    await noop.dispatch(None)  # connect (scripts, handshake) outside the count
    trips, calls = _trips(app)["main"], _scripts(server, command)
    for _ in range(50):
        await noop.dispatch(None)
    assert _trips(app)["main"] - trips == 50
    assert _scripts(server, command) - calls == 50

    trips, calls = _trips(app)["main"], _scripts(server, command)
    await asyncio.gather(*[noop.dispatch(None) for _ in range(200)])
    assert _trips(app)["main"] - trips == 1  # coalesced
    assert _scripts(server, command) - calls == 1
    assert _scripts(server) == _scripts(server, command)  # the other kind: never

    trips = _trips(app)["main"]
    await asyncio.gather(*noop.dispatch_many([{"data": None}] * 100))
    assert _trips(app)["main"] - trips == 1
    await app.close()


async def test_one_round_trip_per_claim_and_ack(server: RedisServer) -> None:
    app = taskora.App(server.url, prefix="rt")
    done = asyncio.Event()
    count = 0

    @app.task(concurrency=1)
    async def noop(data: None) -> None:
        nonlocal count
        count += 1
        if count == 300:
            done.set()

    await asyncio.gather(*noop.dispatch_many([{"data": None}] * 300))
    trips, calls = _trips(app)["main"], _scripts(server)
    async with app:
        await asyncio.wait_for(done.wait(), 60)
        await asyncio.sleep(0.2)
        used = _trips(app)["main"] - trips
        scripts = _scripts(server) - calls
    # at most one finish+claim call per job (quick jobs share calls: the worker claims a
    # little work ahead), plus start-up (data-loss check, stall check, trim) and the last
    # idle claim: nothing else per job
    assert used <= 310, used
    assert scripts <= 310, scripts


async def test_results_are_pushed_without_per_job_commands(server: RedisServer) -> None:
    prefix = "rt" + uuid.uuid4().hex[:6]
    worker = taskora.App(server.url, prefix=prefix)
    producer = taskora.App(server.url, prefix=prefix)
    for app in (worker, producer):
        app.task("echo")(lambda data: data)
    echo = producer.tasks["echo"]
    async with worker:
        await echo.dispatch(0).wait_for(20)  # the producer's reader is now watching
        before = _trips(producer)
        for i in range(1, 101):
            assert await echo.dispatch(i).wait_for(20) == i
        after = _trips(producer)
    await producer.close()
    # the producer's main connection carries only the 100 dispatches; results are pushed
    # on the results subscription, which sends nothing per result
    # (a job created in the very millisecond the subscription began gets one state check)
    assert 100 <= after["main"] - before["main"] <= 102
    assert after["waiter"] - before["waiter"] == 0


async def test_slow_jobs_cost_exactly_one_round_trip_each(server: RedisServer) -> None:
    """Jobs that take a while are not claimed ahead: one finish+claim call per job."""
    app = taskora.App(server.url, prefix="rt")
    done = asyncio.Event()
    count = 0

    @app.task(concurrency=1)
    async def slow(data: None) -> None:
        nonlocal count
        await asyncio.sleep(0.01)
        count += 1
        if count == 30:
            done.set()

    await asyncio.gather(*slow.dispatch_many([{"data": None}] * 30))
    trips = _trips(app)["main"]
    async with app:
        await asyncio.wait_for(done.wait(), 60)
        used = _trips(app)["main"] - trips
    assert 30 <= used <= 40, used


async def test_an_idle_worker_finishes_and_waits_again_in_one_write(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serving quick jobs one at a time: the claim rides on the wake-up, and the finish goes
    out together with the next blocking wait: one write per job, on the blocking connection.

    What counts as quick is a measured heuristic (QUICK_JOB_S of run time on average), and a
    loaded machine makes a no-op job slow: the test fixes the classification so that it pins
    the wire behaviour, not the machine's speed. Concurrency 1 for the same reason: with free
    slots left, a worker whose job lingers past 2 * PREFETCH_S re-arms its wait alone, by
    design, and that job's finish goes out on the main connection."""
    monkeypatch.setattr(claimer, "QUICK_JOB_S", 60.0)
    prefix = "rt" + uuid.uuid4().hex[:6]
    worker = taskora.App(server.url, prefix=prefix)
    producer = taskora.App(server.url, prefix=prefix)
    for app in (worker, producer):
        app.task("echo", concurrency=1)(lambda data: data)
    echo = producer.tasks["echo"]
    async with worker:
        for i in range(20):  # warm up: the worker learns its jobs are quick
            await echo.dispatch(i).wait_for(20)
        before = _trips(worker)
        for i in range(100):
            assert await echo.dispatch(i).wait_for(20) == i
        after = _trips(worker)
    await producer.close()
    used = {role: after[role] - before.get(role, 0) for role in after}
    assert used["main"] <= 3, used
    assert 100 <= used["block:echo"] <= 103, used
