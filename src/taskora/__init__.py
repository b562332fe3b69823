"""taskora: a fast, reliable distributed task queue for Python on Redis.

``import taskora`` loads the core only: a backend (and its client libraries) is imported
when it is first used, by ``App(url)`` or by naming ``taskora.RedisBackend`` /
``taskora.MemoryBackend`` (docs/design.md#layers).
"""

from __future__ import annotations

import logging as _logging
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .app import App
from .collect import Collect, CollectInfo
from .context import Context
from .contracts import TaskContract, define_task
from .errors import (
    BackendError,
    ConfigError,
    DuplicateJobError,
    JobCancelledError,
    JobError,
    JobExpiredError,
    JobFailedError,
    JobNotFoundError,
    SerializationError,
    TaskoraError,
    ThrottledError,
    TimeoutError,
    ValidationError,
    WireVersionError,
    WorkflowError,
)
from .handle import ResultHandle
from .inspector import DeadLetters, Inspector, JobInfo
from .middleware import MiddlewareContext
from .retry import RetryError
from .schedule import Schedule, ScheduleInfo
from .task import Task
from .types import (
    Debounce,
    Deduplicate,
    JobState,
    LogEntry,
    Retention,
    Retry,
    Stall,
    TaskDefaults,
    Throttle,
)
from .workflow import Chain, Chord, Chunk, Group, Signature, WorkflowHandle, chain, chord, group

__all__ = [  # noqa: RUF022 - public names sorted, the dunder last (tests/test_public_api.py)
    "App",
    "BackendError",
    "Chain",
    "Chord",
    "Chunk",
    "Collect",
    "CollectInfo",
    "ConfigError",
    "Context",
    "DeadLetters",
    "Debounce",
    "Deduplicate",
    "DuplicateJobError",
    "Group",
    "Inspector",
    "JobCancelledError",
    "JobError",
    "JobExpiredError",
    "JobFailedError",
    "JobInfo",
    "JobNotFoundError",
    "JobState",
    "LogEntry",
    "MemoryBackend",
    "MiddlewareContext",
    "RedisBackend",
    "ResultHandle",
    "Retention",
    "Retry",
    "RetryError",
    "Schedule",
    "ScheduleInfo",
    "SerializationError",
    "Signature",
    "Stall",
    "Task",
    "TaskContract",
    "TaskDefaults",
    "TaskoraError",
    "Throttle",
    "ThrottledError",
    "TimeoutError",
    "ValidationError",
    "WireVersionError",
    "WorkflowError",
    "WorkflowHandle",
    "chain",
    "chord",
    "define_task",
    "group",
    "__version__",
]

if TYPE_CHECKING:
    from .backends.memory import MemoryBackend
    from .backends.redis import RedisBackend


def __getattr__(name: str) -> Any:
    """Import a backend class on first use, so ``import taskora`` stays light."""
    if name in ("MemoryBackend", "RedisBackend"):
        from . import backends

        value = getattr(backends, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'taskora' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


_logging.getLogger("taskora").addHandler(_logging.NullHandler())
