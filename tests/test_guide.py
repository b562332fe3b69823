"""Every Python example of the user guide (docs/guide/*.md) runs as written.

Each ```python block runs in a child process with a deadline, on the memory backend; a
block that names the Redis URL runs again against the test redis-server, with only the
address swapped. A fragment not meant to run is marked by a `<!-- no-run -->` line just
before it; those stay rare and are counted here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "guide"
URL = "redis://127.0.0.1:6379/0"
BLOCK = re.compile(r"(<!-- no-run -->\n)?^```python\n(.*?)^```", flags=re.S | re.M)


def _blocks() -> tuple[list[tuple[str, int, str]], list[tuple[str, int, str]]]:
    runnable: list[tuple[str, int, str]] = []
    fragments: list[tuple[str, int, str]] = []
    for page in sorted(GUIDE.glob("*.md")):
        for number, match in enumerate(BLOCK.finditer(page.read_text()), 1):
            (fragments if match.group(1) else runnable).append((page.name, number, match.group(2)))
    return runnable, fragments


BLOCKS, FRAGMENTS = _blocks()
CASES = [
    pytest.param(code, url, id=f"{page}-{number}-{where}")
    for page, number, code in BLOCKS
    for where, url in (("memory", "memory://"), ("redis", None))
    if where == "memory" or URL in code
]


def test_the_guide_has_examples_and_few_fragments() -> None:
    assert len(BLOCKS) >= 10
    assert len(FRAGMENTS) <= 3, "no-run blocks should stay rare"
    for page, number, code in BLOCKS:
        if "taskora.App(" in code:
            assert URL in code or "taskora.App()" in code, f"{page} block {number}"


def test_pages_link_to_pages_that_exist() -> None:
    for page in GUIDE.glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).resolve().exists(), f"{page.name} -> {target}"


@pytest.mark.parametrize(("page", "number", "code"), FRAGMENTS)
def test_fragments_are_valid_python(page: str, number: int, code: str) -> None:
    """A block that is not run still compiles: a typo cannot hide behind no-run."""
    compile(code, f"{page} block {number}", "exec")


@pytest.mark.parametrize(("code", "url"), CASES)
def test_guide_block_runs(code: str, url: str | None, request: pytest.FixtureRequest) -> None:
    target = url if url is not None else request.getfixturevalue("redis_url")
    if target != "memory://":
        _flush(target)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKORA_")}
    try:
        result = subprocess.run(
            [sys.executable, "-c", code.replace(URL, target)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"guide block did not finish:\n{code}") from None
    assert result.returncode == 0, result.stderr


def _flush(url: str) -> None:
    """Each block starts on an empty database, as a reader's would."""
    import asyncio

    from taskora.backends.redis.resp import RespClient, parse_address

    async def flush() -> None:
        client = RespClient(parse_address(url))
        try:
            await client.execute("FLUSHDB")
        finally:
            await client.close()

    asyncio.run(flush())
