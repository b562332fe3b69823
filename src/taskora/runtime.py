"""What tasks, handles, workers and the inspector need from the App that owns them.

``App`` builds those objects and they call back into it (to reach its home loop, its
connected backend, its defaults). Typing them against this protocol instead of ``App``
keeps the import graph one-way: ``app`` imports them, none of them imports ``app``, not
even for type checking (docs/design.md#layers).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .backends.base import Backend, Claimed, EnqueueResult, Flow, NewJob, Outcome
from .types import Retention, TaskDefaults

if TYPE_CHECKING:
    from .tracing import Tracing

__all__ = ["JobObserver", "Runtime"]

T = TypeVar("T")


class JobObserver(Protocol):
    """Told of every outcome a worker reports (``taskora.metrics``); called on the worker's
    loop, so it must be quick and must not raise."""

    def job_done(self, task: str, job: Claimed, outcome: Outcome, took: float) -> None: ...


class Runtime(Protocol):
    """The App as seen by the objects it creates (implemented by ``taskora.App``)."""

    @property
    def defaults(self) -> TaskDefaults: ...

    @property
    def retention(self) -> Retention: ...

    @property
    def max_payload_bytes(self) -> int: ...

    @property
    def prefetch(self) -> int: ...

    @property
    def tasks(self) -> Mapping[str, object]: ...

    @property
    def middleware(self) -> tuple[Any, ...]: ...

    _new_id: Callable[[], str]  # a new job id (taskora.testing: sequential, so ties are FIFO)
    _tracing: Tracing | None  # None = off (docs/design.md#tracing)
    _metrics: JobObserver | None  # None = off (docs/design.md#metrics)

    async def _connected_backend(self) -> Backend: ...

    def _ready_backend(self) -> Backend | None:
        """The backend when connected already (no coroutine to await), else None."""
        ...

    def _listen(
        self, task: str | None, event: str, fn: Callable[[Any], Any]
    ) -> Callable[[], None]: ...

    def _submit(self, task: str, job: NewJob, flow: Flow | None) -> Any: ...

    def _submitter(self) -> Callable[[str, NewJob, Flow | None], Any]: ...

    def _failed_future(self, exc: BaseException) -> concurrent.futures.Future[EnqueueResult]: ...

    async def _route(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T: ...

    def _route_sync(
        self, factory: Callable[[], Coroutine[Any, Any, T]], timeout: float | None = None
    ) -> T: ...
