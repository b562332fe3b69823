"""Batch collect on Redis (docs/design.md#collect): one ``collect.lua`` call per dispatch,
plain reads for peek and inspect."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..base import EnqueueResult, Flow, NewJob
from .scripts import CollectItem, CollectPush

if TYPE_CHECKING:
    from .backend import RedisBackend

__all__ = ["collect_info", "collect_peek", "collect_push"]


CHUNK = 500  # items per script call: bounds the time one call holds the server


async def collect_push(
    backend: RedisBackend, task: str, items: Sequence[tuple[NewJob, Flow]]
) -> list[EnqueueResult]:
    keys = backend.keys(task)
    results: list[EnqueueResult] = []
    for lo in range(0, len(items), CHUNK):
        chunk = items[lo : lo + CHUNK]
        call = CollectPush(
            keys,
            [
                CollectItem(
                    job.id,
                    job.data,
                    job.version,
                    job.max_attempts,
                    flow.key,
                    flow.delay_ms,
                    flow.max,
                    flow.window_ms,
                )
                for job, flow in chunk
            ],
        )
        with backend.errors():
            results += await call.run(backend.client)
    return results


async def collect_peek(backend: RedisBackend, task: str, key: str) -> list[str]:
    items_key = backend.keys(task).flow("collect", key) + ":items"
    with backend.errors():
        reply = await backend.client.execute("LRANGE", items_key, 0, -1)
    return [_text(item) for item in reply or ()]


async def collect_info(backend: RedisBackend, task: str, key: str) -> tuple[int, int, int] | None:
    meta_key = backend.keys(task).flow("collect", key) + ":meta"
    with backend.errors():
        reply = await backend.client.execute("HMGET", meta_key, "count", "firstAt", "lastAt")
    try:
        count, first, last = (int(_text(v)) for v in reply)
    except ValueError:  # no buffer (fields absent) or a foreign value
        return None
    return (count, first, last) if count > 0 else None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
