"""taskora: a fast, reliable distributed task queue for Python on Redis."""

from __future__ import annotations

from ._version import __version__
from .app import App
from .backends.memory import MemoryBackend
from .backends.redis import RedisBackend
from .context import Context
from .errors import (
    BackendError,
    ConfigError,
    DuplicateJobError,
    JobCancelledError,
    JobError,
    JobExpiredError,
    JobFailedError,
    JobNotFoundError,
    RetryError,
    SerializationError,
    TaskoraError,
    ThrottledError,
    TimeoutError,
    ValidationError,
    WireVersionError,
)
from .handle import ResultHandle
from .inspector import DeadLetters, JobInfo
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

__all__ = [
    "App",
    "BackendError",
    "ConfigError",
    "Context",
    "DeadLetters",
    "Debounce",
    "Deduplicate",
    "DuplicateJobError",
    "JobCancelledError",
    "JobError",
    "JobExpiredError",
    "JobFailedError",
    "JobInfo",
    "JobNotFoundError",
    "JobState",
    "LogEntry",
    "MemoryBackend",
    "RedisBackend",
    "ResultHandle",
    "Retention",
    "Retry",
    "RetryError",
    "SerializationError",
    "Stall",
    "Task",
    "TaskDefaults",
    "TaskoraError",
    "Throttle",
    "ThrottledError",
    "TimeoutError",
    "ValidationError",
    "WireVersionError",
    "__version__",
]

import logging as _logging

_logging.getLogger("taskora").addHandler(_logging.NullHandler())
