"""Flow control (debounce, throttle, deduplicate, a schedule's fire time) for the memory backend.

Step for step what ``redis/lua/enqueue_flow.lua`` does, on the same key names (kept in
``_Task.flow_keys`` with their expiry), in one synchronous call: as atomic as the script.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..types import NON_TERMINAL_STATES
from .base import EnqueueResult, Flow, NewJob, Terminal
from .keys import task_base

if TYPE_CHECKING:
    from .memory import MemoryBackend, _Task

__all__ = ["enqueue_flow"]

DEFAULT_DEDUP_STATES = frozenset(str(s) for s in NON_TERMINAL_STATES)


def enqueue_flow(backend: MemoryBackend, task: str, job: NewJob, flow: Flow) -> EnqueueResult:
    _check(flow)
    t = backend._t(task)
    if job.id in t.jobs:  # the same dispatch sent twice: created once
        return EnqueueResult(True)
    now = backend.now_ms()
    base = _base(backend.prefix, task)
    if flow.kind == "debounce":
        return _debounce(backend, task, t, job, flow, base + "debounce:" + flow.key, now)
    if flow.kind == "throttle":
        return _throttle(backend, t, job, flow, base + "throttle:" + flow.key, now)
    if flow.kind == "schedule":
        return _schedule(backend, t, job, flow, base + "schedule:" + flow.key, now)
    return _dedup(backend, t, job, flow, base + "dedup:" + flow.key, now)


def _debounce(
    backend: MemoryBackend, task: str, t: _Task, job: NewJob, flow: Flow, key: str, now: int
) -> EnqueueResult:
    old = _get(t, key, now)
    replaced = None
    # Only a job still pending in :delayed is replaced; a promoted, running or finished one
    # is left alone and the new job is independent of it.
    if old is not None and old != job.id and old in t.due:
        previous = t.jobs.get(old)
        if previous is not None and previous["state"] == "delayed":
            del t.due[old]  # its heap entry goes stale and is skipped
            backend._delete(t, old)
            backend._emit(t, old, "debounced", "replacedBy", job.id)
            backend._notify(
                task,
                old,
                Terminal("missing", reason=f"replaced by a later debounced dispatch {job.id}"),
            )
            replaced = old
    _create(backend, t, replace(job, delay_ms=flow.delay_ms), now)
    t.flow_keys[key] = (job.id, now + 2 * flow.delay_ms)
    return EnqueueResult(True, replaced_id=replaced)


def _throttle(
    backend: MemoryBackend, t: _Task, job: NewJob, flow: Flow, key: str, now: int
) -> EnqueueResult:
    held = _get(t, key, now)
    count = int(held) if held is not None and held.isdigit() else 0
    if count >= flow.max:
        return EnqueueResult(False)
    # A fixed window that starts at its first accepted dispatch and ends when the key expires.
    if count == 0:
        t.flow_keys[key] = ("1", now + flow.window_ms)
    else:
        expiry = t.flow_keys[key][1]
        t.flow_keys[key] = (str(count + 1), now + flow.window_ms if expiry is None else expiry)
    _create(backend, t, job, now)
    return EnqueueResult(True)


def _dedup(
    backend: MemoryBackend, t: _Task, job: NewJob, flow: Flow, key: str, now: int
) -> EnqueueResult:
    owner = _get(t, key, now)
    if owner is not None:
        existing = t.jobs.get(owner)
        states = set(flow.states) if flow.states else DEFAULT_DEDUP_STATES
        if existing is not None and existing["state"] in states:
            return EnqueueResult(False, existing_id=owner)
    # No owner, the owner is gone, or its state does not block: this job takes the key over.
    _create(backend, t, job, now, {"dedupKey": key})
    t.flow_keys[key] = (job.id, None)
    return EnqueueResult(True)


def _schedule(
    backend: MemoryBackend, t: _Task, job: NewJob, flow: Flow, key: str, now: int
) -> EnqueueResult:
    """One fire time of a schedule: at most once (the mark only moves forward), and not while
    the previous job is unfinished unless overlap is allowed (the kind in enqueue_flow.lua)."""
    held = _get(t, key, now)
    last_fire, _, last_job = (held or "").partition(" ")
    if last_fire and int(last_fire) >= flow.fire_ms:
        return EnqueueResult(False)
    if not flow.overlap and last_job:
        previous = t.jobs.get(last_job)
        if previous is not None and previous["state"] in DEFAULT_DEDUP_STATES:
            t.flow_keys[key] = (f"{flow.fire_ms} {last_job}", now + flow.window_ms)
            return EnqueueResult(False, existing_id=last_job)
    fire = str(flow.fire_ms)
    _create(backend, t, job, now, {"schedule": flow.key, "fireAt": fire})
    t.flow_keys[key] = (f"{fire} {job.id}", now + flow.window_ms)
    return EnqueueResult(True)


def _create(
    backend: MemoryBackend, t: _Task, job: NewJob, now: int, extra: dict[str, str] | None = None
) -> None:
    """Create the job and move the wake-up marker, as ``MemoryBackend.enqueue`` does."""
    backend._create(t, job, now, extra)
    if job.delay_ms > 0:
        backend._set_marker(t, now + job.delay_ms, lower_only=True)
    else:
        backend._set_marker(t, 0)


def _get(t: _Task, key: str, now: int) -> str | None:
    """GET with Redis expiry semantics (a key lives through its expiry millisecond)."""
    held = t.flow_keys.get(key)
    if held is None:
        return None
    value, expiry = held
    if expiry is not None and now > expiry:
        del t.flow_keys[key]
        return None
    return value


_bases: dict[tuple[str | None, str], str] = {}


def _base(prefix: str | None, task: str) -> str:
    """The task's key base as on Redis, so ``dedupKey`` holds the same full key name
    (remembered: a schedule's every fire time asks)."""
    base = _bases.get((prefix, task))
    if base is None:
        if len(_bases) > 10_000:  # tests make many prefixes
            _bases.clear()
        base = _bases[(prefix, task)] = task_base(prefix, task)
    return base


def _check(flow: Flow) -> None:
    if not isinstance(flow.key, str) or not flow.key:
        raise ConfigError(f"{flow.kind} key must be a non-empty string, got {flow.key!r}")
    if flow.kind == "debounce":
        _positive(flow.delay_ms, "debounce delay")
    elif flow.kind == "throttle":
        _positive(flow.max, "throttle max")
        _positive(flow.window_ms, "throttle window")
    elif flow.kind == "schedule":
        _positive(flow.window_ms, "schedule mark lifetime")
    elif flow.kind == "dedup":
        for state in flow.states:
            if str(state) not in DEFAULT_DEDUP_STATES:
                raise ConfigError(
                    f"deduplicate state {state!r} is not one of {sorted(DEFAULT_DEDUP_STATES)}"
                )
    else:
        raise ConfigError(f"unknown flow control kind {flow.kind!r}")


def _positive(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
