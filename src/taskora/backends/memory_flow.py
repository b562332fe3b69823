"""Flow control (debounce, throttle, deduplicate) for the memory backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import BackendError
from .base import EnqueueResult, Flow, NewJob

if TYPE_CHECKING:
    from .memory import MemoryBackend


def enqueue_flow(backend: MemoryBackend, task: str, job: NewJob, flow: Flow) -> EnqueueResult:
    raise BackendError(f"flow control ({flow.kind}) is not implemented yet")
