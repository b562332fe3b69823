"""Schedule storage on Redis: three keys under the hash tag ``{schedules}``, one script per
operation (``lua/schedule_*.lua``), each touching only that slot (docs/design.md#scheduling).
Dispatching a fire time is a separate step on the task's own slot (``enqueue_flow.lua``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import ScheduleExpect
from .keys import schedule_keys
from .scripts import ScheduleDue, ScheduleLock, ScheduleRead, ScheduleWrite

if TYPE_CHECKING:
    from .backend import RedisBackend

__all__ = ["schedule_due", "schedule_lock", "schedule_read", "schedule_write"]


async def schedule_lock(backend: RedisBackend, token: str, ttl_ms: int, release: bool) -> bool:
    lock = schedule_keys(backend.prefix)[2]
    with backend.errors():
        return await ScheduleLock(lock, token, ttl_ms, release).run(backend.client)


async def schedule_due(
    backend: RedisBackend, token: str, limit: int
) -> tuple[int, list[tuple[str, int, str]]] | None:
    records, times, lock = schedule_keys(backend.prefix)
    with backend.errors():
        return await ScheduleDue(records, times, lock, token, limit).run(backend.client)


async def schedule_read(
    backend: RedisBackend, name: str | None
) -> list[tuple[str, str, int | None]]:
    records, times, _ = schedule_keys(backend.prefix)
    with backend.errors():
        return await ScheduleRead(records, times, name or "").run(backend.client)


async def schedule_write(
    backend: RedisBackend,
    name: str,
    expect: ScheduleExpect,
    record: str | None,
    next_ms: int | None,
) -> bool:
    records, times, _ = schedule_keys(backend.prefix)
    record_mode, expected_record = _mode(expect.record)
    next_mode, expected_next_ms = _mode(expect.next_ms)
    call = ScheduleWrite(
        records,
        times,
        name=name,
        record_mode=record_mode,
        expected_record=expected_record,
        next_mode=next_mode,
        expected_next_ms=expected_next_ms,
        record="" if record is None else record,
        next_ms="" if next_ms is None else next_ms,
    )
    with backend.errors():
        return await call.run(backend.client)


def _mode(value: Any) -> tuple[str, Any]:
    if value is ScheduleExpect.ANY:
        return "any", ""
    if value is None:
        return "none", ""
    return "is", value
