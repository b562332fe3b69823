"""Scheduling: fire times (cron across DST, every, on_missed), declaration errors, the
``app.schedules`` API and the leader's guarantees (docs/design.md#scheduling), on both
backends; the process faults (a leader killed mid-tick, skewed host clocks) on real Redis."""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis

import taskora
from taskora.backends.base import ScheduleExpect
from taskora.schedule import (
    _SCHEDULE_NS,
    ScheduleSpec,
    _fresh_cron_fires,
    cron_fires,
    fire_job_id,
    history_json,
    plan_fires,
)
from taskora.scheduler import Scheduler
from tests.conftest import AppFactory, wait_until

FAST = dict(poll_interval=0.05, lock_ttl=1)


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _fires(expr: str, tz: str, start: datetime, n: int) -> list[datetime]:
    zone = ZoneInfo(tz)
    out = []
    for at in cron_fires(expr, tz, _ms(start)):
        out.append(datetime.fromtimestamp(at / 1000, zone))
        if len(out) == n:
            return out
    return out


# -- fire times (no waiting for real time) ------------------------------------------------
def test_remembered_cron_fire_times_are_the_computed_ones() -> None:
    """cron_fires remembers which fire time follows which and walks on from the latest one;
    whatever order it is asked in (forward by ticks, back, from between fire times, a
    second expression in between), it answers what a fresh computation does."""
    rng = random.Random(13)
    cases = [
        ("* * * * *", None),
        ("30 2 * * *", "Europe/Berlin"),  # the spring-forward gap and the repeated hour
        ("*/20 * * * * *", "America/New_York"),
        ("0 9 * * 1-5", "Asia/Kolkata"),
    ]
    start = _ms(datetime(2024, 3, 30, 12, 0, tzinfo=ZoneInfo("UTC")))
    for _ in range(300):
        expr, tz = rng.choice(cases)
        after = start + rng.randrange(0, 3 * 86_400_000) // 1000 * 1000
        if rng.random() < 0.5:  # most ticks ask for the time after the previous fire time
            after = next(cron_fires(expr, tz, after))
        n = rng.randrange(1, 6)
        got = list(itertools.islice(cron_fires(expr, tz, after), n))
        assert got == list(itertools.islice(_fresh_cron_fires(expr, tz, after), n)), (expr, after)
    with pytest.raises(ValueError, match="5 fields"):
        next(cron_fires("* * *", None, start))


def test_fire_job_ids_and_stored_records_are_the_reference_ones() -> None:
    """The tick's shortcuts give the same strings as the general code: the fire time's job
    id is uuid5 of the name and the time, and the record with its history appended to the
    stem is the full encoding."""
    for name, fire in [("nightly", 1_700_000_000_000), ("ünï/cödé", 0), ("", -60_000)]:
        assert fire_job_id(name, fire) == str(uuid.uuid5(_SCHEDULE_NS, f"{name}\x00{fire}"))
    specs = [
        ScheduleSpec.build("a", "t", every=60),
        ScheduleSpec.build("b", "t", cron="0 9 * * 1-5", timezone="Europe/Paris", overlap=True),
        ScheduleSpec.build(
            "c", "t", every=5, data={"ü": [1, 2.5, None], "q": '"'}, on_missed="catch-up"
        ),
    ]
    for spec in specs:
        stem = spec.fired(None, None).to_json()
        for last_run, last_job in [(1_700_000_060_000, fire_job_id("a", 1)), (0, 'od"d\u00e9')]:
            full = spec.fired(last_run, last_job).to_json()
            assert history_json(stem, last_run, last_job) == full
            assert ScheduleSpec.from_json(full) == spec.fired(last_run, last_job)


def test_cron_follows_the_wall_clock_across_dst_in_berlin() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # Spring forward (29 March 2026, 02:00 -> 03:00): 02:30 does not exist, it runs at 03:00.
    got = _fires("30 2 * * *", "Europe/Berlin", datetime(2026, 3, 28, 12, tzinfo=berlin), 2)
    assert [str(d) for d in got] == ["2026-03-29 03:00:00+02:00", "2026-03-30 02:30:00+02:00"]
    # Fall back (25 October 2026, 03:00 -> 02:00): 02:30 happens twice, the job runs once.
    got = _fires("30 2 * * *", "Europe/Berlin", datetime(2026, 10, 24, 12, tzinfo=berlin), 2)
    assert [str(d) for d in got] == ["2026-10-25 02:30:00+02:00", "2026-10-26 02:30:00+01:00"]
    # A 09:00 job stays at 09:00 local: its UTC time moves by an hour.
    got = _fires("0 9 * * *", "Europe/Berlin", datetime(2026, 3, 27, 12, tzinfo=berlin), 2)
    assert [str(d) for d in got] == ["2026-03-28 09:00:00+01:00", "2026-03-29 09:00:00+02:00"]
    assert _ms(got[1]) - _ms(got[0]) == 23 * 3_600_000


def test_cron_follows_the_wall_clock_across_dst_in_new_york() -> None:
    ny = ZoneInfo("America/New_York")
    # Fall back (1 November 2026): an hourly job runs every real hour, 01:00 twice.
    got = _fires("0 * * * *", "America/New_York", datetime(2026, 11, 1, 0, 30, tzinfo=ny), 3)
    assert [str(d) for d in got] == [
        "2026-11-01 01:00:00-04:00",
        "2026-11-01 01:00:00-05:00",
        "2026-11-01 02:00:00-05:00",
    ]
    # Spring forward (8 March 2026) with a 6-field expression (seconds first): not skipped.
    got = _fires("15 30 2 * * *", "America/New_York", datetime(2026, 3, 7, 12, tzinfo=ny), 2)
    assert [str(d) for d in got] == ["2026-03-08 03:00:15-04:00", "2026-03-09 02:30:15-04:00"]
    got = _fires("*/20 * * * * *", "America/New_York", datetime(2026, 1, 1, tzinfo=ny), 4)
    assert [d.second for d in got] == [20, 40, 0, 20]


HOUR = 3_600_000


@pytest.mark.parametrize(
    ("on_missed", "expected"),
    [
        ("catch-up-limit:5", 5),
        ("catch-up-limit:100", 5),
        ("catch-up-limit:2", 2),
        ("catch-up", 5),
        ("skip", 1),
    ],
)
@pytest.mark.parametrize("kind", ["every", "cron"])
def test_missed_fire_times(on_missed: str, expected: int, kind: str) -> None:
    due = _ms(datetime(2026, 1, 1, 10, tzinfo=ZoneInfo("UTC")))
    now = due + 4 * HOUR + HOUR // 2  # five fire times have come: due, +1h, ..., +4h
    timing: dict[str, Any] = {"every": "1h"} if kind == "every" else {"cron": "0 * * * *"}
    spec = ScheduleSpec.build("s", "t", on_missed=on_missed, **timing)
    plan = plan_fires(spec, due, now)
    all_five = [due + i * HOUR for i in range(5)]
    assert list(plan.fires) == all_five[-expected:]  # the latest ones when limited
    assert plan.next_ms == due + 5 * HOUR
    assert not plan.more


def test_a_long_catch_up_goes_on_in_batches() -> None:
    spec = ScheduleSpec.build("s", "t", every=1, on_missed="catch-up")
    plan = plan_fires(spec, 0, 250_000)
    assert len(plan.fires) == 100 and plan.more and plan.next_ms == 100_000


# -- declaration errors ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of every= or cron="),
        ({"every": 5, "cron": "* * * * *"}, "exactly one of every= or cron="),
        ({"cron": "61 * * * *"}, "invalid cron"),
        ({"cron": "* * *"}, "5 fields"),
        ({"cron": "99 * * * * *"}, "seconds"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"every": 0}, "every must be positive"),
        ({"every": -1}, "must not be negative"),
        ({"every": "soon"}, "cannot parse"),
        ({"every": 5, "on_missed": "later"}, "on_missed"),
        ({"every": 5, "on_missed": "catch-up-limit:0"}, "on_missed"),
        ({"every": 5, "timezone": "UTC"}, "cron schedules only"),
        ({"every": 5, "data": float("nan")}, "data"),
        ({"every": 5, "task": "nope"}, "unknown task"),
    ],
)
async def test_bad_declarations_raise_value_error_and_write_nothing(
    make_app: AppFactory, kwargs: dict[str, Any], message: str
) -> None:
    app = make_app(scheduler=FAST)

    @app.task("job")
    async def job(data: Any) -> None:
        return None

    kwargs.setdefault("task", "job")
    with pytest.raises(ValueError, match=message):
        app.schedule("bad", **kwargs)
    with pytest.raises(ValueError, match="exactly one"):

        @app.task("inline", schedule={"data": 1})
        async def inline(data: Any) -> None:
            return None

    assert "inline" not in app.tasks
    await app.start(tasks=[])
    assert app.scheduler is not None
    await app.scheduler.tick()
    assert await app.schedules.list() == []


# -- behaviour on both backends --------------------------------------------------------------
async def _scheduled_jobs(app: taskora.App, task: str) -> list[dict[str, str]]:
    backend = await app._connected_backend()
    jobs = []
    for state in ("waiting", "active", "completed"):
        jobs += [fields for _, fields in await backend.list_jobs(task, state, 0, 10_000)]
    return sorted((j for j in jobs if "fireAt" in j), key=lambda j: int(j["fireAt"]))


async def test_interval_and_inline_schedules_fire_on_their_grid(make_app: AppFactory) -> None:
    app = make_app(scheduler=FAST)

    @app.task("tick", schedule=taskora.Schedule(every="200ms", overlap=True))
    async def tick(data: Any) -> None:
        return None

    @app.task("report")
    async def report(data: Any) -> None:
        return None

    app.schedule("nightly", task=report, data={"kind": "daily"}, every="300ms", overlap=True)
    # No workers: the jobs stay waiting to be looked at (overlap=True: waiting jobs of the
    # same schedule do not hold the next fire time back).
    await app.start(tasks=[])
    await wait_until(lambda: _count(app, "tick", 3))
    await wait_until(lambda: _count(app, "report", 2))
    fires = [int(j["fireAt"]) for j in await _scheduled_jobs(app, "tick")]
    assert all(b - a == 200 for a, b in itertools.pairwise(fires))
    reports = await _scheduled_jobs(app, "report")
    assert reports[0]["data"] == '{"kind":"daily"}'
    infos = {i.name: i for i in await app.schedules.list()}
    assert set(infos) == {"tick", "nightly"}
    assert infos["nightly"].every == timedelta(milliseconds=300)
    assert infos["nightly"].last_run is not None and infos["nightly"].last_run.tzinfo
    assert infos["nightly"].next_run is not None and not infos["nightly"].paused
    assert infos["nightly"].last_job_id == fire_job_id("nightly", _ms(infos["nightly"].last_run))


class TickCounter:
    """Counts the finished ticks of an app's scheduler: a test waits for ticks, which a
    loaded machine stretches, rather than for a wall-clock time, which it does not."""

    def __init__(self, app: taskora.App) -> None:
        assert app.scheduler is not None
        self.done = 0
        tick = app.scheduler.tick

        async def counted() -> int:
            try:
                return await tick()
            finally:
                self.done += 1

        app.scheduler.tick = counted  # type: ignore[method-assign]

    async def wait(self, more: int) -> None:
        """Until ``more`` further ticks have finished."""
        target = self.done + more
        await wait_until(lambda: self.done >= target)


async def test_a_stop_lets_the_fire_time_in_progress_finish(make_app: AppFactory) -> None:
    """A graceful stop waits for the tick's current fire time (dispatch and re-arm), so the
    schedule shows that run as its last one and nothing is left for the next leader to redo."""
    app = make_app(scheduler=FAST)

    @app.task("beat", schedule=taskora.Schedule(every="100ms", overlap=True))
    async def beat(data: Any) -> None:
        return None

    await app.start(tasks=[])
    scheduler = app.scheduler
    assert scheduler is not None
    entered, release = asyncio.Event(), asyncio.Event()
    fire = scheduler._fire

    async def held(*args: Any) -> tuple[int, bool]:
        entered.set()
        await release.wait()  # the fire time is in progress when stop() is called
        return await fire(*args)

    scheduler._fire = held  # type: ignore[method-assign]
    await asyncio.wait_for(entered.wait(), 20)
    stopping = asyncio.create_task(scheduler.stop())
    await asyncio.sleep(0)  # stop() has begun waiting for the tick
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, 20)
    [info] = await app.schedules.list()
    [job] = await _scheduled_jobs(app, "beat")
    assert info.last_run is not None and _ms(info.last_run) == int(job["fireAt"])
    await app.close()


async def _count(app: taskora.App, task: str, at_least: int) -> bool:
    return len(await _scheduled_jobs(app, task)) >= at_least


async def test_declared_schedules_are_known_once_start_returns(make_app: AppFactory) -> None:
    app = make_app(scheduler=FAST)

    @app.task("job", schedule=taskora.Schedule(every="1h"))
    async def job(data: Any) -> Any:
        return data

    app.schedule("nightly", task=job, cron="0 3 * * *")
    await app.start(tasks=[])
    assert sorted(info.name for info in await app.schedules.list()) == ["job", "nightly"]
    await app.schedules.pause("nightly")  # no tick has to run first


async def test_pause_resume_update_remove_trigger(make_app: AppFactory) -> None:
    app = make_app(scheduler=FAST)

    @app.task("job")
    async def job(data: Any) -> Any:
        return data

    app.schedule("s", task=job, every="150ms", data=7, overlap=True)
    await app.start(tasks=[])
    ticks = TickCounter(app)
    await wait_until(lambda: _count(app, "job", 1))
    await app.schedules.pause("s")
    info = (await app.schedules.list())[0]
    assert info.paused and info.next_run is None and info.last_run is not None
    # a tick that read the schedule before the pause may still land its job: it has once
    # the tick after it has finished too
    await ticks.wait(2)
    frozen = len(await _scheduled_jobs(app, "job"))
    await ticks.wait(8)  # 7 polls of 50 ms between them: over two intervals, paused
    assert len(await _scheduled_jobs(app, "job")) == frozen
    await app.schedules.resume("s")
    await wait_until(lambda: _count(app, "job", frozen + 1))

    await app.schedules.update("s", cron="0 0 1 1 *", timezone="Europe/Berlin", data=8)
    info = (await app.schedules.list())[0]
    assert info.cron == "0 0 1 1 *" and info.every is None and info.timezone == "Europe/Berlin"
    assert (
        info.next_run is not None and info.next_run.astimezone(ZoneInfo("Europe/Berlin")).hour == 0
    )
    with pytest.raises(ValueError, match="invalid cron"):
        await app.schedules.update("s", cron="nope * * * *")
    with pytest.raises(ValueError, match="unknown schedule"):
        await app.schedules.pause("missing")

    before = (await app.schedules.list())[0]
    handle = await app.schedules.trigger("s")
    job_id = await handle
    assert (await app.backend.job_fields("job", job_id))["data"] == "8"  # type: ignore[attr-defined]
    after = (await app.schedules.list())[0]
    assert (after.next_run, after.last_run) == (before.next_run, before.last_run)

    assert await app.schedules.remove("s") is True
    assert await app.schedules.list() == []
    assert await app.schedules.remove("s") is False


async def test_re_registering_keeps_history_and_next_run(make_app: AppFactory) -> None:
    first = make_app(scheduler=FAST)

    @first.task("job")
    async def job(data: Any) -> None:
        return None

    first.schedule("s", task=job, every="200ms", overlap=True)
    await first.start(tasks=[])
    await wait_until(lambda: _count(first, "job", 2))
    await first.close()
    before = (await first.schedules.list())[0]
    assert before.last_run is not None

    second = make_app(scheduler={"poll_interval": 60, "lock_ttl": 120})
    second.task("job")(job.handler)  # type: ignore[arg-type]
    second.schedule(
        "s", task="job", every="200ms", data={"v": 2}, overlap=True
    )  # same timing, new data
    await second.start(tasks=[])
    await wait_until(lambda: second.scheduler is not None and second.scheduler._registered)
    after = (await second.schedules.list())[0]
    assert after.data == {"v": 2}
    assert (after.last_run, after.last_job_id) == (before.last_run, before.last_job_id)
    assert after.next_run == before.next_run  # so a downtime is caught up, not forgotten


@pytest.mark.parametrize(("on_missed", "expected"), [("catch-up", 5), ("skip", 1)])
async def test_catch_up_after_downtime(make_app: AppFactory, on_missed: str, expected: int) -> None:
    app = make_app(scheduler=FAST)

    @app.task("job")
    async def job(data: Any) -> None:
        return None

    app.schedule("s", task=job, every="1h", on_missed=on_missed, overlap=True)
    backend = await app._connected_backend()
    from taskora.scheduler import register

    await register(backend, "s", app._declared["s"])
    # The schedule's last armed fire time is 4.5 hours ago: the process was down since.
    due = backend.now_ms() - 4 * HOUR - HOUR // 2
    assert await backend.schedule_write("s", ScheduleExpect(), app._declared["s"].to_json(), due)
    await app.start(tasks=[])
    await wait_until(lambda: _count(app, "job", expected))
    await asyncio.sleep(0.3)  # several more ticks: nothing else is due for an hour
    fires = [int(j["fireAt"]) for j in await _scheduled_jobs(app, "job")]
    assert fires == [due + i * HOUR for i in range(5)][-expected:]
    info = (await app.schedules.list())[0]
    assert info.next_run is not None and _ms(info.next_run) == due + 5 * HOUR


@pytest.mark.parametrize("overlap", [False, True])
async def test_overlap(make_app: AppFactory, overlap: bool) -> None:
    app = make_app(scheduler=FAST)
    release = asyncio.Event()
    runs: list[str] = []

    @app.task("slow")
    async def slow(data: Any, ctx: taskora.Context) -> None:
        runs.append(ctx.id)
        await release.wait()

    app.schedule("s", task=slow, every="100ms", overlap=overlap)
    await app.start()
    ticks = TickCounter(app)
    await wait_until(lambda: len(runs) >= 1)
    await ticks.wait(16)  # 15 polls of 50 ms: seven fire times while the first run goes on
    created = len(await _scheduled_jobs(app, "slow"))
    if overlap:
        assert created >= 4
    else:
        assert created == 1 and len(runs) == 1
    release.set()
    await wait_until(lambda: len(runs) >= 2)  # once it finishes, the schedule goes on


async def test_unknown_task_leaves_the_schedule_armed(make_app: AppFactory) -> None:
    owner = make_app(scheduler=False)

    @owner.task("mystery")
    async def mystery(data: Any) -> None:
        return None

    owner.schedule("s", task=mystery, every="100ms")
    from taskora.scheduler import register

    await register(await owner._connected_backend(), "s", owner._declared["s"])
    stranger = make_app(scheduler=FAST)  # runs a scheduler but has no task "mystery"
    await stranger.start(tasks=[])
    await asyncio.sleep(0.5)
    info = (await owner.schedules.list())[0]
    assert not info.paused and info.next_run is not None  # still armed, due
    assert _ms(info.next_run) <= (await owner._connected_backend()).now_ms()
    assert await _scheduled_jobs(owner, "mystery") == []
    await stranger.close()
    knower = make_app(scheduler=FAST)
    knower.task("mystery")(mystery.handler)  # type: ignore[arg-type]
    await knower.start(tasks=[])
    await wait_until(lambda: _count(owner, "mystery", 1))


async def test_two_leaders_with_the_same_read_dispatch_a_fire_time_once(
    make_app: AppFactory,
) -> None:
    """Two leaders overlapping (one paused past its lock): both dispatch the same due fire
    time. One job; even when that job is already gone (trimmed), the mark holds."""
    app = make_app(scheduler=False)

    @app.task("job")
    async def job(data: Any) -> None:
        return None

    app.schedule("s", task=job, every="1h", overlap=True)
    backend = await app._connected_backend()
    from taskora.scheduler import register

    await register(backend, "s", app._declared["s"])
    due = backend.now_ms() - 1000
    assert await backend.schedule_write("s", ScheduleExpect(), app._declared["s"].to_json(), due)
    (_, record, _) = (await backend.schedule_read("s"))[0]
    a = Scheduler(app, {}, 50, 1000)
    b = Scheduler(app, {}, 50, 1000)
    now = backend.now_ms()
    sent_a, _ = await a._fire(backend, "s", due, record, now)
    # The job is gone before the stale leader sends the same fire time again.
    job_id = fire_job_id("s", due)
    if isinstance(backend, taskora.MemoryBackend):
        t = backend._t("job")
        backend._remove_waiting(t, job_id)
        backend._delete(t, job_id)
    else:
        await _redis_delete_job(app, job_id)
    sent_b, _ = await b._fire(backend, "s", due, record, now)
    assert (sent_a, sent_b) == (1, 0)
    assert await _scheduled_jobs(app, "job") == []
    info = (await app.schedules.list())[0]
    assert info.last_job_id == job_id and _ms(info.next_run) == due + HOUR  # type: ignore[arg-type]


async def _redis_delete_job(app: taskora.App, job_id: str) -> None:
    from taskora.backends.redis.keys import task_keys

    backend: Any = app.backend
    keys = task_keys(app.prefix, "job")
    await backend.client.execute("LREM", keys.key("wait"), 0, job_id)
    await backend.client.execute("DEL", keys.job(job_id))


# -- processes on a real Redis -------------------------------------------------------------
def _spawn_scheduler(url: str, prefix: str, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mp.sched_proc", url, prefix, "0.25", "catch-up", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    return proc


def _tokens(procs: list[subprocess.Popen[str]]) -> dict[str, subprocess.Popen[str]]:
    out = {}
    for proc in procs:
        assert proc.stdout is not None
        out[proc.stdout.readline().strip()] = proc
    return out


class _Runner:
    """The test process's worker: runs every scheduled job and keeps nothing finished, so a
    fire time dispatched twice would run twice (its job id is not there to stop it)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.runs: Counter[str] = Counter()
        self.created: dict[str, int] = {}  # job id -> its creation time (Redis clock)
        self.app = taskora.App(
            url, prefix=prefix, scheduler=False, retention=taskora.Retention(completed_max=0)
        )

        @self.app.task("beat")
        async def beat(data: Any, ctx: taskora.Context) -> None:
            self.runs[ctx.id] += 1
            self.created[ctx.id] = ctx.timestamp


def _figures(runner: _Runner, first: int, last: int, every: int) -> dict[str, int]:
    grid = {fire_job_id("beat-every", f): f for f in range(first, last + 1, every)}
    return {
        "expected": len(grid),
        "dispatched": sum(1 for i in grid if runner.runs[i]),
        "lost": sum(1 for i in grid if not runner.runs[i]),
        "doubled": sum(1 for i in grid if runner.runs[i] > 1),
        "foreign": sum(1 for i in runner.runs if i not in grid),
    }


async def _idle(runner: _Runner) -> bool:
    counts = await runner.app.counts("beat")
    return counts.get("waiting", 0) == 0 and counts.get("active", 0) == 0


@pytest.mark.redis_only
async def test_sigkill_the_leader_mid_tick(redis_url: str, prefix: str) -> None:
    """T10: three schedulers; the leader is SIGKILLed three times at random points, often
    between dispatching a fire time and re-arming (``--slow-arm`` widens that window). With
    catch-up, no fire time is lost, none runs twice, and the schedule is never disarmed."""
    runner = _Runner(redis_url, prefix)
    await runner.app.start()
    client = aioredis.Redis.from_url(redis_url)
    lock = f"taskora:{prefix}:{{schedules}}:lock"
    procs = [_spawn_scheduler(redis_url, prefix, "--slow-arm", "0.15") for _ in range(3)]
    try:
        by_token = _tokens(procs)
        start_ms = (await runner.app._connected_backend()).now_ms()
        for _ in range(3):
            await wait_until(lambda: _leader(client, lock, by_token), timeout=30)
            await asyncio.sleep(random.uniform(0.2, 0.8))
            token = (await client.get(lock) or b"").decode()
            victim = by_token.pop(token)
            victim.kill()
            victim.wait()
            [info] = await runner.app.schedules.list()
            assert not info.paused and info.next_run is not None  # still armed
            fresh = _spawn_scheduler(redis_url, prefix, "--slow-arm", "0.15")
            procs.append(fresh)
            by_token.update(_tokens([fresh]))
        await wait_until(lambda: _leader(client, lock, by_token), timeout=30)
        await asyncio.sleep(1.0)
        await _stop(procs)
        [info] = await runner.app.schedules.list()
        assert info.last_run is not None and not info.paused and info.next_run is not None
        await wait_until(lambda: _idle(runner), timeout=30)
        first = await _first_fire(runner, start_ms)
        # the last leader's stop (SIGTERM) may cancel its tick between dispatching a fire
        # time and re-arming, as a kill would: that fire ran and is still the next one armed
        last = _ms(info.last_run)
        if fire_job_id("beat-every", _ms(info.next_run)) in runner.runs:
            last = _ms(info.next_run)
        figures = _figures(runner, first, last, 250)
        print("\nT10 scheduler kill figures:", figures)
        assert figures["lost"] == 0 and figures["doubled"] == 0 and figures["foreign"] == 0
        assert figures["expected"] >= 8
    finally:
        await _stop(procs)
        await client.aclose()
        await runner.app.close()


@pytest.mark.redis_only
async def test_schedulers_on_skewed_host_clocks(redis_url: str, prefix: str) -> None:
    """T6: one scheduler's host clock is 30 s ahead, the other's 30 s behind. Fire times come
    from the Redis clock: no job is created early or late, none twice, through a handover."""
    runner = _Runner(redis_url, prefix)
    await runner.app.start()
    client = aioredis.Redis.from_url(redis_url)
    lock = f"taskora:{prefix}:{{schedules}}:lock"
    procs = [
        _spawn_scheduler(redis_url, prefix, "--skew", "30"),
        _spawn_scheduler(redis_url, prefix, "--skew", "-30"),
    ]
    try:
        by_token = _tokens(procs)
        start_ms = (await runner.app._connected_backend()).now_ms()
        await wait_until(lambda: _leader(client, lock, by_token), timeout=30)
        await asyncio.sleep(1.0)
        token = (await client.get(lock) or b"").decode()
        leader = by_token.pop(token)
        leader.send_signal(signal.SIGTERM)  # a graceful handover to the other clock
        leader.wait(timeout=20)
        await wait_until(lambda: _leader(client, lock, by_token), timeout=30)
        await asyncio.sleep(1.0)
        await _stop(procs)
        [info] = await runner.app.schedules.list()
        assert info.last_run is not None
        await wait_until(lambda: _idle(runner), timeout=30)
        first = await _first_fire(runner, start_ms)
        assert first - start_ms < 5000  # not pushed 30 s into the future by a skewed host
        figures = _figures(runner, first, _ms(info.last_run), 250)
        print("\nT6 skewed schedulers figures:", figures)
        grid = {fire_job_id("beat-every", f): f for f in range(first, _ms(info.last_run) + 1, 250)}
        lags = [runner.created[i] - fire for i, fire in grid.items() if i in runner.created]
        assert lags and min(lags) >= 0 and max(lags) < 3000  # never early, never 30 s late
        assert figures["lost"] == 0 and figures["doubled"] == 0 and figures["foreign"] == 0
        assert figures["expected"] >= 6
    finally:
        await _stop(procs)
        await client.aclose()
        await runner.app.close()


async def _first_fire(runner: _Runner, start_ms: int) -> int:
    """The earliest fire time that ran (fire times sit on a 250 ms grid from registration)."""
    ids = set(runner.runs)
    for base in range(start_ms - 2000, start_ms + 5000):
        if fire_job_id("beat-every", base) in ids:
            return base
    raise AssertionError("no fire time found near the start")


async def _leader(
    client: aioredis.Redis, lock: str, by_token: dict[str, subprocess.Popen[str]]
) -> bool:
    token = await client.get(lock)
    return token is not None and token.decode() in by_token


async def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of every= or cron="),
        ({"every": 5, "cron": "* * * * *"}, "exactly one of every= or cron="),
        ({"every": 0}, "every must be positive"),
        ({"every": -3}, "must not be negative"),
        ({"every": True}, "every"),
        ({"cron": "bad"}, "cron"),
        ({"cron": "* * * * *", "timezone": "X/Y"}, "unknown timezone"),
        ({"every": 5, "on_missed": "never"}, "on_missed"),
    ],
)
def test_a_bad_schedule_object_raises_where_it_is_written(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        taskora.Schedule(**kwargs)
