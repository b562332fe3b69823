"""pytest fixtures for taskora users, registered by the ``pytest11`` entry point.

``taskora_app``: override it in your conftest to return your App (like pytest-django's
``settings``). ``taskora_runner``: a :class:`taskora.testing.TestRunner` on that app, disposed
after the test. ``taskora_redis_app``: opt-in (``pytest --taskora-redis-url redis://...``), the
same app on that Redis under a fresh key prefix, whose keys are deleted after the test;
skipped without the option. The fixtures are synchronous, so any async plugin
(pytest-asyncio, anyio) can run the tests that use them; ``taskora.testing`` is imported only
when a test asks for a fixture, so sessions that do not use taskora pay nothing for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .testing import TestRunner


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("taskora").addoption(
        "--taskora-redis-url",
        metavar="URL",
        default=None,
        help="run tests using the taskora_redis_app fixture on this Redis (each test under "
        "its own key prefix, deleted after it); without it they are skipped",
    )


@pytest.fixture
def taskora_app() -> Any:
    """Your App: override this fixture (``@pytest.fixture def taskora_app(): return app``)."""
    pytest.fail(
        "taskora_runner needs your App: define a fixture named taskora_app in your "
        "conftest.py that returns it",
        pytrace=False,
    )


@pytest.fixture
def taskora_runner(taskora_app: Any) -> Iterator[TestRunner]:
    """A TestRunner on ``taskora_app`` (virtual time, memory backend); the app's own backend
    is back after the test."""
    from .testing import TestRunner

    runner = TestRunner(taskora_app)
    try:
        yield runner
    finally:
        runner._restore()


@pytest.fixture
def taskora_redis_app(taskora_app: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``taskora_app`` on the Redis given by ``--taskora-redis-url``, under a random prefix
    of its own; its keys are deleted and the app's own backend is back after the test. Close
    the app in the test (``async with app:``)."""
    url = request.config.getoption("taskora_redis_url")
    if not url:
        pytest.skip("taskora_redis_app needs a Redis: run pytest with --taskora-redis-url URL")
    from .testing import on_redis

    with on_redis(taskora_app, url) as app:
        yield app
