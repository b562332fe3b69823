"""Helpers shared by the backend contract tests: look at what a backend stored."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

import taskora
from taskora.backends.keys import meta_key, root, task_base


def _base(app: taskora.App, task: str) -> str:
    return task_base(app.prefix, task)


async def _connected(app: taskora.App) -> Any:
    return await app._connected_backend()


async def clock_passes(app: taskora.App, ms: int) -> None:
    """Wait until the clock that decides due times and ttls is past ``ms``: the Redis
    server's own TIME, not the process's estimate of it (``now_ms``), which is off by up to
    half the round trip it was measured with, long on a loaded machine."""
    from tests.conftest import wait_until

    async def past() -> bool:
        return await backend_now_ms(app) > ms

    await wait_until(past, timeout=30)


async def backend_now_ms(app: taskora.App) -> int:
    """The backend's clock: the Redis server's TIME, or the memory backend's own."""
    backend = await _connected(app)
    if isinstance(backend, taskora.MemoryBackend):
        return backend.now_ms()
    seconds, micros = await backend.client.execute("TIME")
    return int(seconds) * 1000 + int(micros) // 1000


async def fields(app: taskora.App, task: str, job_id: str) -> dict[str, str]:
    backend = await _connected(app)
    result: dict[str, str] = await backend.job_fields(task, job_id)
    return result


class Store:
    """Looks at what a backend stored: through its own redis-py client on Redis (so the
    checks do not depend on taskora's client), through the backend's tables in memory."""

    def __init__(self, rdb: aioredis.Redis | None) -> None:
        self.rdb = rdb

    async def flow_value(self, app: taskora.App, task: str, name: str) -> str | None:
        """The value under the task's flow key ``name`` (e.g. ``"dedup:k"``), or None."""
        full = _base(app, task) + name
        if self.rdb is None:
            backend = await _connected(app)
            held = backend._t(task).flow_keys.get(full)
            if held is None or (held[1] is not None and backend.now_ms() > held[1]):
                return None
            return str(held[0])
        raw = await self.rdb.get(full)
        return None if raw is None else raw.decode()

    async def flow_pttl(self, app: taskora.App, task: str, name: str) -> int:
        full = _base(app, task) + name
        if self.rdb is None:
            backend = await _connected(app)
            held = backend._t(task).flow_keys.get(full)
            if held is None:
                return -2
            return -1 if held[1] is None else int(held[1] - backend.now_ms())
        return int(await self.rdb.pttl(full))

    async def set_flow_value(self, app: taskora.App, task: str, name: str, value: str) -> None:
        full = _base(app, task) + name
        if self.rdb is None:
            (await _connected(app))._t(task).flow_keys[full] = (value, None)
        else:
            await self.rdb.set(full, value)

    async def conc_counters(self, app: taskora.App, task: str) -> dict[str, int]:
        """Per-key active counters the backend keeps for concurrency keys."""
        if self.rdb is None:
            backend = await _connected(app)
            return dict(backend._t(task).conc)
        prefix = _base(app, task) + "conc:"
        out = {}
        async for key in self.rdb.scan_iter(match=prefix + "*"):
            out[key.decode()[len(prefix) :]] = int(await self.rdb.get(key))
        return out

    async def assert_nothing_written(self, app: taskora.App, task: str) -> None:
        backend = await _connected(app)
        assert sum((await backend.counts(task)).values()) == 0
        if self.rdb is None:
            t = backend._t(task)
            assert not t.jobs and not t.flow_keys
        else:
            meta = meta_key(app.prefix)
            keys = [k.decode() async for k in self.rdb.scan_iter(match=root(app.prefix) + ":*")]
            assert keys == [meta]
