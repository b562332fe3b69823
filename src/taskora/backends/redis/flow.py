"""Flow control (debounce, throttle, deduplicate) for the Redis backend.

Each dispatch is one ``EVALSHA`` of ``enqueue_flow.lua``: the check (is a debounced job still
pending, is the window full, does a live job hold the key) and the write happen in one
atomic script, so any number of producer processes agree on the outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import ConfigError
from ...types import NON_TERMINAL_STATES
from ..base import EnqueueResult, Flow, NewJob
from .keys import TaskKeys
from .scripts import EnqueueFlow

if TYPE_CHECKING:
    from .backend import RedisBackend

__all__ = ["enqueue_flow", "flow_call"]

# Dedup blocks in every non-terminal state unless told otherwise (docs/design.md#decisions, 6).
DEFAULT_DEDUP_STATES = tuple(sorted(str(s) for s in NON_TERMINAL_STATES))


async def enqueue_flow(backend: RedisBackend, task: str, job: NewJob, flow: Flow) -> EnqueueResult:
    call = flow_call(backend.keys(task), job, flow)
    with backend.errors():
        return await call.run(backend.client)


def flow_call(keys: TaskKeys, job: NewJob, flow: Flow) -> EnqueueFlow:
    """The ``enqueue_flow.lua`` call; raises ConfigError for a flow no dispatch could build."""
    if not isinstance(flow.key, str) or not flow.key:
        raise ConfigError(f"{flow.kind} key must be a non-empty string, got {flow.key!r}")
    # Debounce ignores the dispatch's delay: the job waits out the debounce window instead.
    delay = flow.delay_ms if flow.kind == "debounce" else job.delay_ms
    args: list[Any] = []
    if flow.kind == "debounce":
        _positive(flow.delay_ms, "debounce delay")
        args.append(flow.delay_ms)
    elif flow.kind == "throttle":
        _positive(flow.max, "throttle max")
        _positive(flow.window_ms, "throttle window")
        args += (flow.max, flow.window_ms)
    elif flow.kind == "dedup":
        args.append(",".join(dedup_states(flow)))
    elif flow.kind == "schedule":
        args += (flow.fire_ms, "1" if flow.overlap else "0", flow.window_ms)
    else:
        raise ConfigError(f"unknown flow control kind {flow.kind!r}")
    return EnqueueFlow(
        keys,
        kind=flow.kind,
        id=job.id,
        data=job.data,
        version=job.version,
        max_attempts=job.max_attempts,
        priority=job.priority,
        delay_ms=delay,
        ttl_ms=job.ttl_ms,
        concurrency_key=job.concurrency_key,
        concurrency_limit=job.concurrency_limit,
        flow_key=flow.key,
        kind_args=args,
    )


def dedup_states(flow: Flow) -> tuple[str, ...]:
    """The states in which a job holding the key rejects a dispatch (default: non-terminal)."""
    if not flow.states:
        return DEFAULT_DEDUP_STATES
    allowed = set(DEFAULT_DEDUP_STATES)
    states = tuple(str(s) for s in flow.states)
    for state in states:
        if state not in allowed:
            raise ConfigError(f"deduplicate state {state!r} is not one of {list(allowed)}")
    return states


def _positive(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
