"""The package surface: a locked ``__all__``, and ``import taskora`` loads only what it uses.

Each import check runs in a fresh interpreter, since this test process has long since
imported everything.
"""

from __future__ import annotations

import subprocess
import sys

import taskora

# The public API, as README.md presents it. Adding or removing a name is a deliberate change
# to this list.
PUBLIC = [
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

# What a program that only dispatches or only uses the in-memory backend must not pay for.
HEAVY = [
    "taskora.backends.redis",
    "taskora.backends.memory",
    "taskora.worker",
    "taskora.demo",
    "taskora.cli",
    "taskora.testing",
    "taskora.pytest_plugin",
    "hiredis",
    "redis",
    "rich",
    "uvloop",
    "pydantic",
    "taskora.tracing",
    "opentelemetry",
    "taskora.metrics",
    "prometheus_client",
]


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _loaded_after(setup: str) -> set[str]:
    code = f"import sys\n{setup}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    return set(_run(code).split())


def test_all_is_locked_sorted_and_importable() -> None:
    assert taskora.__all__ == PUBLIC
    assert PUBLIC == sorted(PUBLIC, key=lambda n: (n.startswith("_"), n))
    assert set(PUBLIC) <= set(dir(taskora))
    # Every name, lazy ones included, can be imported by name in a fresh interpreter.
    names = ", ".join(PUBLIC)
    assert _run(f"from taskora import {names}\nprint('ok')") == "ok"


def test_import_taskora_loads_no_backend_and_no_client_library() -> None:
    assert _loaded_after("import taskora") == set()


def test_a_backend_is_loaded_when_used_and_only_that_one() -> None:
    assert _loaded_after("import taskora\ntaskora.App('memory://')") == {"taskora.backends.memory"}
    loaded = _loaded_after("import taskora\ntaskora.App('redis://127.0.0.1:1/0')")
    assert loaded == {"taskora.backends.redis", "hiredis"}
    loaded = _loaded_after("import taskora\ntaskora.RedisBackend")
    assert loaded == {"taskora.backends.redis", "hiredis"}
    loaded = _loaded_after("from taskora.backends import MemoryBackend")
    assert loaded == {"taskora.backends.memory"}


def test_tracing_is_loaded_only_when_an_app_asks_for_it() -> None:
    """docs/design.md#tracing: tracing off costs no opentelemetry import."""
    assert _loaded_after("import taskora\ntaskora.App('memory://')") == {"taskora.backends.memory"}
    loaded = _loaded_after("import taskora\ntaskora.App('memory://', tracing=True)")
    assert loaded == {"taskora.backends.memory", "taskora.tracing", "opentelemetry"}


def test_the_library_runs_without_the_demo_extra() -> None:
    """rich and redis-py are blocked from import: jobs still run; the demo names its extra."""
    code = (
        "import sys, asyncio\n"
        "sys.modules['rich'] = None\n"
        "sys.modules['redis'] = None\n"
        "import taskora\n"
        "app = taskora.App('memory://')\n"
        "@app.task()\n"
        "async def double(d): return d * 2\n"
        "async def main():\n"
        "    async with app:\n"
        "        assert await double.dispatch(21).wait_for(10) == 42\n"
        "asyncio.run(main())\n"
        "taskora.RedisBackend('redis://127.0.0.1:1/0')\n"
        "try:\n"
        "    import taskora.demo\n"
        "except taskora.ConfigError as exc:\n"
        "    print(exc)\n"
    )
    assert _run(code) == "the demo needs rich: pip install 'taskora[demo]'"
