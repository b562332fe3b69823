"""Type checkers infer ``Task[In, Out]`` from the handler: mypy over a user's typed example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "typing"
ROOT = HERE.parent.parent


def _mypy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            "/dev/null",
            "--follow-imports=silent",
            str(path.relative_to(ROOT)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )


def test_typed_example_passes_and_wrong_calls_are_reported() -> None:
    good = _mypy(HERE / "typed_example.py")
    assert good.returncode == 0, good.stdout + good.stderr
    wrong = _mypy(HERE / "wrong_example.py")
    source = (HERE / "wrong_example.py").read_text().splitlines()
    expected = {n for n, line in enumerate(source, 1) if "# WRONG" in line}
    reported = {
        int(m.group(1)) for m in re.finditer(r"wrong_example\.py:(\d+): error:", wrong.stdout)
    }
    assert wrong.returncode == 1
    assert reported == expected, wrong.stdout
