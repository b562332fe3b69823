"""Malformed data planted directly in Redis: every poison job ends failed with a reason,
no other job is lost, and the worker keeps running (docs/design.md#decisions, 4; fault test
T8e)."""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import redis.asyncio as aioredis

import taskora


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def _job_fields(job_id: str, data: bytes | str, **extra: str) -> dict[str, bytes | str]:
    fields: dict[str, bytes | str] = {
        "ts": "1795890056770",
        "_v": "1",
        "attempt": "1",
        "maxAttempts": "1",
        "state": "waiting",
        "priority": "0",
        "data": data,
    }
    fields.update(extra)
    return fields


async def test_poison_jobs_fail_with_reason_and_nothing_else_is_lost(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    app = taskora.App(redis_url, prefix=prefix)
    seen: list[object] = []

    @app.task(concurrency=4)
    async def work(data: object) -> object:
        seen.append(data)
        return data

    base = f"taskora:{prefix}:{{work}}:"
    marker_file = tmp_path / "pwned"
    poison = {
        "string-key": str(uuid.uuid4()),
        "bad-expire": str(uuid.uuid4()),
        "bad-limit": str(uuid.uuid4()),
        "not-json": str(uuid.uuid4()),
        "dangling": str(uuid.uuid4()),
        "bad-utf8": str(uuid.uuid4()),
        "pickle": str(uuid.uuid4()),
    }
    good = [work.dispatch(i) for i in range(50)]
    await asyncio.gather(*good)
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.set(base + poison["string-key"], "garbage")
        await r.hset(
            base + poison["bad-expire"],
            mapping=_job_fields(poison["bad-expire"], "1", expireAt="abc"),
        )
        await r.hset(
            base + poison["bad-limit"],
            mapping=_job_fields(
                poison["bad-limit"], "1", concurrencyKey="k", concurrencyLimit="abc"
            ),
        )
        await r.hset(
            base + poison["not-json"], mapping=_job_fields(poison["not-json"], "{not json")
        )
        await r.hset(
            base + poison["bad-utf8"], mapping=_job_fields(poison["bad-utf8"], b'"\xff\xfe"')
        )
        payload = pickle.dumps(_Exploit(str(marker_file)))
        await r.hset(base + poison["pickle"], mapping=_job_fields(poison["pickle"], payload))
        for job_id in poison.values():
            await r.lpush(base + "wait", job_id)
        await r.zadd(base + "marker", {"0": 0})
        more = [work.dispatch(i) for i in range(50, 100)]
        async with app:
            results = await asyncio.wait_for(asyncio.gather(*(h.result for h in good + more)), 60)
            assert results == list(range(100))
            for name, job_id in poison.items():
                handle = work.handle(job_id)
                try:
                    await handle.wait_for(20)
                except taskora.JobFailedError as exc:
                    assert "malformed" in exc.error, (name, exc.error)
                else:
                    raise AssertionError(f"{name} did not fail")
            # the worker is still healthy
            assert await work.dispatch("after").wait_for(20) == "after"
        failed = {m.decode() for m in await r.zrange(base + "failed", 0, -1)}
        assert set(poison.values()) <= failed
        assert await r.type(base + poison["string-key"] + ":malformed") == b"string"
        for job_id in poison.values():  # every id has a failed hash: none vanished
            assert await r.hget(base + job_id, "state") == b"failed"
        assert await r.llen(base + "active") == 0
        assert not marker_file.exists(), "a pickle payload was unpickled"
        assert len(seen) == 101
    finally:
        await r.aclose()
        await app.close()


async def test_structural_key_of_wrong_type_is_moved_aside(redis_url: str, prefix: str) -> None:
    app = taskora.App(redis_url, prefix=prefix)

    @app.task()
    async def echo(data: int) -> int:
        return data

    base = f"taskora:{prefix}:{{echo}}:"
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.set(base + "wait", "not a list")
        await r.set(base + "active", "not a list either")
        handles = [echo.dispatch(i) for i in range(5)]
        async with app:
            assert await asyncio.wait_for(asyncio.gather(*(h.result for h in handles)), 30) == list(
                range(5)
            )
        moved = [k.decode() async for k in r.scan_iter(match=f"taskora:{prefix}:*malformed*")]
        assert len(moved) == 2
    finally:
        await r.aclose()
        await app.close()


def test_pickle_is_never_imported() -> None:
    code = (
        "import sys, asyncio, taskora\n"
        "app = taskora.App('memory://')\n"
        "@app.task()\n"
        "async def t(d): return d\n"
        "async def main():\n"
        "    async with app:\n"
        "        assert await t.dispatch({'a': 1}).wait_for(10) == {'a': 1}\n"
        "asyncio.run(main())\n"
        "print('pickle' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


async def test_waiting_on_a_malformed_job_never_hangs(redis_url: str, prefix: str) -> None:
    app = taskora.App(redis_url, prefix=prefix)

    @app.task()
    async def echo(data: int) -> int:
        return data

    job_id = str(uuid.uuid4())
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.lpush(f"taskora:{prefix}:{{echo}}:wait", job_id)
        async with app:
            handle = echo.handle(job_id)
            # Either the worker already failed it as malformed, or the waiter found no job:
            # both end the wait at once, neither hangs.
            try:
                await handle.wait_for(30)
            except taskora.JobFailedError as exc:
                assert "malformed" in exc.error
            except taskora.JobNotFoundError:
                pass
            else:
                raise AssertionError("a dangling job cannot complete")
    finally:
        await r.aclose()
        await app.close()


async def test_wrong_typed_active_list_is_repaired_by_the_worker(
    redis_url: str, prefix: str
) -> None:
    app = taskora.App(redis_url, prefix=prefix)

    @app.task()
    async def echo(data: int) -> int:
        return data

    r = aioredis.Redis.from_url(redis_url)
    try:
        handles = [echo.dispatch(i) for i in range(3)]
        await asyncio.gather(*handles)
        await r.set(f"taskora:{prefix}:{{echo}}:active", "foreign data")  # after the enqueue
        async with app:
            results = await asyncio.wait_for(asyncio.gather(*(h.result for h in handles)), 30)
        assert results == [0, 1, 2]
        assert await r.get(f"taskora:{prefix}:{{echo}}:active") is None
    finally:
        await r.aclose()
        await app.close()
