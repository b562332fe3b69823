"""Retry decisions: pure functions of (policy, attempt, error)."""

from __future__ import annotations

import math
import random

from .durations import Duration, optional_ms
from .errors import TaskoraError, TimeoutError, ValidationError
from .types import Retry

__all__ = ["RetryError", "backoff_ms", "retry_delay_ms"]


class RetryError(TaskoraError):
    """Raise from a handler to retry the job (``raise ctx.retry(delay=..., reason=...)``).

    ``delay`` (seconds, a timedelta or "5s"; kept as ``delay_ms``) overrides the task's
    backoff when set. Retry filters are bypassed, but the job is only retried while
    attempts remain.
    """

    def __init__(
        self, reason: str = "Job scheduled for retry", delay: Duration | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay_ms = optional_ms(delay, "RetryError(delay)")


def backoff_ms(policy: Retry, attempt: int, rng: random.Random | None = None) -> int:
    """Delay before the run after failed attempt ``attempt`` (1-based)."""
    base = policy.delay_ms
    backoff = policy.backoff
    if backoff == "fixed":
        delay = float(base)
    elif backoff == "linear":
        delay = float(base * attempt)
    elif backoff == "exponential":
        delay = float(base) * 2.0 ** min(attempt - 1, 60)
    else:
        seconds = backoff(attempt)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"Retry backoff callable returned {seconds!r}, expected seconds")
        if math.isnan(seconds) or math.isinf(seconds):
            raise TypeError(f"Retry backoff callable returned {seconds!r}")
        delay = float(seconds) * 1000.0
    if policy.max_delay_ms is not None:
        delay = min(delay, float(policy.max_delay_ms))
    if policy.jitter:
        delay *= (rng or random).uniform(0.75, 1.25)
    return max(0, min(round(delay), 10 * 365 * 86_400_000))


def retry_delay_ms(policy: Retry | None, attempt: int, error: BaseException) -> int | None:
    """Delay in ms before the next attempt, or None when the failure is permanent.

    A :class:`RetryError` bypasses the filters (its own delay wins); a handler timeout and
    a schema rejection (the same data fails again) are retried only when ``retry_on`` names
    a matching class; ``no_retry_on`` always wins.
    """
    if policy is None or attempt >= policy.attempts:
        return None
    if isinstance(error, RetryError):
        return error.delay_ms if error.delay_ms is not None else backoff_ms(policy, attempt)
    if policy.no_retry_on and isinstance(error, policy.no_retry_on):
        return None
    if policy.retry_on:
        if not isinstance(error, policy.retry_on):
            return None
    elif isinstance(error, TimeoutError | ValidationError):
        return None
    return backoff_ms(policy, attempt)
