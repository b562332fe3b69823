"""Flow control contract: debounce, throttle, deduplicate, throw_on_reject, dispatch_many.

Every test runs on both backends (memory and a real redis-server) unless marked Redis-only.
Waits are for events (a result, a state, a clock tick) with generous deadlines, never for
fixed sleeps.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

import taskora
from taskora.backends.base import ClaimOptions, Flow, NewJob
from tests.conftest import AppFactory, wait_until
from tests.stored import Store, _base, _connected, clock_passes, fields

# -- helpers ---------------------------------------------------------------------------


async def is_waited_on(app: taskora.App, task: str, job_id: str) -> bool:
    """True once a waiter for the job is registered (and, on Redis, subscribed to results)."""
    backend = app.backend
    if isinstance(backend, taskora.MemoryBackend):
        return (task, job_id) in backend._waiters
    waiter = backend.waiter
    return (task, job_id) in waiter._pending and task in waiter._since


class Gate:
    """Handlers block on ``wait(name)`` until the test ``open(name)``s it."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}
        self.started: dict[str, asyncio.Event] = {}

    def _event(self, table: dict[str, asyncio.Event], name: str) -> asyncio.Event:
        if name not in table:
            table[name] = asyncio.Event()
        return table[name]

    async def wait(self, name: str) -> None:
        self._event(self.started, name).set()
        await self._event(self.events, name).wait()

    async def until_started(self, name: str) -> None:
        await asyncio.wait_for(self._event(self.started, name).wait(), 20)

    def open(self, name: str) -> None:
        self._event(self.events, name).set()

    def open_all(self) -> None:
        for name in list(self.events) + list(self.started):
            self.open(name)


# -- debounce ------------------------------------------------------------------------------


async def test_debounce_runs_only_the_last_dispatch_with_its_data(
    make_app: AppFactory, store: Store
) -> None:
    app = make_app()
    runs: list[int] = []

    @app.task()
    async def index(data: int) -> int:
        runs.append(data)
        return data * 10

    # delay= is ignored by debounce (an hour here): the job waits the debounce window only
    handles = []
    for i in range(5):
        handle = index.dispatch(i, debounce={"key": "doc:1", "delay": "300ms"}, delay=3600)
        assert await handle == handle.id
        assert handle.enqueued is True
        handles.append(handle)
    counts = await app.counts("index")
    assert counts["delayed"] == 1 and counts["waiting"] == 0
    for replaced in handles[:-1]:
        assert await replaced.get_state() is None
    assert await handles[-1].get_state() == "delayed"
    assert await store.flow_value(app, "index", "debounce:doc:1") == handles[-1].id
    async with app:
        assert await handles[-1].wait_for(20) == 40
        for replaced in handles[:-1]:
            with pytest.raises(taskora.JobNotFoundError):
                await replaced.wait_for(20)
    assert runs == [4]


async def test_debounce_replaced_waiters_get_a_typed_error_at_once(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def index(data: int) -> int:
        return data

    debounce = taskora.Debounce(key="doc:2", delay="1h")
    first = index.dispatch(1, debounce=debounce)
    await first
    waiting = asyncio.create_task(first.wait_for(20))
    await wait_until(lambda: is_waited_on(app, "index", first.id))
    second = index.dispatch(2, debounce=debounce)
    await second
    # "replaced" comes from the debounced event (Redis) or the backend's notice (memory), not
    # from a later sweep noticing the job is gone
    with pytest.raises(taskora.JobNotFoundError, match="replaced by a later debounced dispatch"):
        await asyncio.wait_for(waiting, 20)
    assert second.id in str(waiting.exception())
    assert await second.get_state() == "delayed"


async def test_debounce_keeps_priority_ttl_and_concurrency(
    make_app: AppFactory, store: Store
) -> None:
    app = make_app()

    @app.task()
    async def index(data: int) -> int:
        return data

    handle = index.dispatch(
        1,
        debounce=taskora.Debounce(key="doc:3", delay=2),
        priority=7,
        ttl="1h",
        concurrency_key="user:1",
        concurrency_limit=3,
    )
    await handle
    stored = await fields(app, "index", handle.id)
    assert stored["state"] == "delayed"
    assert stored["delay"] == "2000"
    assert stored["priority"] == "7"
    assert int(stored["expireAt"]) == int(stored["ts"]) + 3_600_000
    assert stored["concurrencyKey"] == "user:1"
    assert stored["concurrencyLimit"] == "3"
    assert 0 < await store.flow_pttl(app, "index", "debounce:doc:3") <= 4000


async def test_debounce_reports_replaced_id_and_stream_event(
    make_app: AppFactory, store: Store
) -> None:
    app = make_app()

    @app.task()
    async def index(data: int) -> int:
        return data

    backend = await _connected(app)
    flow = Flow("debounce", "doc:4", delay_ms=60_000)
    one, two = str(uuid.uuid4()), str(uuid.uuid4())
    first = await backend.enqueue_flow("index", NewJob(one, "1"), flow)
    second = await backend.enqueue_flow("index", NewJob(two, "2"), flow)
    assert first.enqueued and first.replaced_id is None
    assert second.enqueued and second.replaced_id == one
    # the reference's entries: each job's creation, and the replaced one's 'debounced'
    expected = [
        {"event": "delayed", "jobId": one},
        {"event": "debounced", "jobId": one, "replacedBy": two},
        {"event": "delayed", "jobId": two},
    ]
    if store.rdb is None:
        assert [f for _, f in backend._t("index").events] == expected  # type: ignore[attr-defined]
    if store.rdb is not None:
        assert first.event_id and second.event_id
        entries = await store.rdb.xrange(_base(app, "index") + "events")
        events = [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]
        assert events == expected
        # the new job's creation time (ms) orders it against result subscriptions
        created = int(await store.rdb.hget(_base(app, "index") + two, "ts"))
        assert second.event_id == f"{created}-0"
    assert await backend.counts("index") == {
        "waiting": 0,
        "delayed": 1,
        "active": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "expired": 0,
    }


async def test_debounce_never_touches_a_job_that_already_started(make_app: AppFactory) -> None:
    app = make_app()
    gate = Gate()
    runs: list[str] = []

    @app.task(concurrency=2)
    async def index(data: str) -> str:
        runs.append(data)
        if data == "first":
            await gate.wait("first")
        return data

    debounce = {"key": "doc:5", "delay": 0.1}
    async with app:
        try:
            first = index.dispatch("first", debounce=debounce)
            await gate.until_started("first")
            second = index.dispatch("second", debounce=debounce)
            await second
            assert await first.get_state() == "active"
            assert await second.wait_for(20) == "second"
            gate.open("first")
            assert await first.wait_for(20) == "first"
            third = index.dispatch("third", debounce=debounce)  # after both finished
            assert await third.wait_for(20) == "third"
        finally:
            gate.open_all()
    assert sorted(runs) == ["first", "second", "third"]


async def test_debounce_burst_from_one_producer_keeps_the_last_dispatch(
    make_app: AppFactory,
) -> None:
    app = make_app()

    @app.task()
    async def index(data: int) -> int:
        return data

    for trial in range(5):  # dispatches not awaited one by one: still sent in order
        debounce = taskora.Debounce(key=f"burst:{trial}", delay="1h")
        handles = [index.dispatch(i, debounce=debounce) for i in range(40)]
        await asyncio.gather(*handles)
        alive = [i for i, h in enumerate(handles) if await h.get_state() is not None]
        assert alive == [39], f"trial {trial}: the surviving dispatch is not the last one"


# -- throttle ------------------------------------------------------------------------------


async def test_throttle_burst_accepts_exactly_max(make_app: AppFactory, store: Store) -> None:
    app = make_app()

    @app.task()
    async def call_api(data: int) -> int:
        return data

    handles = [
        call_api.dispatch(i, throttle={"key": "external-api", "max": 5, "window": "1h"})
        for i in range(20)
    ]
    await asyncio.gather(*handles)
    accepted = [h for h in handles if h.enqueued]
    rejected = [h for h in handles if h.enqueued is False]
    assert len(accepted) == 5 and len(rejected) == 15
    assert all(h.existing_id is None for h in rejected)
    for handle in rejected:  # a rejected dispatch writes nothing
        assert await handle.get_state() is None
    assert (await app.counts("call_api"))["waiting"] == 5
    assert await store.flow_value(app, "call_api", "throttle:external-api") == "5"
    assert 0 < await store.flow_pttl(app, "call_api", "throttle:external-api") <= 3_600_000
    async with app:
        results = await asyncio.gather(*(h.wait_for(20) for h in accepted))
    assert results == [i for i, h in enumerate(handles) if h.enqueued]
    # other keys have their own counter
    other = call_api.dispatch(99, throttle=taskora.Throttle(key="other", max=1, window="1h"))
    await other
    assert other.enqueued is True


async def test_throttle_window_resets_after_it_expires(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def call_api(data: int) -> int:
        return data

    throttle = taskora.Throttle(key="api", max=2, window=2)
    loop = asyncio.get_running_loop()
    first_burst = [call_api.dispatch(i, throttle=throttle) for i in range(4)]
    await asyncio.gather(*first_burst)
    window_start = loop.time()
    assert [h.enqueued for h in first_burst].count(True) == 2

    async def accepted_again() -> bool:
        handle = call_api.dispatch(0, throttle=throttle)
        await handle
        return bool(handle.enqueued)

    await wait_until(accepted_again, timeout=20, interval=0.05)
    assert loop.time() - window_start >= 1.0  # not before the window ended
    second_burst = [call_api.dispatch(i, throttle=throttle) for i in range(4)]
    await asyncio.gather(*second_burst)
    assert [h.enqueued for h in second_burst].count(True) == 1  # one already used
    assert (await app.counts("call_api"))["waiting"] == 4


async def test_throttle_honours_delay_and_priority(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def call_api(data: int) -> int:
        return data

    throttle = taskora.Throttle(key="api", max=10, window="1m")
    delayed = call_api.dispatch(1, throttle=throttle, delay=60)
    urgent = call_api.dispatch(2, throttle=throttle, priority=9, ttl=30)
    await asyncio.gather(delayed, urgent)
    assert await delayed.get_state() == "delayed"
    stored = await fields(app, "call_api", urgent.id)
    assert stored["state"] == "waiting" and stored["priority"] == "9"
    assert int(stored["expireAt"]) == int(stored["ts"]) + 30_000


async def test_throttle_throw_on_reject(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def send(data: int) -> int:
        return data

    throttle = {"key": "emails", "max": 1, "window": "1h"}
    ok = send.dispatch(1, throttle=throttle, throw_on_reject=True)
    assert await ok == ok.id
    refused = send.dispatch(2, throttle=throttle, throw_on_reject=True)
    with pytest.raises(taskora.ThrottledError) as info:
        await refused
    assert info.value.key == "emails"
    assert info.value.job_id == refused.id
    assert refused.enqueued is False
    assert await refused.get_state() is None
    with pytest.raises(taskora.ThrottledError):
        await refused.wait_for(5)  # waiting on a refused dispatch raises the same error


# -- deduplicate -----------------------------------------------------------------------------


async def test_dedup_rejects_and_the_handle_follows_the_existing_job(
    make_app: AppFactory, store: Store
) -> None:
    app = make_app()

    @app.task()
    async def report(data: int, ctx: taskora.Context) -> int:
        ctx.log.info("building", n=data)
        await ctx.progress(100)
        return data

    first = report.dispatch(1, deduplicate={"key": "report:42", "while": ["waiting", "active"]})
    await first
    second = report.dispatch(2, deduplicate={"key": "report:42", "while": ["waiting", "active"]})
    assert await second == second.id
    assert first.enqueued is True and first.existing_id is None
    assert second.enqueued is False
    assert second.existing_id == first.id
    assert await second.get_state() == "waiting"  # the existing job's state
    assert (await app.counts("report"))["waiting"] == 1
    stored = await fields(app, "report", first.id)
    assert stored["dedupKey"] == _base(app, "report") + "dedup:report:42"
    assert await store.flow_value(app, "report", "dedup:report:42") == first.id
    async with app:
        assert await second.wait_for(20) == 1  # the existing job's result
        assert await second.get_progress() == 100
        assert [e.message for e in await second.get_logs()] == ["building"]
    assert await second.get_state() == "completed"


async def test_dedup_throw_on_reject(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def report(data: int) -> int:
        return data

    first = report.dispatch(1, deduplicate=taskora.Deduplicate(key="r"))
    await first
    second = report.dispatch(2, deduplicate=taskora.Deduplicate(key="r"), throw_on_reject=True)
    with pytest.raises(taskora.DuplicateJobError) as info:
        await second
    assert info.value.key == "r"
    assert info.value.existing_id == first.id
    assert info.value.job_id == second.id
    assert second.existing_id == first.id


async def test_dedup_blocks_in_every_non_terminal_state_by_default(
    make_app: AppFactory, store: Store
) -> None:
    app = make_app()
    gate = Gate()

    @app.task(retry=taskora.Retry(attempts=2, delay="1h", jitter=False))
    async def report(data: str) -> str:
        if data == "active":
            await gate.wait("active")
        if data == "retrying":
            raise RuntimeError("again later")
        return data

    async def dispatch(data: str, **options: Any) -> taskora.ResultHandle[Any]:
        handle = report.dispatch(data, deduplicate={"key": "k"}, **options)
        await handle
        return handle

    async def assert_blocked_by(owner: taskora.ResultHandle[Any], state: str) -> None:
        assert await owner.get_state() == state
        duplicate = await dispatch("dup")
        assert duplicate.enqueued is False, f"not blocked while {state}"
        assert duplicate.existing_id == owner.id

    delayed = await dispatch("delayed", delay=3600)
    await assert_blocked_by(delayed, "delayed")
    await delayed.cancel()  # cancelling releases the key
    waiting = await dispatch("waiting")
    assert waiting.enqueued is True
    await assert_blocked_by(waiting, "waiting")
    await waiting.cancel()
    async with app:
        try:
            active = await dispatch("active")
            await gate.until_started("active")
            await assert_blocked_by(active, "active")
            gate.open("active")
            assert await active.wait_for(20) == "active"
            retrying = await dispatch("retrying")
            await wait_until(lambda: _state_is(retrying, "retrying"))
            await assert_blocked_by(retrying, "retrying")  # docs/design.md#decisions, 6
            await retrying.cancel()
            assert await retrying.get_state() == "cancelled"
            assert await store.flow_value(app, "report", "dedup:k") is None
            last = await dispatch("last")
            assert last.enqueued is True
            assert await last.wait_for(20) == "last"
        finally:
            gate.open_all()
    assert await store.flow_value(app, "report", "dedup:k") is None


async def _state_is(handle: taskora.ResultHandle[Any], state: str) -> bool:
    return await handle.get_state() == state


async def test_dedup_key_released_when_the_job_completes_or_fails(
    make_app: AppFactory, store: Store
) -> None:
    app = make_app()

    @app.task()
    async def report(data: str) -> str:
        if data == "fail":
            raise RuntimeError("broken")
        return data

    dedup = taskora.Deduplicate(key="k")
    async with app:
        done = report.dispatch("ok", deduplicate=dedup)
        assert await done.wait_for(20) == "ok"
        assert await store.flow_value(app, "report", "dedup:k") is None
        failing = report.dispatch("fail", deduplicate=dedup)
        await failing
        assert failing.enqueued is True
        with pytest.raises(taskora.JobFailedError):
            await failing.wait_for(20)
        assert await store.flow_value(app, "report", "dedup:k") is None
        again = report.dispatch("again", deduplicate=dedup)
        assert await again.wait_for(20) == "again"
        assert again.enqueued is True


async def test_dedup_key_released_when_the_job_expires(make_app: AppFactory, store: Store) -> None:
    app = make_app()
    runs: list[str] = []

    @app.task()
    async def report(data: str) -> str:
        runs.append(data)
        return data

    dedup = taskora.Deduplicate(key="k")
    short = report.dispatch("short", deduplicate=dedup, ttl=0.2)
    await short
    expire_at = int((await fields(app, "report", short.id))["expireAt"])
    await clock_passes(app, expire_at)
    async with app:
        with pytest.raises(taskora.JobExpiredError):
            await short.wait_for(20)
        assert await store.flow_value(app, "report", "dedup:k") is None
        after = report.dispatch("after", deduplicate=dedup)
        assert await after.wait_for(20) == "after"
        assert after.enqueued is True
    assert runs == ["after"]


async def test_dedup_key_released_when_an_active_job_is_cancelled(
    make_app: AppFactory, store: Store
) -> None:
    app = make_app()
    gate = Gate()

    @app.task()
    async def report(data: str) -> str:
        await gate.wait(data)
        return data

    dedup = taskora.Deduplicate(key="k")
    async with app:
        try:
            first = report.dispatch("first", deduplicate=dedup)
            await gate.until_started("first")
            await first.cancel(reason="stop")
            with pytest.raises(taskora.JobCancelledError):
                await first.wait_for(20)
            assert await store.flow_value(app, "report", "dedup:k") is None
            second = report.dispatch("second", deduplicate=dedup)
            await second
            assert second.enqueued is True
            gate.open("second")
            assert await second.wait_for(20) == "second"
        finally:
            gate.open_all()


async def test_dedup_key_released_when_a_stalled_job_fails(
    make_app: AppFactory, store: Store
) -> None:
    app = make_app()

    @app.task()
    async def report(data: str) -> str:
        return data

    backend = await _connected(app)
    flow = Flow("dedup", "k")
    owner = str(uuid.uuid4())
    assert (await backend.enqueue_flow("report", NewJob(owner, '"a"'), flow)).enqueued
    claimed = await backend.finish_and_claim(
        "report", [], 1, ClaimOptions(lock_ttl_ms=100), "dead-worker"
    )
    assert [c.id for c in claimed.claimed] == [owner]  # then the "worker" dies

    async def stall_failed() -> bool:
        report_ = await backend.stalled_check("report", 0)
        return owner in report_.failed

    await wait_until(stall_failed, timeout=20, interval=0.05)
    assert await store.flow_value(app, "report", "dedup:k") is None
    assert (await backend.enqueue_flow("report", NewJob(str(uuid.uuid4()), '"b"'), flow)).enqueued


async def test_dedup_with_states_takes_over_from_a_job_in_another_state(
    make_app: AppFactory, store: Store
) -> None:
    app = make_app()
    gate = Gate()

    @app.task(concurrency=1)
    async def report(data: str) -> str:
        await gate.wait(data)
        return data

    only_waiting = taskora.Deduplicate(key="k", states=["waiting"])
    async with app:
        try:
            first = report.dispatch("first", deduplicate=only_waiting)
            await gate.until_started("first")
            second = report.dispatch("second", deduplicate=only_waiting)
            await second
            assert second.enqueued is True  # first is active: not a blocking state here
            assert await store.flow_value(app, "report", "dedup:k") == second.id
            third = report.dispatch("third", deduplicate=only_waiting)
            await third
            assert third.existing_id == second.id  # second is waiting: blocks
            gate.open("first")
            assert await first.wait_for(20) == "first"
            await gate.until_started("second")
            # first's end did not release the key second owns
            assert await store.flow_value(app, "report", "dedup:k") == second.id
            fourth = report.dispatch(
                "fourth", deduplicate={"key": "k", "while": ["waiting", "active"]}
            )
            await fourth
            assert fourth.enqueued is False and fourth.existing_id == second.id
            gate.open("second")
            assert await second.wait_for(20) == "second"
            assert await third.wait_for(20) == "second"  # followed the existing job
        finally:
            gate.open_all()
    assert await store.flow_value(app, "report", "dedup:k") is None


async def test_dedup_after_the_owner_was_trimmed_takes_over(
    make_app: AppFactory, store: Store
) -> None:
    app = make_app()

    @app.task()
    async def report(data: str) -> str:
        return data

    backend = await _connected(app)
    flow = Flow("dedup", "k", states=("waiting", "delayed", "active", "retrying"))
    ghost = str(uuid.uuid4())  # the key names a job that no longer exists
    await store.set_flow_value(app, "report", "dedup:k", ghost)
    job_id = str(uuid.uuid4())
    result = await backend.enqueue_flow("report", NewJob(job_id, '"x"'), flow)
    assert result.enqueued and result.existing_id is None
    assert await store.flow_value(app, "report", "dedup:k") == job_id


# -- dispatch_many ---------------------------------------------------------------------------


async def test_dispatch_many_honours_per_item_options_and_flow_items(
    make_app: AppFactory,
) -> None:
    app = make_app()

    @app.task()
    async def send(data: int) -> int:
        return data

    throttle = {"key": "t", "max": 2, "window": "1h"}
    handles = send.dispatch_many(
        [
            {"data": 1},
            {"data": 2, "options": {"delay": 60}},
            {"data": 3, "options": {"priority": 4, "ttl": "1h"}},
            {"data": 4, "options": {"throttle": throttle}},
            {"data": 5, "options": {"throttle": throttle}},
            {"data": 6, "options": {"throttle": throttle}},
            {"data": 7, "options": {"deduplicate": {"key": "d"}}},
            {"data": 8, "options": {"deduplicate": {"key": "d"}}},
            {"data": 9, "options": {"throttle": {"key": "t", "max": 0, "window": 1}}},
        ]
    )
    await asyncio.gather(*handles[:8])
    with pytest.raises(ValueError, match=r"Throttle\.max"):
        await handles[8]
    assert [h.enqueued for h in handles[:3]] == [True, True, True]
    # flow items go one by one: which of them wins is not fixed, how many is
    assert [h.enqueued for h in handles[3:6]].count(True) == 2
    owner, duplicate = sorted(handles[6:8], key=lambda h: not h.enqueued)
    assert owner.enqueued is True and duplicate.enqueued is False
    assert duplicate.existing_id == owner.id
    assert await handles[1].get_state() == "delayed"
    stored = await fields(app, "send", handles[2].id)
    assert stored["priority"] == "4" and "expireAt" in stored
    counts = await app.counts("send")
    assert counts["waiting"] == 5 and counts["delayed"] == 1


async def client_commands(url: str, action: Callable[[], Awaitable[Any]]) -> list[str]:
    """Names of the commands clients sent to Redis while ``action`` ran, in order.

    Read with MONITOR, so it does not depend on how taskora's client talks to Redis;
    commands a script runs (``[lua]``) are left out. One command is one round trip.
    """
    watcher = aioredis.Redis.from_url(url)
    marker = aioredis.Redis.from_url(url)
    sentinel = "end-" + uuid.uuid4().hex
    try:
        marker_port = str((await marker.client_info())["addr"]).rsplit(":", 1)[1]
        seen: list[str] = []
        async with watcher.monitor() as monitor:
            await action()
            await marker.echo(sentinel)
            while True:
                info = await asyncio.wait_for(monitor.next_command(), 20)
                if info["client_type"] == "lua":
                    continue
                if info["client_port"] == marker_port:
                    if sentinel in info["command"]:
                        return seen
                    continue
                seen.append(info["command"].split(" ", 1)[0].upper())
    finally:
        await marker.aclose()
        await watcher.aclose()


async def test_dispatch_many_plain_items_cost_one_round_trip(redis_url: str, prefix: str) -> None:
    app = taskora.App(redis_url, prefix=prefix)

    @app.task()
    async def send(data: int) -> int:
        return data

    try:
        await app._connected_backend()

        async def dispatch_many() -> None:
            handles = send.dispatch_many(
                [{"data": i, "options": {"delay": 60} if i % 3 == 0 else {}} for i in range(60)]
            )
            await asyncio.gather(*handles)

        assert await client_commands(redis_url, dispatch_many) == ["FCALL"]
        counts = await app.counts("send")
        assert counts["waiting"] == 40 and counts["delayed"] == 20
    finally:
        await app.close()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("debounce", {"key": "k", "delay": 5}),
        ("throttle", {"key": "k", "max": 1, "window": "1h"}),
        ("deduplicate", {"key": "k"}),
    ],
)
async def test_each_flow_dispatch_costs_one_round_trip(
    redis_url: str, prefix: str, option: str, value: dict[str, Any]
) -> None:
    app = taskora.App(redis_url, prefix=prefix)

    @app.task()
    async def send(data: int) -> int:
        return data

    try:
        await app._connected_backend()
        handles: list[taskora.ResultHandle[Any]] = []

        async def dispatch() -> None:
            handles.append(send.dispatch(len(handles), **{option: value}))
            await handles[-1]

        for attempt in range(3):  # accepted, then replaced or rejected: the same cost
            assert await client_commands(redis_url, dispatch) == ["FCALL"]
            assert handles[attempt].enqueued is (attempt == 0 or option == "debounce")
    finally:
        await app.close()


async def test_flow_dispatch_repairs_a_wrong_typed_queue_key_without_duplicates(
    redis_url: str, prefix: str
) -> None:
    app = taskora.App(redis_url, prefix=prefix)
    rdb = aioredis.Redis.from_url(redis_url)

    @app.task()
    async def send(data: int) -> int:
        return data

    try:
        base = _base(app, "send")
        await rdb.set(base + "delayed", "not a sorted set")  # written by something else
        handle = send.dispatch(1, debounce={"key": "k", "delay": 60})
        await handle
        assert handle.enqueued is True
        assert await rdb.type(base + "delayed") == b"zset"
        assert await rdb.zrange(base + "delayed", 0, -1) == [handle.id.encode()]
        moved = [k async for k in rdb.scan_iter(match=base + "delayed:malformed:*")]
        assert len(moved) == 1 and await rdb.get(moved[0]) == b"not a sorted set"
        assert await rdb.hget(base + handle.id, "state") == b"delayed"  # created once
        assert await rdb.zcard(base + "delayed") == 1
    finally:
        await app.close()
        await rdb.aclose()


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"throttle": {"key": "k", "max": 0, "window": 1}}, "Throttle.max"),
        ({"throttle": {"key": "k", "max": -3, "window": 1}}, "Throttle.max"),
        ({"throttle": {"key": "k", "max": 1.5, "window": 1}}, "Throttle.max"),
        ({"throttle": {"key": "k", "max": 2, "window": 0}}, "Throttle.window"),
        ({"throttle": {"key": "k", "max": 2, "window": -1}}, "Throttle.window"),
        ({"throttle": {"key": "k", "max": 2, "window": float("nan")}}, "Throttle.window"),
        ({"throttle": {"key": "", "max": 2, "window": 1}}, "Throttle.key"),
        ({"throttle": {"key": "k", "max": 2}}, "throttle"),
        ({"debounce": {"key": "k", "delay": 0}}, "Debounce.delay"),
        ({"debounce": {"key": "k", "delay": -1}}, "Debounce.delay"),
        ({"debounce": {"key": "k", "delay": float("inf")}}, "Debounce.delay"),
        ({"debounce": {"key": "k", "delay": "soon"}}, "Debounce.delay"),
        ({"deduplicate": {"key": "k", "while": ["bogus"]}}, "Deduplicate.states"),
        ({"deduplicate": {"key": "k", "while": ["completed"]}}, "Deduplicate.states"),
        ({"deduplicate": {"key": "k", "while": []}}, "Deduplicate.states"),
        ({"deduplicate": {"key": "k", "while": "waiting"}}, "Deduplicate.states"),
        ({"deduplicate": "k"}, "deduplicate"),
        (
            {"debounce": {"key": "k", "delay": 1}, "throttle": {"key": "k", "max": 1, "window": 1}},
            "got debounce, throttle",
        ),
        (
            {"throttle": {"key": "k", "max": 1, "window": 1}, "deduplicate": {"key": "k"}},
            "got throttle, deduplicate",
        ),
    ],
)
async def test_bad_flow_options_raise_naming_the_option_and_write_nothing(
    make_app: AppFactory, options: dict[str, Any], names: str, store: Store
) -> None:
    app = make_app()

    @app.task()
    async def send(data: int) -> int:
        return data

    with pytest.raises(ValueError, match=names):
        send.dispatch(1, **options)
    await store.assert_nothing_written(app, "send")


async def test_flow_dispatch_with_bad_data_touches_no_counter(
    make_app: AppFactory, store: Store
) -> None:
    app = make_app(max_payload_bytes=100)

    @app.task()
    async def send(data: object) -> object:
        return data

    throttle = taskora.Throttle(key="k", max=1, window="1h")
    for bad in (float("nan"), {1, 2}, "x" * 200):
        with pytest.raises(taskora.SerializationError):
            send.dispatch(bad, throttle=throttle)
        with pytest.raises(taskora.SerializationError):
            send.dispatch(bad, deduplicate={"key": "k"})
    await store.assert_nothing_written(app, "send")
    good = send.dispatch(1, throttle=throttle)
    await good
    assert good.enqueued is True  # the counter was never consumed
