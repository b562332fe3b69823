"""The board's live updates over SSE, through a real uvicorn server on a loopback port, on
both backends: stats and jobs frames, redaction in frames, one set of listeners for any
number of browsers, a per-job stream, and a stop that ends open streams
(docs/design.md#board)."""

from __future__ import annotations

import asyncio
import contextlib
import json
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


async def test_stats_and_jobs_frames_flow_and_are_redacted(make_app: AppFactory) -> None:
    app = make_app()

    @app.task(retry=taskora.Retry(attempts=1))
    async def work(data: dict[str, Any], ctx: taskora.Context) -> int:
        await ctx.progress({"step": 1, "token": SECRET})
        if data["n"] == 0:
            raise RuntimeError(f"login failed: password={SECRET}")
        return int(data["n"])

    served = board_server(app, refresh_interval=0.2)
    async with app, served as (url, _live), httpx.AsyncClient(timeout=30) as http:
        async with http.stream("GET", url + "/api/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            seen: dict[str, Any] = {"events": [], "completed": 0, "stats": []}
            raw: list[str] = []
            async with asyncio.timeout(60):
                async for kind, doc in frames(response):
                    raw.append(json.dumps(doc))
                    if kind == "stats":
                        seen["stats"].append(doc)
                        if len(seen["stats"]) == 1:  # listening now: send the jobs
                            assert "work" in doc["tasks"]
                            for n in range(5):
                                work.dispatch({"n": n, "secret": SECRET})
                    elif kind == "jobs":
                        seen["events"] += doc["events"]
                        seen["completed"] += doc["counts"].get("work", {}).get("completed", 0)
                    counts = seen["stats"][-1]["tasks"]["work"] if seen["stats"] else {}
                    if (
                        seen["completed"] == 4
                        and counts.get("completed") == 4
                        and counts.get("failed") == 1
                    ):
                        break
    kinds = {e["event"] for e in seen["events"]}
    assert {"waiting", "active", "completed", "failed", "progress"} <= kinds
    failed = next(e for e in seen["events"] if e["event"] == "failed")
    assert failed["error"].endswith("login failed: password=[REDACTED]")
    progress = next(e for e in seen["events"] if e["event"] == "progress")
    assert progress["progress"] == {"step": 1, "token": "[REDACTED]"}
    assert not any(SECRET in text for text in raw)


async def test_many_browsers_share_one_set_of_listeners(make_app: AppFactory) -> None:
    app = make_app()
    gate = asyncio.Event()

    @app.task(concurrency=4)
    async def tick(n: int) -> int:
        await gate.wait()
        return n

    async with app, board_server(app) as (url, live), httpx.AsyncClient(timeout=30) as http:
        hub = app._events()
        async with contextlib.AsyncExitStack() as stack:
            streams = [
                frames(await stack.enter_async_context(http.stream("GET", url + "/api/events")))
                for _ in range(5)
            ]
            for stream in streams:  # every browser gets its first stats frame
                kind, _ = await asyncio.wait_for(anext(stream), 30)
                assert kind == "stats"
            assert len(live.clients) == 5
            # one listener per task and event kind, whatever the number of browsers
            assert len(hub._listeners) == 9 and all(len(s) == 1 for s in hub._listeners.values())

            mine = tick.dispatch(7)
            await mine
            response = await stack.enter_async_context(
                http.stream("GET", url + f"/api/events?job={mine.id}")
            )
            own = frames(response)
            assert (await asyncio.wait_for(anext(own), 30))[0] == "stats"
            other = tick.dispatch(8)
            await other
            gate.set()
            await asyncio.gather(mine.wait_for(20), other.wait_for(20))
            async with asyncio.timeout(30):
                async for kind, doc in own:
                    if kind == "jobs":
                        assert {e["id"] for e in doc["events"]} <= {mine.id}
                        if any(e["event"] == "completed" for e in doc["events"]):
                            break
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
