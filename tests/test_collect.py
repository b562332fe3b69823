"""Batch collect (docs/design.md#collect), on both backends unless marked Redis-only.

Waits are for results and states with generous deadlines, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import taskora
from taskora import Collect
from taskora.backends.base import Flow, NewJob
from tests.conftest import AppFactory, wait_until


async def test_items_flush_after_the_delay_in_dispatch_order(make_app: AppFactory) -> None:
    app = make_app()
    batches: list[list[int]] = []

    @app.task(collect=Collect(key="k", delay="300ms"))
    async def add(items: list[int]) -> int:
        batches.append(items)
        return sum(items)

    handles = [add.dispatch(i) for i in range(10)]
    for handle in handles:
        await handle
    assert await add.peek_collect("k") == list(range(10))
    info = await add.inspect_collect("k")
    assert info is not None and info.count == 10 and info.oldest_at <= info.newest_at
    async with app:
        # every item's handle follows its batch job
        assert [await h.wait_for(20) for h in handles] == [45] * 10
    assert batches == [list(range(10))]
    assert await add.peek_collect("k") == []
    assert await add.inspect_collect("k") is None


async def test_a_key_function_groups_items_by_key(make_app: AppFactory) -> None:
    app = make_app()
    batches: list[list[dict[str, Any]]] = []

    @app.task(collect=Collect(key=lambda d: d["user"], delay="200ms"))
    async def notify(items: list[dict[str, Any]]) -> None:
        batches.append(items)

    for i in range(6):
        notify.dispatch({"user": f"u{i % 2}", "n": i})
    await notify.dispatch({"user": "u0", "n": 6})
    assert [d["n"] for d in await notify.peek_collect("u0")] == [0, 2, 4, 6]
    assert [d["n"] for d in await notify.peek_collect("u1")] == [1, 3, 5]
    async with app:
        await wait_until(lambda: len(batches) == 2)
    by_user = {b[0]["user"]: [d["n"] for d in b] for b in batches}
    assert by_user == {"u0": [0, 2, 4, 6], "u1": [1, 3, 5]}


async def test_max_size_flushes_at_once(make_app: AppFactory) -> None:
    app = make_app()
    batches: list[list[int]] = []

    @app.task(collect=Collect(key="k", delay="1h", max_size=3))
    async def add(items: list[int]) -> None:
        batches.append(items)

    handles = [add.dispatch(i) for i in range(7)]
    for handle in handles:
        await handle
    # two full batches are waiting already; the seventh item is buffered
    assert (await app.counts("add"))["waiting"] == 2
    assert await add.peek_collect("k") == [6]
    async with app:
        await wait_until(lambda: len(batches) == 2)
        assert await handles[0].wait_for(20) is None
    assert batches == [[0, 1, 2], [3, 4, 5]]
    assert await add.peek_collect("k") == [6]


async def test_max_wait_caps_the_quiet_delay(make_app: AppFactory) -> None:
    app = make_app()
    batches: list[list[int]] = []

    @app.task(collect=Collect(key="k", delay="1h", max_wait="300ms"))
    async def add(items: list[int]) -> None:
        batches.append(items)

    async with app:
        handle = add.dispatch(1)
        add.dispatch(2)
        await handle.wait_for(20)
    assert batches == [[1, 2]]


async def test_an_append_after_a_flush_starts_the_next_batch(make_app: AppFactory) -> None:
    app = make_app()
    batches: list[list[int]] = []

    @app.task(collect=Collect(key="k", delay="200ms"))
    async def add(items: list[int]) -> None:
        batches.append(items)

    async with app:
        await add.dispatch(1).wait_for(20)
        await add.dispatch(2).wait_for(20)
    assert batches == [[1], [2]]


async def test_a_failed_batch_retries_as_one_job_with_the_same_items(
    make_app: AppFactory,
) -> None:
    app = make_app()
    runs: list[tuple[int, list[int]]] = []

    @app.task(
        collect=Collect(key="k", delay="200ms"),
        retry=taskora.Retry(attempts=3, delay="100ms", backoff="fixed"),
    )
    async def flaky(items: list[int], ctx: taskora.Context) -> int:
        runs.append((ctx.attempt, items))
        if ctx.attempt < 3:
            raise RuntimeError("not yet")
        return len(items)

    handles = [flaky.dispatch(i) for i in range(4)]
    async with app:
        assert await handles[2].wait_for(20) == 4
        # an item dispatched while the batch retries goes into a new batch, not this one
    assert runs == [(1, [0, 1, 2, 3]), (2, [0, 1, 2, 3]), (3, [0, 1, 2, 3])]


async def test_peek_and_inspect(make_app: AppFactory) -> None:
    app = make_app()

    @app.task(collect=Collect(key=lambda d: d["k"], delay="1h"))
    async def gather(items: list[Any]) -> None:
        return None

    @app.task()
    async def plain(data: Any) -> None:
        return None

    assert await gather.peek_collect("none") == []
    assert await gather.inspect_collect("none") is None
    await gather.dispatch({"k": "a", "v": 1})
    await gather.dispatch({"k": "a", "v": [2, "x"]})
    await gather.dispatch({"k": "b", "v": 3})
    first = await gather.peek_collect("a")
    assert first == [{"k": "a", "v": 1}, {"k": "a", "v": [2, "x"]}]
    first.append("mine")  # a copy: peeking twice gives the same, and drains nothing
    assert await gather.peek_collect("a") == [{"k": "a", "v": 1}, {"k": "a", "v": [2, "x"]}]
    info = await gather.inspect_collect("a")
    assert info is not None and info.count == 2
    now = app.backend.now_ms()
    assert now - 60_000 < info.oldest_at <= info.newest_at <= now
    with pytest.raises(taskora.ConfigError, match="not a collect task"):
        await plain.peek_collect("a")
    with pytest.raises(taskora.ConfigError, match="not a collect task"):
        await plain.inspect_collect("a")


async def test_bad_collect_keys_raise_value_error_and_write_nothing(
    make_app: AppFactory,
) -> None:
    app = make_app()
    with pytest.raises(ValueError, match=r"Collect\.key must be a string"):
        Collect(key=5, delay="1s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="collect key must be 1 to 512"):
        Collect(key="", delay="1s")
    with pytest.raises(ValueError, match=r"Collect\.delay"):
        Collect(key="k", delay=0)
    with pytest.raises(ValueError, match=r"Collect\.max_size"):
        Collect(key="k", delay="1s", max_size=-1)

    @app.task(collect=Collect(key=lambda d: d.get("k"), delay="1h"))
    async def gather(items: list[Any]) -> None:
        return None

    with pytest.raises(ValueError, match="collect key must be a string, got int 7"):
        gather.dispatch({"k": 7})
    with pytest.raises(ValueError, match="collect key must be a string, got NoneType"):
        gather.dispatch({})
    with pytest.raises(ValueError, match="delay is not available"):
        gather.dispatch({"k": "a"}, delay="1s")
    handles = gather.dispatch_many([{"data": {"k": 1}}, {"data": {"k": "ok"}}])
    with pytest.raises(ValueError, match="collect key must be a string"):
        await handles[0]
    await handles[1]
    assert await gather.peek_collect("ok") == [{"k": "ok"}]
    counts = await app.counts("gather")
    assert counts["delayed"] == 1 and counts["waiting"] == 0  # only the good item's batch
    with pytest.raises(ValueError, match="collect key must be a string"):
        await gather.peek_collect(3)  # type: ignore[arg-type]


async def test_a_cancelled_batch_job_loses_no_buffered_item(make_app: AppFactory) -> None:
    app = make_app()
    batches: list[list[int]] = []

    @app.task(collect=Collect(key="k", delay="300ms"))
    async def add(items: list[int]) -> None:
        batches.append(items)

    first = add.dispatch(1)
    await first
    await first.cancel()
    assert await first.get_state() == "cancelled"
    second = add.dispatch(2)
    await second
    async with app:
        await second.wait_for(20)
    assert batches == [[1, 2]]


async def test_memory_flush_follows_the_backend_clock() -> None:
    now = [1_000_000]
    app = taskora.App(taskora.MemoryBackend(clock=lambda: now[0]))
    batches: list[list[int]] = []

    @app.task(collect=Collect(key="k", delay="10s", max_wait="30s"))
    async def add(items: list[int]) -> None:
        batches.append(items)

    backend = app.backend
    assert isinstance(backend, taskora.MemoryBackend)
    await add.dispatch(1)
    now[0] += 9_000
    await add.dispatch(2)  # quiet delay restarts: due at +19 s
    info = await add.inspect_collect("k")
    assert info == taskora.CollectInfo(2, 1_000_000, 1_009_000)
    now[0] += 9_000
    backend._promote("add", backend._t("add"), now[0])
    assert await add.peek_collect("k") == [1, 2]
    now[0] += 1_000
    backend._promote("add", backend._t("add"), now[0])
    assert await add.peek_collect("k") == []
    assert (await app.counts("add"))["waiting"] == 1
    await app.close()


@pytest.mark.parametrize("backend_url", ["redis"], indirect=True)
async def test_a_collect_dispatch_is_one_round_trip(make_app: AppFactory) -> None:
    app = make_app()

    @app.task(collect=Collect(key="k", delay="1h", max_size=5))
    async def add(items: list[int]) -> None:
        return None

    await add.dispatch(0)  # connect outside the count
    backend: Any = app.backend
    trips = backend.round_trips()["main"]
    for i in range(1, 12):
        await add.dispatch(i)
    assert backend.round_trips()["main"] - trips == 11
    # a burst made in one event-loop turn is one round trip, and keeps dispatch order
    trips = backend.round_trips()["main"]
    await asyncio.gather(*[add.dispatch(i) for i in range(100, 1300)])
    assert backend.round_trips()["main"] - trips == 3  # 500 items per script call
    assert await add.peek_collect("k") == [1298, 1299]
    counts = await app.counts("add")
    assert counts["waiting"] == 2 + 240  # [0..4], [5..9], then 1200 of the 1202 buffered


async def test_items_are_checked_against_a_list_schema_at_dispatch(make_app: AppFactory) -> None:
    app = make_app()

    @app.task(collect=Collect(key="k", delay="1h"))
    async def add(items: list[int]) -> int:
        return sum(items)

    with pytest.raises(taskora.ValidationError):
        await add.dispatch("not a number")
    await add.dispatch("7")  # pydantic's lax mode: the stored item is the validated value
    assert await add.peek_collect("k") == [7]


async def test_the_same_dispatch_sent_twice_is_appended_once(make_app: AppFactory) -> None:
    app = make_app()

    @app.task(collect=Collect(key="k", delay="1h"))
    async def add(items: list[int]) -> None:
        return None

    backend = await app._connected_backend()
    first, second = NewJob(id="a", data="1"), NewJob(id="b", data="2")
    flow = Flow("collect", "k", delay_ms=3_600_000)
    for job in (first, second, second, first):  # a reply lost, the call re-sent
        result = await backend.enqueue_flow("add", job, flow)
        assert result.enqueued
    assert await add.peek_collect("k") == [1, 2]
    assert (await add.inspect_collect("k") or taskora.CollectInfo(0, 0, 0)).count == 2
