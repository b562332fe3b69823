"""Events on Redis across processes and connection loss: fan-out, resume after CLIENT KILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

import taskora
from tests.conftest import wait_until
from tests.processes import ledger_lines


def _listener(url: str, prefix: str, out: Path, tasks: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mp.listener", url, prefix, str(out), *tasks],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != b"READY":
        proc.kill()
        proc.wait()
        raise AssertionError(f"listener did not start: {line!r} {proc.stdout.read()!r}")
    return proc


def _lines(path: Path) -> list[str]:
    return ledger_lines(path)


async def test_three_listening_processes_each_get_every_event_in_order(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """Events caused by this process (the dispatches, a worker) reach three other processes
    that only listen; each gets every event once, in stream order per job."""
    names = [f"fan{i}" for i in range(4)]
    outs = [tmp_path / f"listener{i}.txt" for i in range(3)]
    procs = [_listener(redis_url, prefix, out, names) for out in outs]
    app = taskora.App(redis_url, prefix=prefix)
    try:
        tasks = []
        for name in names:

            async def handler(data: int) -> int:
                return data

            tasks.append(app.task(name, concurrency=20)(handler))
        await app.start()
        handles = []
        for t in tasks:
            handles += t.dispatch_many([{"data": i} for i in range(150)])
        ids = {
            await h: t.name
            for h, t in zip(handles, [t for t in tasks for _ in range(150)], strict=True)
        }
        for h in handles:
            await h.wait_for(60)
        expected = 3 * len(ids)
        for out in outs:
            await wait_until(lambda o=out: len(_lines(o)) >= expected, timeout=60)
        await asyncio.sleep(0.2)  # a duplicate would show up now
        for out in outs:
            lines = _lines(out)
            assert len(lines) == expected
            per_job: dict[str, list[str]] = {}
            for line in lines:
                kind, task, job = line.split()
                assert ids[job] == task
                per_job.setdefault(job, []).append(kind)
            assert set(per_job) == set(ids)
            assert all(k == ["waiting", "active", "completed"] for k in per_job.values())
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        await app.close()


async def _kill_reader(r: aioredis.Redis) -> int:
    """CLIENT KILL the events reader connection of this process, once it is connected (after
    the previous kill it reconnects with a backoff a loaded machine stretches); how many were
    killed."""
    name = f"taskora:events:{os.getpid()}"

    async def ids() -> list[str]:
        return [c["id"] for c in await r.client_list() if c.get("name") == name]

    await wait_until(ids, timeout=30)
    killed = 0
    for client_id in await ids():
        killed += await r.execute_command("CLIENT", "KILL", "ID", client_id)
    return killed


async def test_reader_resumes_after_client_kill_nothing_lost_nothing_twice(
    redis_url: str, prefix: str
) -> None:
    app = taskora.App(redis_url, prefix=prefix)

    @app.task("resume", concurrency=10)
    async def resume(data: int) -> int:
        return data

    seen: list[tuple[str, str]] = []
    for kind in ("waiting", "active", "completed"):
        resume.on(kind, lambda e, k=kind: seen.append((k, e.id)))
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await app.start()
        reader: Any = app._events()._source
        ids: list[str] = []
        kills = 0
        for _ in range(8):
            handles = resume.dispatch_many([{"data": i} for i in range(40)])
            ids += [await h for h in handles]
            await wait_until(lambda: reader.reads > 0)
            kills += await _kill_reader(r)  # while events are being written and read
            for h in handles:
                await h.wait_for(30)
            await asyncio.sleep(0.02)
            kills += await _kill_reader(r)  # while the reader is blocked
        assert kills >= 16
        await wait_until(lambda: len(seen) >= 3 * len(ids), timeout=30)
        await asyncio.sleep(0.2)
        counts = Counter(seen)
        assert len(seen) == 3 * len(ids)
        assert all(n == 1 for n in counts.values())
        assert {job for _, job in seen} == set(ids)
    finally:
        await r.aclose()
        await app.close()


async def test_reader_replays_a_batch_whose_enrichment_failed(redis_url: str, prefix: str) -> None:
    """The cursor moves only after delivery: a failed HMGET pipeline reads the batch again."""
    app = taskora.App(redis_url, prefix=prefix)

    @app.task("enrich")
    async def enrich(data: int) -> int:
        return data * 3

    seen: list[Any] = []
    errors: list[Any] = []
    enrich.on("completed", seen.append)
    app.on("worker:error", errors.append)
    await app.start()
    try:
        backend: Any = app.backend
        real = backend.client.pipeline
        failures = 2

        async def flaky(commands: Any) -> Any:
            nonlocal failures
            if failures and commands and commands[0][0] == "HMGET":
                failures -= 1
                raise ConnectionError("injected")
            return await real(commands)

        backend.client.pipeline = flaky
        job = await enrich.dispatch(7)
        assert await enrich.handle(job).wait_for(20) == 21
        await wait_until(lambda: len(seen) == 1)
        await asyncio.sleep(0.1)
        assert [(e.id, e.result) for e in seen] == [(job, 21)]
        assert failures == 0 and len(errors) >= 1
    finally:
        await app.close()


async def test_one_xread_serves_every_listened_task(redis_url: str, prefix: str) -> None:
    """No command per event: the reader's XREAD calls stay far below the events it gets."""
    app = taskora.App(redis_url, prefix=prefix)
    tasks = []
    for i in range(3):

        async def handler(data: int) -> int:
            return data

        tasks.append(app.task(f"one{i}", concurrency=50)(handler))
    seen: list[Any] = []
    app.on("task:completed", seen.append)
    await app.start()
    try:
        handles = []
        for t in tasks:
            handles += t.dispatch_many([{"data": i} for i in range(300)])
        for h in handles:
            await h.wait_for(30)
        await wait_until(lambda: len(seen) == 900)
        reader: Any = app._events()._source
        assert reader.reads + reader.enrichments < 900 / 2
    finally:
        await app.close()


async def test_listener_added_after_start_trusts_no_clock(redis_url: str, prefix: str) -> None:
    """The start cursor is the stream's last entry, not a time: a clock estimate that is
    off (a slow TIME round trip at connect, skew) neither loses nor replays events."""
    app = taskora.App(redis_url, prefix=prefix)

    @app.task("skew")
    async def skew(data: int) -> int:
        return data

    try:
        await app.start()
        before = await skew.dispatch(0)
        await skew.handle(before).wait_for(20)
        backend: Any = app.backend
        for offset in (5000, -5000):
            backend._offset_ms += offset
            seen: list[Any] = []
            stop = skew.on("completed", seen.append)
            job = await skew.dispatch(1)
            await skew.handle(job).wait_for(20)
            await wait_until(lambda s=seen: len(s) >= 1)
            await asyncio.sleep(0.1)
            assert [e.id for e in seen] == [job]
            stop()
            backend._offset_ms -= offset
    finally:
        await app.close()
