"""The Redis layout follows the reference's wire format v6 (docs/design.md#decisions, 13)."""

from __future__ import annotations

import asyncio
import binascii

import pytest
import redis.asyncio as aioredis

import taskora
from taskora.backends.redis.keys import task_keys


def _slot(key: str) -> int:
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return binascii.crc_hqx(key.encode(), 0) % 16384


@pytest.mark.parametrize("prefix", [None, "billing"])
def test_every_key_of_a_task_shares_one_cluster_slot(prefix: str | None) -> None:
    keys = task_keys(prefix, "send-email")
    slots = {_slot(k) for k in keys.standard}
    slots |= {_slot(keys.job("abc")), _slot(keys.lock("abc")), _slot(keys.logs("abc"))}
    slots |= {_slot(keys.flow("dedup", "user:1")), _slot(keys.cancel_channel)}
    assert len(slots) == 1
    root = "taskora" if prefix is None else f"taskora:{prefix}"
    assert keys.base == f"{root}:{{send-email}}:"
    assert keys.standard[0] == f"{root}:{{send-email}}:wait"


async def test_job_hash_scores_and_events_match_wire_v6(redis_url: str, prefix: str) -> None:
    app = taskora.App(redis_url, prefix=prefix)

    @app.task("kd", retry=taskora.Retry(attempts=2))
    async def kd(data: dict[str, object]) -> dict[str, object]:
        return {"echo": data}

    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    base = f"taskora:{prefix}:{{kd}}:"
    try:
        waiting = await kd.dispatch({"msg": "waiting-job", "n": 1})
        delayed = await kd.dispatch({"msg": "delayed-job"}, delay=600)
        prio = await kd.dispatch({"msg": "hello"}, priority=5, ttl="1m")
        fields = await r.hgetall(base + waiting)
        assert fields == {
            "ts": fields["ts"],
            "_v": "1",
            "attempt": "1",
            "maxAttempts": "2",
            "state": "waiting",
            "priority": "0",
            "data": '{"msg":"waiting-job","n":1}',
        }
        assert await r.lrange(base + "wait", 0, -1) == [waiting]
        d = await r.hgetall(base + delayed)
        assert d["state"] == "delayed" and d["delay"] == "600000"
        assert await r.zscore(base + "delayed", delayed) == int(d["ts"]) + 600000
        p = await r.hgetall(base + prio)
        assert int(p["expireAt"]) == int(p["ts"]) + 60000
        assert await r.zscore(base + "prioritized", prio) == -5 * 1e13 + int(p["ts"])
        assert await r.zrange(base + "marker", 0, -1, withscores=True) == [("0", 0.0)]
        # creation writes its entry ('waiting' / 'delayed', field names of wire v6)
        created = [f for _, f in await r.xrange(base + "events")]
        assert created == [
            {"event": "waiting", "jobId": waiting},
            {"event": "delayed", "jobId": delayed},
            {"event": "waiting", "jobId": prio},
        ]
        meta = await r.hgetall(f"taskora:{prefix}:meta")
        assert meta["wireVersion"] == "6" and meta["minCompat"] == "6"
        assert meta["writtenBy"] == "taskora-wire-6" and int(meta["writtenAt"]) > 0
        async with app:
            handle = kd.handle(waiting)
            assert await handle.wait_for(20) == {"echo": {"msg": "waiting-job", "n": 1}}
            await kd.handle(prio).wait_for(20)
        done = await r.hgetall(base + waiting)
        assert done["state"] == "completed"
        assert done["result"] == '{"echo":{"msg":"waiting-job","n":1}}'
        assert int(done["finishedOn"]) >= int(done["processedOn"]) >= int(done["ts"])
        assert await r.zscore(base + "completed", waiting) == int(done["finishedOn"])
        kinds = [f["event"] for _, f in await r.xrange(base + "events") if f["jobId"] == waiting]
        assert kinds == ["waiting", "active", "completed"]
        minute = int(done["finishedOn"]) // 60000 * 60000
        assert int(await r.get(f"{base}metrics:completed:{minute}") or 0) >= 1
    finally:
        await r.aclose()
        await app.close()


async def test_incompatible_wire_version_is_refused(redis_url: str, prefix: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.hset(
            f"taskora:{prefix}:meta",
            mapping={
                "wireVersion": 9,
                "minCompat": 8,
                "writtenBy": "taskora-wire-9",
                "writtenAt": 1,
            },
        )
        app = taskora.App(redis_url, prefix=prefix)

        @app.task()
        async def noop(data: None) -> None:
            return None

        with pytest.raises(taskora.WireVersionError, match="upgrade taskora") as info:
            await noop.dispatch(None)
        assert info.value.theirs["wireVersion"] == "9"
        await r.hset(f"taskora:{prefix}:meta", mapping={"wireVersion": "x", "minCompat": "6"})
        with pytest.raises(taskora.WireVersionError, match="corrupt"):
            await noop.dispatch(None)
        await r.hset(f"taskora:{prefix}:meta", mapping={"wireVersion": 5, "minCompat": 5})
        with pytest.raises(taskora.WireVersionError, match="older"):
            await noop.dispatch(None)
        assert await r.exists(f"taskora:{prefix}:{{noop}}:wait") == 0  # nothing was written
        await app.close()
    finally:
        await r.aclose()


async def test_meta_is_per_prefix_and_not_overwritten(redis_url: str, prefix: str) -> None:
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        apps = [taskora.App(redis_url, prefix=prefix) for _ in range(2)]
        for app in apps:
            app.task("noop")(lambda data: None)
        await apps[0].tasks["noop"].dispatch(None)
        first = await r.hgetall(f"taskora:{prefix}:meta")
        await asyncio.sleep(0.01)
        await apps[1].tasks["noop"].dispatch(None)
        assert await r.hgetall(f"taskora:{prefix}:meta") == first
        for app in apps:
            await app.close()
    finally:
        await r.aclose()
