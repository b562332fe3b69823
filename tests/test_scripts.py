"""The typed script layer: every Lua script's KEYS/ARGV header matches its Python wrapper.

A script and its caller count ARGV positions in one place only (the header, read by
scripts.py); these tests keep the declarations beside it honest. No Redis needed.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from taskora.backends.base import NewJob
from taskora.backends.redis import scripts
from taskora.backends.redis.keys import TASK_KEY_NAMES, task_keys
from taskora.backends.redis.scripts import (
    LIBRARY,
    SCRIPTS,
    SOURCES,
    TASK,
    WRAPPERS,
    FinishClaim,
    FinishOutcome,
    Header,
    parse_header,
    snake,
)

SRC = Path(scripts.__file__).parents[3]


def expected_fields(header: Header) -> list[str]:
    """The wrapper's fields a header asks for: keys, then every ARGV item the caller gives."""
    keys = ["task"] if header.keys == (TASK,) else [snake(k) for k in header.keys]
    given = [snake(i.name) for i in header.argv if i.kind in ("value", "group", "rest")]
    return keys + given


def row_fields(row_type: Any) -> list[str]:
    if dataclasses.is_dataclass(row_type):
        return [f.name for f in dataclasses.fields(row_type)]
    return list(row_type._fields)


def mismatches(cls: type[Any], header: Header) -> list[str]:
    """How a wrapper declaration differs from its script's header (empty: they agree)."""
    out = []
    fields = [f.name for f in dataclasses.fields(cls)]
    if fields != expected_fields(header):
        out.append(f"fields {fields} != header {expected_fields(header)}")
    hints = typing.get_type_hints(cls)
    for item in header.argv:
        if item.kind != "group" or snake(item.name) not in hints:
            continue
        (row_type,) = typing.get_args(hints[snake(item.name)])
        want = [snake(f) for f in item.fields]
        if row_fields(row_type) != want:
            out.append(f"{item.name}: row {row_fields(row_type)} != header {want}")
    return out


def test_every_script_has_exactly_one_wrapper() -> None:
    assert sorted(WRAPPERS) == sorted(SCRIPTS)
    for name, cls in WRAPPERS.items():
        assert cls.script is SCRIPTS[name]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_wrapper_matches_the_script_header(name: str) -> None:
    assert mismatches(WRAPPERS[name], parse_header(SOURCES[name])) == []


def test_a_drifted_wrapper_is_caught() -> None:
    """The comparison can fail: a header with two arguments swapped, or a row field renamed."""
    source = SOURCES["finish_claim"]
    swapped = source.replace("want lockTtlMs", "lockTtlMs want", 1)
    assert swapped != source
    assert mismatches(FinishClaim, parse_header(swapped))
    renamed = source.replace("retryDelayMs}", "delayMs}", 1)
    assert renamed != source
    assert mismatches(FinishClaim, parse_header(renamed))


def test_lib_lua_names_the_task_keys_in_keys_py_order() -> None:
    lib = (Path(scripts.__file__).parent / "lua" / "lib.lua").read_text()
    start = lib.index("K = {", lib.index("local function enter(KEYS)"))
    table = lib[start : lib.index("}", start)]
    pairs = re.findall(r"(\w+) = KEYS\[(\d+)\]", table)
    assert [name for name, _ in pairs] == list(TASK_KEY_NAMES)
    assert [int(i) for _, i in pairs] == list(range(1, len(TASK_KEY_NAMES) + 1))


@pytest.mark.parametrize(
    "header",
    [
        "--- KEYS: @task\n--- ARGV: B ids... limit",  # a rest before the end
        "--- KEYS: @task\n--- ARGV: B rows{a b} limit",  # an uncounted group before the end
        "--- KEYS: @task\n--- ARGV: B #rows limit",  # a count of nothing
        "--- KEYS: lock\n--- ARGV: B token",  # B outside a task
        "--- KEYS: lock\n--- ARGV: token, ttl",  # not the grammar
        "--- KEYS: lock\n-- ARGV: token",  # no ARGV line
    ],
)
def test_malformed_headers_are_refused(header: str) -> None:
    with pytest.raises(ValueError):
        parse_header(header)


def test_finish_claim_argv_is_the_wire_layout() -> None:
    """The encoding built from the header gives the positions finish_claim.lua reads."""
    keys = task_keys("p", "t")
    call = FinishClaim(
        keys,
        [
            FinishOutcome("j1", "tok1", "completed", '"r"', 0),
            FinishOutcome("j2", "t2", "retry", "e", 5),
        ],
        want=3,
        lock_ttl_ms=30000,
        token_base="w:",
        token_seq=7,
        singleton=True,
        completed_max=100,
        failed_max=200,
        after_wait=False,
        reserve=2,
        max_version=4,
    )
    assert call.keys() == keys.standard
    assert call.argv() == [
        "taskora:p:{t}:",
        2,
        *("j1", "tok1", "completed", '"r"', 0),
        *("j2", "t2", "retry", "e", 5),
        *(3, 30000, "w:", 7, "1", 100, 200, "0", 2, 4),
    ]
    command = call.command(False)
    assert command[:3] == ("EVALSHA", SCRIPTS["finish_claim"].sha, len(TASK_KEY_NAMES))
    assert command[3:] == (*keys.standard, *call.argv())
    command = call.command(True)
    assert command[:3] == ("FCALL", LIBRARY.functions["finish_claim"], len(TASK_KEY_NAMES))
    assert command[3:] == (*keys.standard, *call.argv())


def test_enqueue_rows_are_the_new_jobs() -> None:
    job = NewJob("a", "{}", 2, 3, 4, 5, 6, "ck", 7, "tp")
    call = WRAPPERS["enqueue"](task_keys(None, "t"), [job, job])  # type: ignore[call-arg]
    assert call.argv() == ["taskora:{t}:", 2, *(("a", "{}", 2, 3, 4, 5, 6, "ck", 7, "tp") * 2)]


def test_only_the_script_layer_builds_evalsha() -> None:
    """One send path: no other module spells a raw EVALSHA or FCALL command."""
    offenders = [
        str(path.relative_to(SRC))
        for path in (SRC / "taskora").rglob("*.py")
        # cluster.py reads the commands the script layer built (routing by their first
        # key, swapping in the sharded variant); it builds none
        if path.name not in ("scripts.py", "cluster.py")
        and re.search(r"[\"'](EVALSHA|FCALL)[\"']", path.read_text())
    ]
    assert offenders == []
