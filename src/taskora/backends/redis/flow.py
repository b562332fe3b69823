"""Flow control (debounce, throttle, deduplicate) for the Redis backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import BackendError
from ..base import EnqueueResult, Flow, NewJob

if TYPE_CHECKING:
    from .backend import RedisBackend


async def enqueue_flow(backend: RedisBackend, task: str, job: NewJob, flow: Flow) -> EnqueueResult:
    raise BackendError(f"flow control ({flow.kind}) is not implemented yet")
