"""Every code block of README.md runs as written.

Python blocks run in a child process (with a deadline: the first example once waited for a
worker that was never started), once in memory and once against the test redis-server:
the only change is the Redis address, swapped for the test server's. Shell blocks name
`make` targets, which must exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, flags=re.S | re.M)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [code for lang, code in BLOCKS if lang in ("bash", "sh", "shell", "console")]
README_URL = "redis://127.0.0.1:6379/0"


def test_the_readme_has_examples() -> None:
    assert PYTHON and SHELL
    assert all(README_URL in code for code in PYTHON if "taskora.App(" in code)


@pytest.mark.parametrize("index", range(len(PYTHON)))
@pytest.mark.parametrize("where", ["memory", "redis"])
def test_python_block_runs(index: int, where: str, request: pytest.FixtureRequest) -> None:
    url = "memory://" if where == "memory" else request.getfixturevalue("redis_url")
    code = PYTHON[index].replace(README_URL, url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKORA_")}
    try:
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"README block {index} did not finish:\n{code}") from None
    assert result.returncode == 0, result.stderr
    if "send_email" in code:
        assert re.match(r"[0-9a-f-]{36} \{'message_id': 'm-1'\}$", result.stdout.strip())


def test_shell_blocks_name_make_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for block in SHELL:
        for line in block.splitlines():
            command = line.split("#", 1)[0].strip()
            if not command:
                continue
            words = command.split()
            assert words[0] == "make", command
            for target in words[1:]:
                assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), command
