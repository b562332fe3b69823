"""Comments point to documents in this repository, and to sections that exist.

The design notes live in docs/design.md; a comment cites a section as
``docs/design.md#<section>`` (and a decision as ``docs/design.md#decisions, <n>``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
SKIP = {"__pycache__", "results", "node_modules"}

# Pages that exist only outside the repository: a comment must not send readers there.
OUTSIDE = re.compile(
    r"\b(decisions|wire-format|reliability|api|reference|architecture|peers)\.md\b"
    r"|\.\./shared|shared/spec|seed/dispatching"
)
CITE = re.compile(r"docs/design\.md#([a-z0-9-]+)(?:, (\d+))?")


def _sources() -> list[Path]:
    paths: list[Path] = []
    for folder in ("src", "tests", "benchmarks", "scripts", "docs/guide"):
        for here, dirs, files in os.walk(ROOT / folder):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP]
            for name in files:
                path = Path(here) / name
                if path.suffix in {".py", ".lua", ".sh", ".md"} and path != Path(__file__):
                    paths.append(path)
    return [*paths, ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml", DESIGN]


def _anchors() -> set[str]:
    anchors = set()
    for line in DESIGN.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 -]", "", title).replace(" ", "-"))
    return anchors


def _decisions() -> set[int]:
    text = DESIGN.read_text().split("\n## Decisions", 1)[1].split("\n## ", 1)[0]
    return {int(n) for n in re.findall(r"^(\d+)\. ", text, re.MULTILINE)}


def test_no_reference_leaves_the_repository() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert offenders == []


def test_every_citation_of_the_design_notes_exists() -> None:
    anchors, decisions = _anchors(), _decisions()
    assert decisions == set(range(1, len(decisions) + 1))
    cited = 0
    for path in _sources():
        text = path.read_text()
        for anchor, number in CITE.findall(text):
            cited += 1
            assert anchor in anchors, f"{path.relative_to(ROOT)} cites a missing #{anchor}"
            if number:
                assert int(number) in decisions, f"{path.relative_to(ROOT)} cites decision {number}"
        if path == DESIGN:
            for anchor in re.findall(r"\]\(#([a-z0-9-]+)\)", text):
                assert anchor in anchors, f"design.md links to a missing #{anchor}"
    assert cited >= 10
