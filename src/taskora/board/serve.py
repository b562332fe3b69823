"""``taskora board``: the board on its own, served by uvicorn under ``/board``.

It refuses to listen anywhere but loopback without auth (decision 12), and on a stop it
ends the open live streams first, so uvicorn's graceful shutdown does not wait on them.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .security import is_loopback_host
from .server import create_board

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..app import App

__all__ = ["bind", "check_bind", "mount", "serve", "serve_board"]

BASE = "/board"


def mount(board: Starlette, base: str = BASE) -> Starlette:
    """A root app with the board under ``base`` and ``/`` redirecting there."""
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Mount, Route

    async def home(request: Any) -> RedirectResponse:
        return RedirectResponse(base + "/", 307)

    return Starlette(routes=[Route("/", home), Mount(base, board)])


def check_bind(host: str, auth: object) -> None:
    if auth is None and not is_loopback_host(host):
        raise ConfigError(
            f"refusing to serve the board on {host} without auth: set TASKORA_BOARD_PASSWORD "
            "(or pass auth= to create_board), or bind to 127.0.0.1"
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket for ``host:port`` (an OSError names what is wrong)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def serve(
    app: App,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    sock: socket.socket | None = None,
    log_level: str = "warning",
    started: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    **options: Any,
) -> None:
    """Serve the board (``create_board(app, **options)``) under ``/board`` until ``stop`` is
    set or the process is signalled; ``sock``: an already bound socket (tests)."""
    check_bind(host if sock is None else str(sock.getsockname()[0]), options.get("auth"))
    board = create_board(app, **options)
    if sock is None:
        sock = bind(host, port)
    await serve_board(board, sock, log_level=log_level, started=started, stop=stop)


async def serve_board(
    board: Starlette,
    sock: socket.socket,
    *,
    log_level: str = "warning",
    started: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve a board made by ``create_board`` on a bound socket (see ``serve``)."""
    import uvicorn

    live = board.state.taskora.live

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            asyncio.get_running_loop().create_task(live.close())
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        mount(board),
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = Server(config)
    runner = asyncio.ensure_future(server.serve(sockets=[sock]))
    waiter = asyncio.ensure_future(stop.wait() if stop is not None else asyncio.Future())
    try:
        while not server.started and not runner.done():
            await asyncio.sleep(0.01)  # uvicorn has no "started" event to wait on
        if started is not None and server.started:
            started.set()
        await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        await live.close()  # open streams would hold the graceful shutdown
        server.should_exit = True
        if not runner.done():
            await asyncio.shield(runner)
        sock.close()
    runner.result()
