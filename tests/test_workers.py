"""The worker registry (docs/design.md#workers) on memory, Redis and a Redis Cluster (its
keys have a slot of their own): a started App is listed with its tasks until it closes, an
entry nobody refreshes expires and the next beat removes it, real worker processes appear
one each and a SIGKILLed one drops out once its heartbeats stop; the CLI and the board's
API show them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import taskora
from taskora.backends.keys import workers_keys
from taskora.presence import WorkerInfo
from tests.conftest import AppFactory, url_for, wait_until
from tests.processes import stop_processes

HEARTBEAT = 0.2


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend_url(request: pytest.FixtureRequest) -> str:
    return url_for(request)


async def stored_entries(app: taskora.App) -> int:
    """How many entries the registry holds, live or not (what a beat has not pruned yet)."""
    backend: Any = await app._connected_backend()
    if isinstance(backend, taskora.MemoryBackend):
        return len(backend.worker_entries)
    return int(await backend.client.execute("HLEN", workers_keys(app.prefix)[0]))


async def test_a_started_app_is_listed_with_its_tasks_until_it_closes(
    make_app: AppFactory,
) -> None:
    app = make_app(heartbeat=HEARTBEAT)
    viewer = make_app()  # another process's view: the board, the CLI
    gate = asyncio.Event()

    @app.task(concurrency=3)
    async def mail(n: int) -> int:
        await gate.wait()
        return n

    @app.task()
    async def resize(n: int) -> int:
        return n

    insp = viewer.inspect()
    assert await insp.workers() == []
    await app.start()
    try:
        [worker] = await insp.workers()
        assert worker.tasks == {"mail": 3, "resize": 1} and worker.concurrency == 4
        assert (worker.host, worker.pid) == (socket.gethostname(), os.getpid())
        assert worker.version == taskora.__version__ and worker.active == 0
        assert worker.started_at is not None and worker.heartbeat_s == pytest.approx(HEARTBEAT)

        held = mail.dispatch(1)

        async def running_one() -> bool:  # a later heartbeat carries the running job
            found = await insp.workers()
            return len(found) == 1 and found[0].active == 1

        await wait_until(running_one, timeout=30)
        [later] = await insp.workers()
        assert later.id == worker.id and later.last_seen > worker.last_seen
        gate.set()
        assert await held.wait_for(20) == 1
    finally:
        gate.set()
        await app.close()
    assert await insp.workers() == []  # a clean close leaves at once
    assert await stored_entries(viewer) == 0


async def test_an_entry_nobody_refreshes_expires_and_the_next_beat_removes_it(
    make_app: AppFactory,
) -> None:
    app = make_app()
    backend = await app._connected_backend()
    record = json.dumps({"host": "h", "pid": 7, "tasks": {"t": 2}, "started": 1, "ttl": 300})
    # a worker that beats once, then dies (its entry lives 1 s: room for the next two reads
    # on a loaded machine)
    await backend.worker_beat("ghost", record, 1000)
    await backend.worker_beat("steady", record, 600_000)
    insp = app.inspect()
    assert {w.id for w in await insp.workers()} == {"ghost", "steady"}

    async def only_steady() -> bool:
        return [w.id for w in await insp.workers()] == ["steady"]

    await wait_until(only_steady, timeout=30)  # readers filter by the store's clock
    assert await stored_entries(app) == 2  # still stored: no beat since it expired
    await backend.worker_beat("steady", record, 600_000)
    assert await stored_entries(app) == 1  # the next writer pruned it
    await backend.worker_beat("steady", "", 0)
    assert await stored_entries(app) == 0 and await insp.workers() == []


async def test_a_record_that_is_not_ours_shows_as_far_as_it_can_be_read(
    make_app: AppFactory,
) -> None:
    app = make_app()
    backend = await app._connected_backend()
    await backend.worker_beat("odd", "not json", 600_000)
    await backend.worker_beat("odder", '{"tasks": {"a": "x", "b": 2}, "pid": "p"}', 600_000)
    found = {w.id: w for w in await app.inspect().workers()}
    assert set(found) == {"odd", "odder"}
    assert (found["odd"].host, found["odd"].pid, found["odd"].tasks) == ("", 0, {})
    assert found["odder"].tasks == {"b": 2} and found["odder"].concurrency == 2


def test_bad_heartbeat_is_refused() -> None:
    with pytest.raises(taskora.ConfigError, match="heartbeat"):
        taskora.App("memory://", heartbeat=0)
    with pytest.raises(taskora.ConfigError, match="heartbeat"):
        taskora.App("memory://", heartbeat="soon")


@pytest.mark.parametrize("where", ["redis", "cluster"])
async def test_worker_processes_appear_and_a_killed_one_drops_out(
    where: str, request: pytest.FixtureRequest, prefix: str
) -> None:
    url = (
        request.getfixturevalue("redis_cluster").url
        if where == "cluster"
        else request.getfixturevalue("redis_url")
    )
    viewer = taskora.App(url, prefix=prefix)
    insp = viewer.inspect()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.procs.presence_procs", url, prefix, task, str(n)],
            cwd=Path(__file__).parent.parent,
        )
        for task, n in (("mail", 2), ("resize", 1))
    ]
    doomed, survivor = procs

    async def listed() -> dict[int, WorkerInfo]:
        return {w.pid: w for w in await insp.workers()}

    try:

        async def both() -> bool:
            return len(await listed()) == 2

        await wait_until(both, timeout=90)
        found = await listed()
        assert {pid: w.tasks for pid, w in found.items()} == {
            doomed.pid: {"mail": 2},
            survivor.pid: {"resize": 1},
        }
        assert len({w.id for w in found.values()}) == 2

        doomed.send_signal(signal.SIGKILL)  # no clean close: its entry stays until it expires
        doomed.wait(timeout=30)

        async def survivor_alone() -> bool:
            return list(await listed()) == [survivor.pid]

        await wait_until(survivor_alone, timeout=60)

        async def pruned() -> bool:  # the survivor's next beat removed the dead entry
            return await stored_entries(viewer) == 1

        await wait_until(pruned, timeout=60)

        survivor.send_signal(signal.SIGTERM)  # a clean stop leaves the registry at once
        assert survivor.wait(timeout=60) == 0
        assert await insp.workers() == []
    finally:
        stop_processes(procs)
        await viewer.close()


async def test_cli_inspect_lists_the_workers(redis_url: str, prefix: str, tmp_path: Path) -> None:
    from tests.test_cli_ops import _cli, _doc

    app = taskora.App(redis_url, prefix=prefix)

    @app.task(concurrency=2)
    async def mail(n: int) -> int:
        return n

    @app.task()
    async def report(n: int) -> int:
        return n

    base = ["--url", redis_url, "--prefix", prefix]
    await app.start(tasks=["mail"])
    try:
        await mail.dispatch(1).wait_for(20)
        await report.dispatch(1)  # known to the store, worked by nobody
        doc = _doc(_cli("inspect", *base, "--json", cwd=tmp_path))
        [worker] = doc["workers"]
        assert (worker["pid"], worker["tasks"], worker["concurrency"]) == (
            os.getpid(),
            {"mail": 2},
            2,
        )
        assert (
            _doc(_cli("inspect", *base, "--task", "report", "--json", cwd=tmp_path))["workers"]
            == []
        )
        text = _cli("inspect", *base, "--task", "mail", cwd=tmp_path)
        assert text.returncode == 0 and "1 worker process(es) alive" in text.stdout
        assert f"{os.getpid()}" in text.stdout and "mail x2" in text.stdout
    finally:
        await app.close()
    text = _cli("inspect", *base, cwd=tmp_path)
    assert text.returncode == 0 and "0 worker process(es) alive" in text.stdout


async def test_the_board_overview_and_api_list_the_workers(make_app: AppFactory) -> None:
    from taskora.board import create_board
    from tests.test_board import client

    app = make_app(heartbeat=HEARTBEAT)

    @app.task(concurrency=5)
    async def mail(n: int) -> int:
        return n

    board = create_board(make_app())  # the board in a process of its own, no worker
    async with client(board) as c:
        assert (await c.get("/board/api/overview")).json()["workers"] == []
        async with app:
            overview = (await c.get("/board/api/overview")).json()
            [worker] = overview["workers"]
            assert (worker["pid"], worker["tasks"], worker["active"]) == (
                os.getpid(),
                {"mail": 5},
                0,
            )
            listed = (await c.get("/board/api/workers")).json()["workers"]
            assert [w["id"] for w in listed] == [worker["id"]]
        assert (await c.get("/board/api/workers")).json() == {"workers": []}
