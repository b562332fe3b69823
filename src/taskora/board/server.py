"""``create_board(app)``: the board as a Starlette ASGI app (docs/design.md#board).

Every route is declared in ``_routes`` with one of five kinds, and one guard enforces what
the kind needs before the endpoint runs (decision 12):

- ``public``: the login form and the static files; nothing to protect.
- ``page``: the HTML shell; without a session it redirects to the login form.
- ``read``: JSON and the SSE stream; without a session it answers 401.
- ``write``: anything that changes state; a session, the session's CSRF token in the
  ``X-CSRF-Token`` header, a same-origin ``Origin`` when one is sent, and not read-only.
- ``logout``: a session and its CSRF token (allowed in read-only mode).

Without ``auth`` the board answers only on loopback (the server's address and the
``Host`` header: a rebinding DNS name cannot reach it) and still asks for a CSRF token
(then one per board process), so another site open in the same browser cannot act on it.
"""

from __future__ import annotations

import html
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from ..durations import Duration, to_ms
from ..errors import BackendError, ConfigError, TaskoraError
from .api import API, BadRequest, NotFound, json_response
from .live import Live
from .redact import Redactor
from .security import (
    Authenticator,
    Check,
    LoginLimiter,
    Session,
    Sessions,
    host_of,
    is_loopback_host,
    safe_next,
    tokens_equal,
)

if TYPE_CHECKING:
    from ..app import App

__all__ = ["SESSION_COOKIE", "BoardState", "create_board", "route_kinds"]

log = logging.getLogger("taskora.board")

SESSION_COOKIE = "taskora_board_session"
LOGIN_COOKIE = "taskora_board_login"
CSRF_HEADER = "x-csrf-token"
PAGES = (
    "/",
    "/tasks/{task}",
    "/jobs/{id}",
    "/schedules",
    "/workflows",
    "/workflows/{id}",
    "/dlq",
    "/versions",
)
STATIC = {"board.js": "text/javascript", "board.css": "text/css"}
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass
class BoardState:
    """What a running board holds (``board.state.taskora``): the CLI closes ``live``."""

    app: App
    auth: Authenticator | None
    read_only: bool
    sessions: Sessions
    limiter: LoginLimiter
    allowed_hosts: frozenset[str]
    open_csrf: str  # the CSRF token when there is no auth (one per board process)
    refresh_s: float
    live: Live
    api: API


def create_board(
    app: App,
    *,
    auth: str | Check | None = None,
    read_only: bool = False,
    redact: Iterable[str] = (),
    title: str = "taskora board",
    session_ttl: Duration = timedelta(hours=12),
    refresh_interval: Duration = 2,
    login_attempts: int = 5,
    allowed_hosts: Iterable[str] = (),
) -> Starlette:
    """The board for ``app`` as an ASGI app; mount it where you like (``/board`` is usual):
    ``api.mount("/board", create_board(app, auth=os.environ["BOARD_PASSWORD"]))``.

    ``auth``: a password (str, at least 8 characters) or ``(username, password) -> bool``
    (sync or async); without it the board answers only on loopback. ``read_only`` refuses
    every change. ``redact`` adds key names to hide (to password, secret, token, api key,
    authorization, credential, private key, cookie). Sessions are kept in this process and
    end ``session_ttl`` after login. ``allowed_hosts``: extra ``Host`` names an auth-less
    board answers to (behind a local proxy)."""
    if not isinstance(read_only, bool):
        raise ConfigError("read_only must be a bool")
    if (
        isinstance(login_attempts, bool)
        or not isinstance(login_attempts, int)
        or login_attempts < 1
    ):
        raise ConfigError("login_attempts must be a positive integer")
    redactor = Redactor(redact)
    api = API(app, redactor, title)
    refresh_s = to_ms(refresh_interval, "refresh_interval", allow_zero=False) / 1000
    state = BoardState(
        app=app,
        auth=None if auth is None else Authenticator(auth),
        read_only=read_only,
        sessions=Sessions(to_ms(session_ttl, "session_ttl", allow_zero=False) / 1000),
        limiter=LoginLimiter(login_attempts),
        allowed_hosts=frozenset(h.lower() for h in allowed_hosts),
        open_csrf=secrets.token_urlsafe(32),
        refresh_s=refresh_s,
        live=Live(app, redactor, refresh_s),
        api=api,
    )
    shell = _Shell(title)
    board = Starlette(routes=_routes(state, shell))
    board.state.taskora = state
    return board


def _routes(state: BoardState, shell: _Shell) -> list[Route]:
    api = state.api
    g = _Guard(state)

    def route(path: str, endpoint: Endpoint, kind: str, methods: list[str]) -> Route:
        return Route(path, g.wrap(endpoint, kind), methods=methods)

    async def events(request: Request) -> Response:
        tasks = request.query_params.get("tasks")
        wanted = frozenset(t for t in tasks.split(",") if t) if tasks else None
        job = request.query_params.get("job") or None
        workflow = request.query_params.get("workflow") or None
        return StreamingResponse(
            state.live.stream(wanted, job, workflow),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    async def page(request: Request) -> Response:
        return shell.page(request.scope.get("root_path", ""))

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", 404, media_type="text/plain")
        return Response(shell.asset(name), media_type=STATIC[name])

    read, write = ["GET"], ["POST"]
    routes = [route(path, page, "page", read) for path in PAGES]
    routes += [
        route("/static/{name}", static, "public", read),
        route("/login", g.login_form, "public", read),
        route("/login", g.login, "public", write),
        route("/logout", g.logout, "logout", write),
        route("/api/config", api.config, "read", read),
        route("/api/overview", api.overview, "read", read),
        route("/api/tasks", api.tasks, "read", read),
        route("/api/throughput", api.throughput, "read", read),
        route("/api/workers", api.workers, "read", read),
        route("/api/tasks/{task}/jobs", api.task_jobs, "read", read),
        route("/api/tasks/{task}/migrations", api.task_migrations, "read", read),
        route("/api/tasks/{task}/retry-all", api.task_retry_all, "write", write),
        route("/api/tasks/{task}/purge", api.task_purge, "write", write),
        route("/api/jobs/{id}", api.job, "read", read),
        route("/api/jobs/{id}/retry", api.job_retry, "write", write),
        route("/api/jobs/{id}/cancel", api.job_cancel, "write", write),
        route("/api/schedules", api.schedules, "read", read),
        route("/api/schedules/{name}/{action}", api.schedule_action, "write", write),
        route("/api/schedules/{name}", api.schedule_remove, "write", ["DELETE"]),
        route("/api/workflows", api.workflows, "read", read),
        route("/api/workflows/{id}", api.workflow, "read", read),
        route("/api/workflows/{id}/cancel", api.workflow_cancel, "write", write),
        route("/api/dlq", api.dlq, "read", read),
        route("/api/dlq/retry-all", api.dlq_retry_all, "write", write),
        route("/api/dlq/{id}/retry", api.dlq_retry, "write", write),
        route("/api/versions", api.versions, "read", read),
        route("/api/events", events, "read", read),
    ]
    return routes


class _Guard:
    def __init__(self, state: BoardState) -> None:
        self.state = state

    def wrap(self, endpoint: Endpoint, kind: str) -> Endpoint:
        async def guarded(request: Request) -> Response:
            response = await self._guarded(request, endpoint, kind)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        guarded.__name__ = getattr(endpoint, "__name__", "endpoint")
        guarded.kind = kind  # type: ignore[attr-defined]  # read by the route tests
        return guarded

    async def _guarded(self, request: Request, endpoint: Endpoint, kind: str) -> Response:
        state = self.state
        base = request.scope.get("root_path", "")
        if state.auth is None and not self._local(request):
            return json_response(
                {
                    "error": "this board has no auth configured, so it answers only on "
                    "loopback; give create_board(auth=...) or set TASKORA_BOARD_PASSWORD"
                },
                403,
            )
        session = self._session(request)
        request.scope["taskora.board"] = state
        request.scope["taskora.session"] = session
        request.scope["taskora.csrf"] = session.csrf if session else state.open_csrf
        if kind != "public" and state.auth is not None and session is None:
            if kind == "page":
                query = request.url.query
                target = quote(request.url.path + ("?" + query if query else ""), safe="/")
                return RedirectResponse(f"{base}/login?next={target}", 303)
            return json_response({"error": "not logged in"}, 401)
        if kind in ("write", "logout"):
            refused = self._check_write(request, kind, session)
            if refused is not None:
                return refused
        try:
            return await endpoint(request)
        except BadRequest as exc:
            return json_response({"error": str(exc)}, 400)
        except (NotFound, ConfigError) as exc:
            return json_response({"error": str(exc)}, 404)
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        except BackendError as exc:  # names the address, never a password
            log.warning("board: backend error: %s", exc)
            return json_response({"error": f"the backend is unavailable: {exc}"}, 503)
        except TaskoraError as exc:
            return json_response({"error": str(exc)}, 409)

    def _local(self, request: Request) -> bool:
        server = request.scope.get("server")
        if server is not None and not is_loopback_host(str(server[0])):
            return False
        host = host_of(request.headers.get("host", "")).lower()
        return is_loopback_host(host) or host in self.state.allowed_hosts

    def _session(self, request: Request) -> Session | None:
        if self.state.auth is None:
            return None
        return self.state.sessions.get(request.cookies.get(SESSION_COOKIE))

    def _check_write(self, request: Request, kind: str, session: Session | None) -> Response | None:
        if kind == "write" and self.state.read_only:
            return json_response({"error": "the board is read-only"}, 403)
        origin = request.headers.get("origin")
        if (
            origin is not None
            and urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()
        ):
            return json_response({"error": "cross-origin request refused"}, 403)
        expected = session.csrf if session is not None else self.state.open_csrf
        if not tokens_equal(request.headers.get(CSRF_HEADER), expected):
            return json_response({"error": "missing or wrong CSRF token"}, 403)
        return None

    # -- login / logout ---------------------------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        base = request.scope.get("root_path", "")
        target = safe_next(request.query_params.get("next"), base)
        if self.state.auth is None or self._session(request) is not None:
            return RedirectResponse(target, 303)
        return self._login_page(request, target, None, 200)

    def _login_page(
        self, request: Request, target: str, error: str | None, status: int
    ) -> Response:
        base = request.scope.get("root_path", "")
        token = secrets.token_urlsafe(24)
        body = _login_html(base, self.state.api.title, target, token, error)
        response = HTMLResponse(body, status)
        self._cookie(request, response, LOGIN_COOKIE, token, 600, strict=True)
        return response

    async def login(self, request: Request) -> Response:
        state = self.state
        base = request.scope.get("root_path", "")
        if state.auth is None:
            return RedirectResponse(safe_next(None, base), 303)
        form = await _form(request)
        target = safe_next(form.get("next"), base)
        client = request.client.host if request.client else "?"
        wait = state.limiter.retry_after(client)
        if wait:
            response = self._login_page(
                request, target, f"Too many failed logins; try again in {wait} s.", 429
            )
            response.headers["retry-after"] = str(wait)
            return response
        if not tokens_equal(form.get("csrf"), request.cookies.get(LOGIN_COOKIE) or "\0"):
            return self._login_page(request, target, "The form expired; please try again.", 403)
        username, password = form.get("username", ""), form.get("password", "")
        if not password or not await state.auth.verify(username, password):
            state.limiter.failed(client)
            return self._login_page(request, target, "Wrong username or password.", 401)
        state.limiter.succeeded(client)
        state.sessions.drop(request.cookies.get(SESSION_COOKIE))  # no session fixation
        session = state.sessions.create(username or "admin")
        response = RedirectResponse(target, 303)
        self._cookie(request, response, SESSION_COOKIE, session.id, int(state.sessions.ttl_s))
        response.delete_cookie(LOGIN_COOKIE, path=_cookie_path(base))
        return response

    async def logout(self, request: Request) -> Response:
        base = request.scope.get("root_path", "")
        self.state.sessions.drop(request.cookies.get(SESSION_COOKIE))
        target = f"{base}/login" if self.state.auth is not None else f"{base}/"
        response = RedirectResponse(target, 303)
        response.delete_cookie(
            SESSION_COOKIE,
            path=_cookie_path(base),
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="lax",
        )
        return response

    @staticmethod
    def _cookie(
        request: Request,
        response: Response,
        name: str,
        value: str,
        max_age: int,
        strict: bool = False,
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=_cookie_path(request.scope.get("root_path", "")),
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict" if strict else "lax",
        )


def _cookie_path(base: str) -> str:
    return base or "/"


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (no multipart parser needed); the first value of each field."""
    raw = await request.body()
    if len(raw) > 16_384:
        raise BadRequest("form too large")
    fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


class _Shell:
    """The HTML shell of every page and the static files, read once from the package."""

    def __init__(self, title: str) -> None:
        self.title = title
        files = resources.files("taskora.board") / "static"
        self._assets = {name: (files / name).read_bytes() for name in STATIC}
        self._index = (files / "index.html").read_text("utf-8")

    def asset(self, name: str) -> bytes:
        return self._assets[name]

    def page(self, base: str) -> Response:
        body = self._index.replace("{{base}}", html.escape(base, quote=True)).replace(
            "{{title}}", html.escape(self.title)
        )
        return HTMLResponse(body)


def _login_html(base: str, title: str, target: str, token: str, error: str | None) -> str:
    e = html.escape
    message = f'<p class="login-error" role="alert">{e(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · {e(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{e(base)}/static/board.css">
<script src="{e(base)}/static/board.js" defer></script>
</head><body class="login-body">
<form class="login card" method="post" action="{e(base)}/login">
<h1>{e(title)}</h1>{message}
<label>Username <input name="username" autocomplete="username" autofocus></label>
<label>Password <input name="password" type="password" required
 autocomplete="current-password"></label>
<input type="hidden" name="csrf" value="{e(token)}">
<input type="hidden" name="next" value="{e(target)}">
<button type="submit" class="primary">Log in</button>
</form></body></html>"""


def route_kinds(board: Starlette) -> list[tuple[str, tuple[str, ...], str]]:
    """(path, methods, kind) of every route of a board (for tests and docs)."""
    out = []
    for r in board.routes:
        if isinstance(r, Route):
            kind: Any = getattr(r.endpoint, "kind", "?")
            out.append((r.path, tuple(sorted(r.methods or ())), str(kind)))
    return out
