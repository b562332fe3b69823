"""Batch collect for the memory backend: step for step what ``redis/lua/collect.lua`` and
``collect_drain`` in ``lib.lua`` do (docs/design.md#collect), each in one synchronous call,
with "now" from the backend's clock (so a virtual clock drives the flushes)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .base import EnqueueResult, Flow, NewJob

if TYPE_CHECKING:
    from .memory import MemoryBackend, _Task

__all__ = ["Buffer", "collect_drain", "collect_push"]

SEEN_MS = 120_000  # how long a dispatch id is remembered, as in collect.lua


@dataclass(eq=False)
class Buffer:
    """One key's buffer: the reference's ``:items``, ``:meta`` and ``:job`` keys."""

    job_id: str
    first_at: int
    last_at: int = 0
    items: list[str] = field(default_factory=list)


def collect_push(backend: MemoryBackend, task: str, job: NewJob, flow: Flow) -> EnqueueResult:
    t = backend._t(task)
    now = backend.now_ms()
    seen = t.collect_seen  # dispatch ids of the last SEEN_MS, oldest first (collect:seen)
    while seen and next(iter(seen.values())) < now - SEEN_MS:
        seen.popitem(last=False)
    if job.id in seen:
        return EnqueueResult(True)  # this dispatch was already appended
    seen[job.id] = now
    buffer = t.collect.get(flow.key)
    batch = buffer.job_id if buffer is not None else None
    pending = t.jobs.get(batch) if batch is not None else None
    if buffer is None:
        buffer = t.collect[flow.key] = Buffer(job.id, now)
    buffer.items.append(job.data)
    buffer.last_at = now
    count = len(buffer.items)
    if pending is None or pending["state"] != "delayed" or pending.get("collectKey") != flow.key:
        batch = buffer.job_id = job.id  # a new batch job (also after a cancel of the old one)
        backend._create(
            t,
            replace(
                job, data="[]", priority=0, delay_ms=flow.delay_ms, ttl_ms=0, concurrency_key=""
            ),
            now,
            {"collectKey": flow.key},
            event=False,
        )
        t.jobs[batch].pop("delay", None)  # its due time is set below, as for every append
    assert batch is not None
    if flow.max > 0 and count >= flow.max:
        t.due.pop(batch, None)  # its heap entry goes stale and is skipped
        collect_drain(backend, task, t, batch, flow.key, now)
        t.jobs[batch]["state"] = "waiting"
        backend._requeue(t, batch, 0, now)
        backend._set_marker(t, 0)
        backend._emit(t, batch, "waiting")
    else:
        due = now + flow.delay_ms
        if flow.window_ms > 0:
            due = min(due, buffer.first_at + flow.window_ms)
        backend._add_delayed(t, batch, due)
        backend._set_marker(t, due, lower_only=True)
        backend._emit(t, batch, "collect", "count", count, "key", flow.key)
    return EnqueueResult(True, existing_id=None if batch == job.id else batch)


def collect_drain(
    backend: MemoryBackend, task: str, t: _Task, job_id: str, key: str, now: int
) -> bool:
    """Move the buffer into its batch job's data; False (and the job ends cancelled) when
    the job is not the buffer's batch or there is nothing to run."""
    job = t.jobs[job_id]
    job.pop("collectKey", None)  # a retry runs the same batch again
    buffer = t.collect.get(key)
    if buffer is not None and buffer.job_id == job_id:
        del t.collect[key]
        job["data"] = "[" + ",".join(buffer.items) + "]"
        if buffer.items:
            return True
    job["cancelReason"] = "empty collect batch"
    backend._end(task, t, job_id, "cancelled", now, reason="empty collect batch")
    return False
