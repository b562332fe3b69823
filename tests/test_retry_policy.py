"""Backoff and retry eligibility: pure functions, checked exactly."""

from __future__ import annotations

import random

import pytest

import taskora
from taskora.retry import backoff_ms, retry_delay_ms


def test_backoff_shapes_without_jitter() -> None:
    exp = taskora.Retry(attempts=9, delay=1, jitter=False)
    assert [backoff_ms(exp, a) for a in (1, 2, 3, 4)] == [1000, 2000, 4000, 8000]
    fixed = taskora.Retry(attempts=9, backoff="fixed", delay="500ms", jitter=False)
    assert [backoff_ms(fixed, a) for a in (1, 2, 3)] == [500, 500, 500]
    linear = taskora.Retry(attempts=9, backoff="linear", delay=2, jitter=False)
    assert [backoff_ms(linear, a) for a in (1, 2, 3)] == [2000, 4000, 6000]
    custom = taskora.Retry(attempts=9, backoff=lambda a: a * 0.1, jitter=False)
    assert [backoff_ms(custom, a) for a in (1, 2, 3)] == [100, 200, 300]
    capped = taskora.Retry(attempts=9, delay=1, max_delay=3, jitter=False)
    assert [backoff_ms(capped, a) for a in (1, 2, 3, 4)] == [1000, 2000, 3000, 3000]


def test_jitter_stays_within_25_percent() -> None:
    policy = taskora.Retry(attempts=9, backoff="fixed", delay=1)
    rng = random.Random(3)
    values = {backoff_ms(policy, 1, rng) for _ in range(500)}
    assert min(values) >= 750 and max(values) <= 1250 and len(values) > 50


def test_retry_eligibility() -> None:
    policy = taskora.Retry(attempts=3, delay=0, jitter=False)
    assert retry_delay_ms(policy, 1, ValueError()) == 0
    assert retry_delay_ms(policy, 3, ValueError()) is None  # attempts exhausted
    assert retry_delay_ms(None, 1, ValueError()) is None  # no policy: no retry
    only = taskora.Retry(attempts=3, delay=0, retry_on=[ConnectionError])
    assert retry_delay_ms(only, 1, ConnectionError()) is not None
    assert retry_delay_ms(only, 1, ValueError()) is None
    never = taskora.Retry(attempts=3, delay=0, retry_on=[Exception], no_retry_on=[KeyError])
    assert retry_delay_ms(never, 1, KeyError()) is None  # no_retry_on wins
    timeout = taskora.TimeoutError("late")
    assert retry_delay_ms(policy, 1, timeout) is None  # timeouts only via retry_on
    assert (
        retry_delay_ms(taskora.Retry(attempts=3, retry_on=[TimeoutError]), 1, timeout) is not None
    )
    asked = taskora.RetryError("again", delay=1.234)
    assert retry_delay_ms(only, 1, asked) == 1234  # filters bypassed, delay honoured
    assert retry_delay_ms(only, 3, asked) is None  # but not beyond the attempts


def test_invalid_retry_options() -> None:
    for kwargs in ({"attempts": 0}, {"delay": -1}, {"max_delay": "x"}, {"retry_on": [1]}):
        with pytest.raises(ValueError):
            taskora.Retry(**kwargs)  # type: ignore[arg-type]


async def test_app_wide_retry_default() -> None:
    app = taskora.App(
        "memory://", defaults=taskora.TaskDefaults(retry=taskora.Retry(attempts=2, delay=0))
    )
    seen: list[int] = []

    @app.task()
    async def flaky(data: None, ctx: taskora.Context) -> int:
        seen.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("first")
        return ctx.attempt

    async with app:
        assert await flaky.dispatch(None).wait_for(20) == 2
    assert seen == [1, 2]
