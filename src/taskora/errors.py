"""Errors.

Every error taskora raises derives from :class:`TaskoraError`::

    TaskoraError
    ├── ConfigError (also ValueError)      invalid option values, names, durations
    ├── ValidationError                     data rejected by a task's input/output schema
    ├── SerializationError                  data that is not JSON (NaN, sets, objects) or too large
    ├── RetryError                          raised by a handler (``raise ctx.retry()``) to retry
    ├── TimeoutError (also builtins.TimeoutError)  a wait or a handler ran out of time
    ├── JobError                            a waited-for job did not produce a result
    │   ├── JobFailedError
    │   ├── JobCancelledError
    │   ├── JobExpiredError
    │   └── JobNotFoundError
    ├── ThrottledError                      dispatch rejected by throttle (throw_on_reject=True)
    ├── DuplicateJobError                   dispatch rejected by dedup (throw_on_reject=True)
    ├── WorkflowError                       a workflow that was never started or was trimmed
    └── BackendError                        Redis unreachable or refusing (no redis-py errors)
        └── WireVersionError                the Redis data was written by an incompatible version
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

__all__ = [
    "BackendError",
    "ConfigError",
    "DuplicateJobError",
    "JobCancelledError",
    "JobError",
    "JobExpiredError",
    "JobFailedError",
    "JobNotFoundError",
    "SerializationError",
    "TaskoraError",
    "ThrottledError",
    "TimeoutError",
    "ValidationError",
    "WireVersionError",
    "WorkflowError",
]


class TaskoraError(Exception):
    """Root of every error taskora raises."""


class ConfigError(TaskoraError, ValueError):
    """An option, name or duration is invalid. Raised before anything is written."""


class ValidationError(TaskoraError):
    """Data rejected by a schema; ``issues`` lists what is wrong and where."""

    def __init__(self, message: str, issues: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.issues = list(issues)


class SerializationError(TaskoraError):
    """A value cannot be stored: not JSON-serializable, NaN/infinity, or over the size limit."""


class TimeoutError(TaskoraError, builtins.TimeoutError):
    """A wait (``handle.wait_for``) or a handler ran past its timeout."""

    def __init__(self, message: str, job_id: str | None = None, timeout_ms: int | None = None):
        super().__init__(message)
        self.job_id = job_id
        self.timeout_ms = timeout_ms


class JobError(TaskoraError):
    """A waited-for job ended without a result."""

    def __init__(self, message: str, job_id: str, task: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.task = task


class JobFailedError(JobError):
    """The job failed permanently; ``error`` is the handler's error message."""

    def __init__(self, job_id: str, task: str | None, error: str) -> None:
        super().__init__(f"Job {job_id} failed: {error}", job_id, task)
        self.error = error


class JobCancelledError(JobError):
    """The job was cancelled; ``reason`` is what the canceller gave, if anything."""

    def __init__(self, job_id: str, task: str | None = None, reason: str | None = None) -> None:
        suffix = f": {reason}" if reason else ""
        super().__init__(f"Job {job_id} cancelled{suffix}", job_id, task)
        self.reason = reason


class JobExpiredError(JobError):
    """The job's ttl passed before any worker started it; the handler never ran."""

    def __init__(self, job_id: str, task: str | None = None) -> None:
        super().__init__(f"Job {job_id} expired before it started", job_id, task)


class JobNotFoundError(JobError):
    """The job does not exist (never created, trimmed, replaced by a debounce, or lost)."""

    def __init__(self, job_id: str, task: str | None = None, detail: str = "") -> None:
        message = f"Job {job_id} not found" + (f": {detail}" if detail else "")
        super().__init__(message, job_id, task)
        self.detail = detail


class ThrottledError(TaskoraError):
    """A dispatch was rejected by its throttle (``throw_on_reject=True``)."""

    def __init__(self, job_id: str, key: str) -> None:
        super().__init__(f"Dispatch {job_id} throttled (key {key!r})")
        self.job_id = job_id
        self.key = key


class DuplicateJobError(TaskoraError):
    """A dispatch was rejected because ``existing_id`` holds the dedup key."""

    def __init__(self, job_id: str, key: str, existing_id: str) -> None:
        super().__init__(f"Dispatch {job_id} rejected: job {existing_id} holds key {key!r}")
        self.job_id = job_id
        self.key = key
        self.existing_id = existing_id


class WorkflowError(TaskoraError):
    """The workflow is unknown: never started, or its record was trimmed by retention."""


class BackendError(TaskoraError):
    """The backend is unreachable or refused a command. Never carries a password."""


class WireVersionError(BackendError):
    """The Redis keyspace was written by a taskora wire version this one cannot use."""

    def __init__(self, message: str, ours: dict[str, Any], theirs: dict[str, Any]) -> None:
        super().__init__(message)
        self.ours = ours
        self.theirs = theirs
