"""pytest fixtures for taskora users, registered by the ``pytest11`` entry point.

``taskora_app``: override it in your conftest to return your App (like pytest-django's
``settings``). ``taskora_runner``: a :class:`taskora.testing.TestRunner` on that app, disposed
after the test. Both fixtures are synchronous, so any async plugin (pytest-asyncio, anyio) can
run the tests that use them; ``taskora.testing`` is imported only when a test asks for the
runner, so sessions that do not use taskora pay nothing for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .testing import TestRunner


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
