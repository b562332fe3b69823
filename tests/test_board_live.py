"""The board's live updates over SSE, through a real uvicorn server on a loopback port, on
both backends: stats and jobs frames, redaction in frames, one set of listeners for any
number of browsers, a per-job stream, and a stop that ends open streams
(docs/design.md#board)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx

import taskora
from taskora.board import create_board
from taskora.board.serve import bind, serve_board
from tests.conftest import AppFactory, wait_until

SECRET = "hunter2-very-secret"


@contextlib.asynccontextmanager
async def board_server(app: taskora.App, **options: Any) -> AsyncIterator[tuple[str, Any]]:
    """The board served on a free loopback port; yields its URL and its live hub."""
    board = create_board(app, **options)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    started, stop = asyncio.Event(), asyncio.Event()
    runner = asyncio.create_task(serve_board(board, sock, started=started, stop=stop))
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({runner, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if runner.done():
        runner.result()
    try:
        yield f"http://127.0.0.1:{port}/board", board.state.taskora.live
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)


async def frames(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    kind, data = None, []
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])
        elif line == "" and kind is not None:
            yield kind, json.loads("".join(data))
            kind, data = None, []


async def test_stats_frames_count_jobs_as_they_flow(make_app: AppFactory) -> None:
    app = make_app()

    @app.task(retry=taskora.Retry(attempts=1))
    async def work(n: int) -> int:
        if n == 0:
            raise RuntimeError("no")
        return n

    served = board_server(app, refresh_interval=0.2)
    async with app, served as (url, _live), httpx.AsyncClient(timeout=30) as http:
        async with http.stream("GET", url + "/api/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            stats: list[Any] = []
            async with asyncio.timeout(60):
                async for kind, doc in frames(response):
                    assert kind == "stats"  # a plain stream gets stats, no job events
                    stats.append(doc)
                    if len(stats) == 1:
                        assert doc["tasks"]["work"]["completed"] == 0
                        for n in range(5):
                            work.dispatch(n)
                    counts = doc["tasks"]["work"]
                    if counts["completed"] == 4 and counts["failed"] == 1:
                        break
            assert sum(m["completed"] for m in stats[-1]["minutes"]) == 4
            # the worker registry rides in the same frame: this process, its one task
            assert [(w["pid"], w["tasks"]) for w in stats[-1]["workers"]] == [
                (os.getpid(), {"work": 1})
            ]
        assert not app._events()._listeners  # the overview needs no events reader


async def test_a_job_page_gets_its_job_events_redacted(make_app: AppFactory) -> None:
    app = make_app()
    gate = asyncio.Event()

    @app.task(retry=taskora.Retry(attempts=1), concurrency=4)
    async def work(data: dict[str, Any], ctx: taskora.Context) -> int:
        await gate.wait()
        await ctx.progress({"step": 1, "token": SECRET})
        if data["n"] == 0:
            raise RuntimeError(f"login failed: password={SECRET}")
        return int(data["n"])

    async with app, board_server(app) as (url, _), httpx.AsyncClient(timeout=30) as http:
        failing = work.dispatch({"n": 0})
        other = work.dispatch({"n": 1})
        await asyncio.gather(failing, other)
        query = f"/api/events?job={failing.id}&tasks=work"
        async with http.stream("GET", url + query) as response:
            own = frames(response)
            assert (await asyncio.wait_for(anext(own), 30))[0] == "stats"  # listening now
            gate.set()
            seen: list[Any] = []
            raw: list[str] = []
            async with asyncio.timeout(60):
                async for kind, doc in own:
                    raw.append(json.dumps(doc))
                    if kind == "jobs":
                        seen += doc["events"]
                        if any(e["event"] == "failed" for e in seen):
                            break
    assert {e["id"] for e in seen} == {failing.id}  # not the other job's
    failed = next(e for e in seen if e["event"] == "failed")
    assert failed["error"].endswith("login failed: password=[REDACTED]")
    progress = next(e for e in seen if e["event"] == "progress")
    assert progress["progress"] == {"step": 1, "token": "[REDACTED]"}
    assert not any(SECRET in text for text in raw)


async def test_many_browsers_share_one_set_of_listeners(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def tick(n: int) -> int:
        return n

    @app.task()
    async def tock(n: int) -> int:
        return n

    async with app, board_server(app) as (url, live), httpx.AsyncClient(timeout=30) as http:
        hub = app._events()
        async with contextlib.AsyncExitStack() as stack:
            plain = [
                frames(await stack.enter_async_context(http.stream("GET", url + "/api/events")))
                for _ in range(3)
            ]
            watching = [
                frames(
                    await stack.enter_async_context(
                        http.stream("GET", url + f"/api/events?job=j{i}&tasks=tick")
                    )
                )
                for i in range(5)
            ]
            for stream in plain + watching:  # every browser gets its first stats frame
                kind, _ = await asyncio.wait_for(anext(stream), 30)
                assert kind == "stats"
            assert len(live.clients) == 8
            # one listener per event kind of the one task watched, whatever the browsers
            assert {task for task, _ in hub._listeners} == {"tick"}
            assert len(hub._listeners) == 9 and all(len(s) == 1 for s in hub._listeners.values())
        await wait_until(lambda: not live.clients)
        await wait_until(lambda: not hub._listeners)  # nobody watching: nothing read


async def test_stopping_the_server_ends_open_streams(make_app: AppFactory) -> None:
    app = make_app()

    @app.task()
    async def noop(n: int) -> int:
        return n

    async with app, httpx.AsyncClient(timeout=30) as http:
        ended = asyncio.Event()

        async def browser(url: str) -> None:
            async with http.stream("GET", url + "/api/events") as response:
                async for _ in frames(response):
                    pass
            ended.set()

        async with board_server(app) as (url, live):
            task = asyncio.create_task(browser(url))
            await wait_until(lambda: len(live.clients) == 1)
        # leaving the block stopped the server although a stream was open
        await asyncio.wait_for(ended.wait(), 30)
        await task
