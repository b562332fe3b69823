"""Schedule storage on Redis: three keys under the hash tag ``{schedules}``, one script per
operation (``lua/schedule_*.lua``), each touching only that slot (docs/design.md#scheduling).
Dispatching a fire time is a separate step on the task's own slot (``enqueue_flow.lua``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import ScheduleExpect
from .keys import schedule_keys
from .scripts import SCRIPTS

if TYPE_CHECKING:
    from .backend import RedisBackend

__all__ = ["schedule_due", "schedule_lock", "schedule_read", "schedule_write"]


async def schedule_lock(backend: RedisBackend, token: str, ttl_ms: int, release: bool) -> bool:
    lock = schedule_keys(backend.prefix)[2]
    with backend.errors():
        held = await SCRIPTS["schedule_lock"](
            backend.client, [lock], [token, ttl_ms, "1" if release else "0"]
        )
    return bool(held)


async def schedule_due(
    backend: RedisBackend, token: str, limit: int
) -> tuple[int, list[tuple[str, int, str]]] | None:
    with backend.errors():
        reply = await SCRIPTS["schedule_due"](
            backend.client, list(schedule_keys(backend.prefix)), [token, limit]
        )
    if reply is None:
        return None
    now = int(reply[0])
    due = [
        (_text(reply[i]), int(float(_text(reply[i + 1]))), _text(reply[i + 2]))
        for i in range(1, len(reply), 3)
    ]
    return now, due


async def schedule_read(
    backend: RedisBackend, name: str | None
) -> list[tuple[str, str, int | None]]:
    records, nexts, _ = schedule_keys(backend.prefix)
    with backend.errors():
        reply = await SCRIPTS["schedule_read"](backend.client, [records, nexts], [name or ""])
    out = []
    for i in range(0, len(reply), 3):
        score = _text(reply[i + 2])
        out.append((_text(reply[i]), _text(reply[i + 1]), int(float(score)) if score else None))
    return out


async def schedule_write(
    backend: RedisBackend,
    name: str,
    expect: ScheduleExpect,
    record: str | None,
    next_ms: int | None,
) -> bool:
    records, nexts, _ = schedule_keys(backend.prefix)
    args: list[Any] = [name, *_mode(expect.record), *_mode(expect.next_ms)]
    args += ["" if record is None else record, "" if next_ms is None else next_ms]
    with backend.errors():
        done = await SCRIPTS["schedule_write"](backend.client, [records, nexts], args)
    return bool(done)


def _mode(value: Any) -> tuple[str, Any]:
    if value is ScheduleExpect.ANY:
        return "any", ""
    if value is None:
        return "none", ""
    return "is", value


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
