"""Versioned payloads (docs/design.md#versions): migrations, ``since``, and jobs newer than the
worker parked for a worker of their version (never run by an older one, never spun, never lost)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import redis

import taskora
from taskora.backends.memory import MemoryBackend
from taskora.backends.redis.keys import TaskKeys
from tests.conftest import AppFactory, wait_until
from tests.processes import stop_processes
from tests.redis_server import script_calls


def test_declarations_resolve_and_bad_ones_raise() -> None:
    app = taskora.App("memory://")

    def f(d: Any) -> Any:
        return d

    assert app.task("plain")(f).versioning.version == 1
    listed = app.task("listed", since=2, migrate=[f, f])(f).versioning
    assert (listed.version, listed.since, sorted(listed.steps)) == (4, 2, [2, 3])
    keyed = app.task("keyed", version=5, since=2, migrate={3: f})(f).versioning
    assert (keyed.version, keyed.since, list(keyed.steps)) == (5, 2, [3])
    bad: list[tuple[dict[str, Any], str]] = [
        ({"version": 2, "since": 3}, r"version \(2\) must not be below since \(3\)"),
        ({"version": 0}, "version must be an integer >= 1"),
        ({"since": True}, "since must be an integer >= 1"),
        ({"version": 3, "migrate": {3: f}}, "migrate key 3 is outside"),
        ({"version": 3, "migrate": [f]}, "version=3 but since=1 with 1 migrations"),
        ({"version": 2, "migrate": {1: "nope"}}, r"migration 1 -> 2 is not callable"),
        ({"version": 2, "migrate": "f"}, "migrate must be a list or a dict"),
    ]
    for options, message in bad:
        with pytest.raises(taskora.ConfigError, match=message):
            app.task("bad", **options)(f)
    assert "bad" not in app.tasks


async def test_dispatch_stamps_the_version(make_app: AppFactory) -> None:
    app = make_app()
    plain = app.register(taskora.define_task("plain"))
    newer = app.register(taskora.define_task("newer", version=3))
    async with app:
        a, b = plain.dispatch({}), newer.dispatch({})
        await a
        await b
        assert await a.get_state() == await b.get_state() == "waiting"
        infos = [await app.inspect().find(h.id) for h in (a, b)]
    assert [i.version if i else None for i in infos] == [1, 3]


async def test_migrations_run_in_order_then_validate(make_app: AppFactory) -> None:
    producer, worker = make_app(), make_app()
    old = producer.register(taskora.define_task("evolve", version=1))

    def one_to_two(d: dict[str, Any]) -> dict[str, Any]:
        return {**d, "steps": [*d["steps"], "1->2"]}

    def two_to_three(d: dict[str, Any]) -> dict[str, Any]:
        return {**d, "steps": [*d["steps"], "2->3"]}

    @worker.task("evolve", version=3, migrate=[one_to_two, two_to_three])
    async def evolve(data: dict[str, Any]) -> list[str]:
        return list(data["steps"])

    @worker.task("gappy", version=3, migrate={2: two_to_three})
    async def gappy(data: dict[str, Any]) -> list[str]:
        return list(data["steps"])

    old_gappy = producer.register(taskora.define_task("gappy", version=2))
    async with producer, worker:
        assert await old.dispatch({"steps": []}).wait_for(20) == ["1->2", "2->3"]
        assert await old_gappy.dispatch({"steps": []}).wait_for(20) == ["2->3"]
        assert await evolve.dispatch({"steps": []}).wait_for(20) == []  # current: no migration


async def test_below_since_and_raising_migration_fail_with_a_clear_message(
    make_app: AppFactory,
) -> None:
    producer, worker = make_app(), make_app()
    v1 = producer.register(taskora.define_task("strict", version=1))
    v2 = producer.register(taskora.define_task("breaks", version=1))
    ran: list[Any] = []

    def boom(d: Any) -> Any:
        raise KeyError("price")

    @worker.task("strict", version=3, since=2, migrate={2: lambda d: d})
    async def strict(data: Any) -> None:
        ran.append(data)

    @worker.task("breaks", version=2, migrate=[boom])
    async def breaks(data: Any) -> None:
        ran.append(data)

    async with producer, worker:
        with pytest.raises(taskora.JobFailedError, match="below the minimum supported version 2"):
            await v1.dispatch({}).wait_for(20)
        with pytest.raises(taskora.JobFailedError, match=r"migration 1 -> 2 \(.*boom\)"):
            await v2.dispatch({}).wait_for(20)
    assert ran == []


async def test_too_new_job_is_parked_then_run_by_a_newer_worker(
    make_app: AppFactory, backend_url: str, prefix: str
) -> None:
    producer, old_worker = make_app(), make_app()
    new = producer.register(taskora.define_task("roll", version=2))
    ran_by: list[int] = []

    @old_worker.task("roll")
    async def roll_v1(data: Any) -> int:
        ran_by.append(1)
        return 1

    async with producer, old_worker:
        handles = [new.dispatch({"n": i}) for i in range(5)]
        old_job = roll_v1.dispatch({"n": -1})
        assert await old_job.wait_for(20) == 1  # the old worker is up and claiming
        insp = producer.inspect()
        await wait_until(lambda: _parked(producer, backend_url, prefix))
        stats = await insp.stats("roll")
        assert stats["waiting"] == 5
        migrations = await insp.migrations("roll")
        # the producer's App knows the task at version 2
        assert (migrations.version, migrations.since, migrations.by_version) == (2, 1, {2: 5})
        assert (migrations.oldest, migrations.max_since) == (2, 2)
        assert migrations.can_raise_since(2) and not migrations.can_raise_since(3)
        # parked, not spun: the idle old worker claims about once per idle block, not in a loop
        claims = _claim_counter(producer, backend_url)
        before = claims()
        await asyncio.sleep(0.5)
        assert claims() - before < 20
        for h in handles:
            assert await h.get_state() == "waiting"
        cancelled = handles.pop()  # a parked job can be cancelled like any waiting one
        await cancelled.cancel()
        assert await cancelled.get_state() == "cancelled"
        assert (await insp.stats("roll"))["waiting"] == 4
        new_worker = make_app()

        @new_worker.task("roll", version=2)
        async def roll_v2(data: Any) -> int:
            ran_by.append(2)
            return 2

        async with new_worker:
            assert [await h.wait_for(20) for h in handles] == [2] * 4
    assert ran_by == [1, 2, 2, 2, 2]
    assert (await producer.inspect().stats("roll"))["waiting"] == 0


async def _parked(app: taskora.App, url: str, prefix: str) -> bool:
    if url.startswith("memory"):
        backend: Any = app.backend
        return len(backend._t("roll").newer) == 5
    with redis.Redis.from_url(url) as r:
        return int(r.zcard(TaskKeys(prefix, "roll").base + "newer")) == 5


def _claim_counter(app: taskora.App, url: str) -> Callable[[], int]:
    """How many claims ran so far (Redis: every script call the server ran)."""
    if url.startswith("memory"):
        backend: Any = app.backend
        assert isinstance(backend, MemoryBackend)
        count = [0]
        claim = backend._claim

        def counting(*args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            return claim(*args, **kwargs)

        backend._claim = counting  # type: ignore[method-assign]
        return lambda: count[0]

    def calls() -> int:
        with redis.Redis.from_url(url) as r:
            return script_calls(r)

    return calls


@pytest.mark.redis_only
async def test_rolling_deploy_old_and_new_worker_processes(redis_url: str, prefix: str) -> None:
    """A version 1 worker process runs while producers of versions 1 and 2 dispatch; the
    version 2 jobs wait, parked, until a version 2 worker process comes up. Every job is
    completed by a worker that understands it, none is lost."""
    producer = taskora.App(redis_url, prefix=prefix)
    old = producer.register(taskora.define_task("deploy", version=1))
    producer_new = taskora.App(redis_url, prefix=prefix)
    new = producer_new.register(taskora.define_task("deploy", version=2))
    procs: list[subprocess.Popen[bytes]] = []

    def start(version: int) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.procs.version_procs", redis_url, prefix, str(version)],
            stdout=subprocess.PIPE,
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"

    try:
        async with producer, producer_new:
            start(1)
            olds, news = [], []
            for i in range(20):
                olds.append(old.dispatch({"v": 1, "i": i}))
                news.append(new.dispatch({"v": 2, "i": i}))
            old_results = [await h.wait_for(60) for h in olds[:10]]
            assert {r["worker"] for r in old_results} == {1}
            for h in news:  # the old worker never runs a version 2 job
                assert await h.get_state() == "waiting"
            start(2)
            results = [await h.wait_for(60) for h in olds + news]
            for h, r in zip(olds + news, results, strict=True):
                assert await h.get_state() == "completed"
                assert r["worker"] >= r["v"]  # run by a worker that understands it
                assert r["migrated"] == (r["v"] == 1 and r["worker"] == 2)
            assert [r["worker"] for r in results[20:]] == [2] * 20
            stats = await producer.inspect().stats("deploy")
            assert stats["completed"] == 40 and stats["waiting"] == stats["active"] == 0
    finally:
        stop_processes(procs)
