"""The board's JSON API and its security (docs/design.md#board, decision 12), through the
ASGI app itself (httpx's ASGI transport) on both backends. Routes are enumerated from the
app, so a route added later is covered by the auth and redaction checks without editing
them. Live updates (SSE) and the browser tests are in test_board_live.py and
test_board_browser.py."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import taskora
from taskora import Retry, chain
from taskora.board import Redactor, create_board
from taskora.board.security import LoginLimiter, Sessions, is_loopback_host, safe_next
from taskora.board.serve import mount
from taskora.board.server import SESSION_COOKIE, route_kinds
from tests.conftest import AppFactory, wait_until

PASSWORD = "correct horse battery"
SECRET = "hunter2-very-secret"
PUBLIC = {
    ("/static/{name}", ("GET", "HEAD")),
    ("/login", ("GET", "HEAD")),
    ("/login", ("POST",)),
}


def client(
    board: Any, base: str = "http://127.0.0.1:8080", ip: str = "127.0.0.1"
) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=mount(board), client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url=base, follow_redirects=False)


async def login(c: httpx.AsyncClient, password: str = PASSWORD, next_: str = "") -> httpx.Response:
    form = await c.get("/board/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    return await c.post(
        "/board/login",
        data={"username": "ops", "password": password, "csrf": token.group(1), "next": next_},
    )


async def csrf(c: httpx.AsyncClient) -> dict[str, str]:
    config = (await c.get("/board/api/config")).json()
    return {"x-csrf-token": config["csrf"]}


def fill(path: str, values: dict[str, str] | None = None) -> str:
    values = values or {}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), path)


# -- security -------------------------------------------------------------------------------
async def test_every_route_refuses_an_unauthenticated_request() -> None:
    board = create_board(taskora.App("memory://"), auth=PASSWORD)
    routes = route_kinds(board)
    assert len(routes) > 25
    public = {(path, methods) for path, methods, kind in routes if kind == "public"}
    assert public == PUBLIC  # a new public route must be added here on purpose
    async with client(board) as c:
        for path, methods, kind in routes:
            for method in methods:
                if kind == "public" or method == "HEAD":
                    continue
                response = await c.request(method, "/board" + fill(path))
                if kind == "page":
                    assert response.status_code == 303, (method, path)
                    assert response.headers["location"].startswith("/board/login?next=")
                else:
                    assert response.status_code == 401, (method, path, response.text)
                    assert response.json() == {"error": "not logged in"}
                assert "default-src 'self'" in response.headers["content-security-policy"]


async def test_login_sets_a_safe_cookie_and_logout_ends_the_session() -> None:
    board = create_board(taskora.App("memory://"), auth=PASSWORD)
    async with client(board) as c:
        wrong = await login(c, "not the password")
        assert wrong.status_code == 401 and "Wrong username or password" in wrong.text
        assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
        ok = await login(c, next_="/board/jobs/abc?x=1")
        assert ok.status_code == 303 and ok.headers["location"] == "/board/jobs/abc?x=1"
        cookie = next(v for v in ok.headers.get_list("set-cookie") if v.startswith(SESSION_COOKIE))
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "path", "max-age"} <= flags and "secure" not in flags
        assert "samesite=lax" in cookie.lower() and "path=/board" in cookie.lower()
        assert (await c.get("/board/api/overview")).status_code == 200
        assert (await c.get("/board/")).status_code == 200
        config = (await c.get("/board/api/config")).json()
        assert config["user"] == "ops" and config["auth"] is True
        assert (await c.post("/board/logout")).status_code == 403  # logout needs the token too
        out = await c.post("/board/logout", headers={"x-csrf-token": config["csrf"]})
        assert out.status_code == 303 and out.headers["location"] == "/board/login"
        assert (await c.get("/board/api/overview")).status_code == 401
    async with client(board, base="https://127.0.0.1:8443") as c:
        ok = await login(c)
        cookie = next(v for v in ok.headers.get_list("set-cookie") if v.startswith(SESSION_COOKIE))
        assert "secure" in cookie.lower()


async def test_a_stolen_old_session_id_stops_working_after_login_and_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    board = create_board(taskora.App("memory://"), auth=PASSWORD, session_ttl="1h")
    sessions: Sessions = board.state.taskora.sessions
    async with client(board) as c:
        c.cookies.set(SESSION_COOKIE, "planted-by-an-attacker", "127.0.0.1", "/board")
        await login(c)  # the session id is always the server's, never one it was sent
        session_id = c.cookies[SESSION_COOKIE]
        assert session_id != "planted-by-an-attacker" and sessions.get(session_id) is not None
        assert (await c.get("/board/api/overview")).status_code == 200
        now = Sessions._now()
        monkeypatch.setattr(Sessions, "_now", staticmethod(lambda: now + 3601))
        assert (await c.get("/board/api/overview")).status_code == 401
        page = await c.get("/board/dlq")
        assert (
            page.status_code == 303 and page.headers["location"] == "/board/login?next=/board/dlq"
        )


async def test_state_changes_need_the_csrf_token_and_the_same_origin() -> None:
    app = taskora.App("memory://")
    board = create_board(app, auth=PASSWORD)
    async with client(board) as c:
        await login(c)
        token = await csrf(c)
        url = "/board/api/dlq/retry-all"
        assert (await c.post(url)).json() == {"error": "missing or wrong CSRF token"}
        assert (await c.post(url, headers={"x-csrf-token": "forged"})).status_code == 403
        evil = {**token, "origin": "https://evil.example"}
        assert (await c.post(url, headers=evil)).json() == {"error": "cross-origin request refused"}
        same = {**token, "origin": "http://127.0.0.1:8080"}
        assert (await c.post(url, headers=same)).json() == {"retried": 0}
        # another session's token is not this session's
        async with client(board) as other:
            await login(other)
            assert (await other.post(url, headers=token)).status_code == 403
    await app.close()


async def test_login_rate_limit_per_client_and_open_redirect_guard() -> None:
    board = create_board(taskora.App("memory://"), auth=PASSWORD, login_attempts=3)
    async with client(board, ip="192.0.2.7") as c:
        for _ in range(3):
            assert (await login(c, "guess")).status_code == 401
        refused = await login(c)  # even the right password waits out the window
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "Too many failed logins" in refused.text
    async with client(board, ip="192.0.2.8") as c:  # another address is not held back
        assert (await login(c)).status_code == 303
        for target in (
            "//evil.example/x",
            "https://evil.example",
            "/\\evil.example",
            "/other/app",
            "/board/../admin",
            "/board/\r\nSet-Cookie:x",
            "javascript:alert(1)",
        ):
            c.cookies.clear()
            response = await login(c, next_=target)
            assert response.headers["location"] == "/board/", target
        c.cookies.clear()
        assert (await login(c, next_="/board/dlq?task=a")).headers[
            "location"
        ] == "/board/dlq?task=a"
        follow = await c.get("/board/login?next=//evil.example")
        assert follow.status_code == 303 and follow.headers["location"] == "/board/"
    assert safe_next("/board", "/board") == "/board"
    assert safe_next(None, "") == "/"


def test_limiter_window_and_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("taskora.board.security.time.monotonic", lambda: clock[0])
    limiter = LoginLimiter(attempts=2, window_s=60)
    limiter.failed("a")
    limiter.failed("a")
    assert limiter.retry_after("a") == 60 and limiter.retry_after("b") == 0
    clock[0] += 61
    assert limiter.retry_after("a") == 0
    assert all(is_loopback_host(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "127.3.4.5"))
    assert not any(is_loopback_host(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com"))


async def test_read_only_refuses_every_change_but_logout() -> None:
    board = create_board(taskora.App("memory://"), auth=PASSWORD, read_only=True)
    async with client(board) as c:
        await login(c)
        token = await csrf(c)
        assert (await c.get("/board/api/config")).json()["read_only"] is True
        for path, methods, kind in route_kinds(board):
            if kind == "write":
                for method in methods:
                    response = await c.request(method, "/board" + fill(path), headers=token)
                    assert response.status_code == 403, path
                    assert response.json() == {"error": "the board is read-only"}
        assert (await c.post("/board/logout", headers=token)).status_code == 303


async def test_without_auth_only_loopback_answers_and_csrf_still_applies() -> None:
    app = taskora.App("memory://")
    board = create_board(app)
    async with client(board) as c:  # loopback
        assert (await c.get("/board/api/overview")).status_code == 200
        assert (await c.get("/board/login")).headers["location"] == "/board/"
        assert (await c.post("/board/api/dlq/retry-all")).status_code == 403
        assert (await c.post("/board/api/dlq/retry-all", headers=await csrf(c))).status_code == 200
        rebound = await c.get("/board/api/overview", headers={"host": "attacker.example"})
        assert rebound.status_code == 403 and "only on loopback" in rebound.json()["error"]
    async with client(board, base="http://10.1.2.3:8080") as c:  # bound to a public address
        for path, methods, _ in route_kinds(board):
            assert (await c.request(methods[0], "/board" + fill(path))).status_code == 403
    proxied = create_board(app, allowed_hosts=["board.internal"])
    async with client(proxied, base="http://board.internal") as c:
        assert (await c.get("/board/api/overview")).status_code == 403  # server not loopback
    async with client(proxied) as c:
        ok = await c.get("/board/api/overview", headers={"host": "board.internal"})
        assert ok.status_code == 200
    await app.close()


def test_bad_configuration_is_refused_early() -> None:
    app = taskora.App("memory://")
    with pytest.raises(taskora.ConfigError, match="at least 8 characters"):
        create_board(app, auth="short")
    with pytest.raises(taskora.ConfigError, match=r"password .* or a callable"):
        create_board(app, auth=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="redact"):
        create_board(app, redact=[""])
    with pytest.raises(taskora.ConfigError, match="login_attempts"):
        create_board(app, login_attempts=0)
    with pytest.raises(taskora.ConfigError, match="read_only"):
        create_board(app, read_only="yes")  # type: ignore[arg-type]
    for name in ("session_ttl", "refresh_interval"):
        for bad in (0, -1, "soon"):
            with pytest.raises(ValueError, match=name):
                create_board(app, **{name: bad})


async def test_a_user_callback_decides_who_logs_in() -> None:
    seen: list[tuple[str, str]] = []

    async def check(user: str, password: str) -> bool:
        seen.append((user, password))
        return user == "ops" and password == "s3cret-pass"

    board = create_board(taskora.App("memory://"), auth=check)
    async with client(board) as c:
        assert (await login(c, "nope")).status_code == 401
        assert (await login(c, "s3cret-pass")).status_code == 303
    assert seen == [("ops", "nope"), ("ops", "s3cret-pass")]


def test_cli_refuses_a_public_bind_without_a_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskora.cli import main

    monkeypatch.delenv("TASKORA_BOARD_PASSWORD", raising=False)
    assert main(["board", "--url", "memory://", "--host", "0.0.0.0"]) == 2
    assert "refusing to serve the board on 0.0.0.0 without auth" in capsys.readouterr().err
    monkeypatch.delenv("TASKORA_URL", raising=False)
    assert main(["board"]) == 2
    assert "no backend" in capsys.readouterr().err


# -- redaction ------------------------------------------------------------------------------
def test_redactor_keys_values_and_extra_names() -> None:
    r = Redactor(["ssn"])
    out = r(
        {
            "Password": "x",
            "db": {"API-Key": 1, "rows": [{"SSN": "1", "note": f"token={SECRET} ok"}]},
            "url": f"redis://user:{SECRET}@host:6379/0",
            "auth": f"Authorization: Bearer {SECRET}",
            "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
            "author": "kept",
        }
    )
    assert SECRET not in repr(out) and "MIIE" not in repr(out)
    assert out["Password"] == out["db"]["API-Key"] == out["db"]["rows"][0]["SSN"] == "[REDACTED]"
    assert out["db"]["rows"][0]["note"] == "token=[REDACTED] ok"
    assert out["url"] == "redis://user:[REDACTED]@host:6379/0"
    assert out["author"] == "kept"


@pytest.fixture
async def stocked(make_app: AppFactory) -> AsyncIterator[dict[str, Any]]:
    """An app with a bit of everything, secrets planted in data, results, errors, logs,
    progress, schedule data and workflow steps."""
    app = make_app()
    gate = asyncio.Event()

    @app.task(retry=Retry(attempts=1))
    async def charge(data: dict[str, Any], ctx: taskora.Context) -> dict[str, Any]:
        ctx.log.info(f"charging with api_key={SECRET}", password=SECRET)
        await ctx.progress({"step": 1, "token": SECRET})
        if data.get("fail"):
            raise RuntimeError(f"gateway said: password={SECRET} rejected")
        return {"ok": True, "secret": SECRET}

    @app.task()
    async def hold(data: Any) -> Any:
        await gate.wait()
        return data

    app.schedule("nightly", task=charge, every="1h", data={"card": 1, "credential": SECRET})
    ids: dict[str, Any] = {"app": app, "gate": gate}
    async with app:
        ids["done"] = charge.dispatch({"card": 1, "api_key": SECRET})
        ids["failed"] = charge.dispatch({"card": 2, "fail": True, "password": SECRET})
        await ids["done"].wait_for(20)
        with pytest.raises(taskora.JobFailedError):
            await ids["failed"].wait_for(20)
        ids["delayed"] = charge.dispatch({"card": 3}, delay=3600)
        await ids["delayed"]
        ids["wf"] = chain(charge.s({"card": 4, "token": SECRET}), hold.s()).dispatch(name="pay")
        await ids["wf"]

        async def second_step_running() -> bool:
            info = await app.inspect().workflow(ids["wf"].id)
            return info is not None and info.steps[1].state == "active"

        await wait_until(second_step_running)
        yield ids
        gate.set()


async def test_no_endpoint_shows_a_secret(stocked: dict[str, Any]) -> None:
    app = stocked["app"]
    board = create_board(app, redact=["card"])
    values = {
        "task": "charge",
        "id": stocked["failed"].id,
        "name": "nightly",
    }
    seen = 0
    async with client(board) as c:
        for path, _, kind in route_kinds(board):
            if kind != "read" or path == "/api/events":
                continue
            for value in (
                {**values, "id": stocked["wf"].id},
                values,
                {**values, "id": stocked["done"].id},
            ):
                response = await c.get("/board" + fill(path, value))
                assert response.status_code in (200, 404), (path, response.text)
                assert SECRET not in response.text, path
                assert '"card":1' not in response.text.replace(" ", ""), path
                seen += response.status_code == 200
        job = (await c.get(f"/board/api/jobs/{stocked['done'].id}")).json()
        assert job["result"] == {"ok": True, "secret": "[REDACTED]"}
        assert job["logs"][0]["message"] == "charging with api_key=[REDACTED]"
        assert job["logs"][0]["meta"] == {"password": "[REDACTED]"}
        assert job["progress"] == {"step": 1, "token": "[REDACTED]"}
        failed = (await c.get(f"/board/api/jobs/{stocked['failed'].id}")).json()
        assert failed["error"].endswith("gateway said: password=[REDACTED] rejected")
    assert seen > 15


# -- the API --------------------------------------------------------------------------------
async def test_overview_tasks_jobs_and_paging(stocked: dict[str, Any]) -> None:
    board = create_board(stocked["app"])
    async with client(board) as c:
        over = (await c.get("/board/api/overview")).json()
        names = [t["name"] for t in over["tasks"]]
        assert names == ["charge", "hold"]
        charge = over["tasks"][0]
        assert charge["counts"]["completed"] >= 2 and charge["counts"]["failed"] == 1
        assert charge["config"]["retry"]["attempts"] == 1
        assert over["totals"]["delayed"] >= 1
        assert len(over["throughput"]["hour"]) == 60 and over["throughput"]["day"]
        assert sum(m["completed"] for m in over["throughput"]["hour"]) >= 2
        assert over["server"]["backend"] in ("memory", "redis")

        jobs = (await c.get("/board/api/tasks/charge/jobs?state=completed&limit=1")).json()
        assert jobs["total"] >= 2 and len(jobs["jobs"]) == 1 and jobs["limit"] == 1
        page2 = (
            await c.get("/board/api/tasks/charge/jobs?state=completed&limit=1&offset=1")
        ).json()
        assert page2["jobs"][0]["id"] != jobs["jobs"][0]["id"]
        retrying = (await c.get("/board/api/tasks/charge/jobs?state=retrying")).json()
        assert retrying["state"] == "delayed" and stocked["delayed"].id in {
            j["id"] for j in retrying["jobs"]
        }
        bad = await c.get("/board/api/tasks/charge/jobs?state=nope")
        assert bad.status_code == 400 and "unknown state" in bad.json()["error"]
        bad = await c.get("/board/api/tasks/charge/jobs?limit=-1")
        assert bad.status_code == 400 and "limit" in bad.json()["error"]
        assert (await c.get("/board/api/jobs/missing")).status_code == 404

        step = (await c.get(f"/board/api/jobs/wf-{stocked['wf'].id}-0")).json()
        assert step["workflow"] == {"id": stocked["wf"].id, "step": 0}
        assert step["max_attempts"] == 1
        assert [s for s, _ in step["timeline"]][-1] == "completed"


async def test_retry_cancel_retry_all_and_purge(stocked: dict[str, Any]) -> None:
    app = stocked["app"]
    board = create_board(app)
    async with client(board) as c:
        token = await csrf(c)
        failed_id = stocked["failed"].id
        missing = await c.post("/board/api/jobs/nope/retry", headers=token)
        assert missing.status_code == 404
        assert (await c.post(f"/board/api/jobs/{failed_id}/retry", headers=token)).json() == {
            "id": failed_id,
            "retried": True,
        }

        async def failed_again() -> bool:
            doc = (await c.get(f"/board/api/jobs/{failed_id}")).json()
            return bool(doc["state"] == "failed" and doc["attempt"] == 1)

        await wait_until(failed_again)
        delayed = stocked["delayed"].id
        cancel = await c.post(
            f"/board/api/jobs/{delayed}/cancel", headers=token, json={"reason": "test"}
        )
        assert cancel.json() == {"id": delayed, "outcome": "cancelled"}
        again = await c.post(f"/board/api/jobs/{delayed}/cancel", headers=token)
        assert again.status_code == 409
        assert (await c.post("/board/api/jobs/nope/cancel", headers=token)).status_code == 404

        retried = await c.post("/board/api/tasks/charge/retry-all", headers=token)
        assert retried.json() == {"retried": 1}
        assert (await c.post("/board/api/tasks/nope/retry-all", headers=token)).status_code == 404
        await wait_until(failed_again)
        dlq = (await c.get("/board/api/dlq?task=charge")).json()
        assert dlq["total"] == 1 and dlq["groups"][0]["count"] == 1
        assert dlq["groups"][0]["error"] == "gateway said: password=[REDACTED] rejected"
        assert (await c.get("/board/api/dlq?task=nope")).status_code == 404
        assert (await c.post("/board/api/dlq/retry-all?task=charge", headers=token)).json() == {
            "retried": 1
        }
        await wait_until(failed_again)
        assert (await c.post(f"/board/api/dlq/{failed_id}/retry", headers=token)).status_code == 200

        bad = await c.post("/board/api/tasks/charge/purge?state=waiting", headers=token)
        assert bad.status_code == 400
        before = (await c.get("/board/api/tasks/charge/jobs?state=cancelled")).json()["total"]
        purged = await c.post("/board/api/tasks/charge/purge?state=cancelled", headers=token)
        assert purged.json() == {"deleted": before, "state": "cancelled"}


async def test_schedules_workflows_and_versions(stocked: dict[str, Any]) -> None:
    board = create_board(stocked["app"])
    async with client(board) as c:
        token = await csrf(c)
        listed = (await c.get("/board/api/schedules")).json()["schedules"]
        assert [s["name"] for s in listed] == ["nightly"]
        assert listed[0]["every_s"] == 3600 and listed[0]["paused"] is False
        assert listed[0]["data"] == {"card": 1, "credential": "[REDACTED]"}
        assert (
            await c.post("/board/api/schedules/nightly/pause", headers=token)
        ).status_code == 200
        assert (await c.get("/board/api/schedules")).json()["schedules"][0]["paused"] is True
        await c.post("/board/api/schedules/nightly/resume", headers=token)
        assert (await c.get("/board/api/schedules")).json()["schedules"][0]["paused"] is False
        fired = (await c.post("/board/api/schedules/nightly/trigger", headers=token)).json()
        assert fired["name"] == "nightly" and fired["job_id"]
        assert (
            await c.post("/board/api/schedules/nightly/bogus", headers=token)
        ).status_code == 404
        assert (await c.post("/board/api/schedules/nope/pause", headers=token)).status_code == 404
        assert (await c.delete("/board/api/schedules/nightly", headers=token)).status_code == 200
        assert (await c.delete("/board/api/schedules/nightly", headers=token)).status_code == 404

        wf_id = stocked["wf"].id
        flows = (await c.get("/board/api/workflows")).json()["workflows"]
        assert [(w["id"], w["name"], w["state"], w["steps_total"]) for w in flows] == [
            (wf_id, "pay", "running", 2)
        ]
        assert (await c.get("/board/api/workflows?state=completed")).json()["workflows"] == []
        assert (await c.get("/board/api/workflows?state=bogus")).status_code == 400
        one = (await c.get(f"/board/api/workflows/{wf_id}")).json()
        assert [(s["task"], s["deps"], s["state"]) for s in one["steps"]] == [
            ("charge", [], "completed"),
            ("hold", [0], "active"),
        ]
        cancelled = await c.post(f"/board/api/workflows/{wf_id}/cancel", headers=token)
        assert cancelled.json() == {"id": wf_id, "state": "cancelled"}
        assert (await c.post("/board/api/workflows/nope/cancel", headers=token)).status_code == 404
        assert (await c.get("/board/api/workflows/nope")).status_code == 404

        versions = (await c.get("/board/api/versions")).json()["tasks"]
        charge = next(v for v in versions if v["task"] == "charge")
        assert charge["version"] == 1 and charge["since"] == 1
        one_task = (await c.get("/board/api/tasks/charge/migrations")).json()
        assert one_task["task"] == "charge"


async def test_pages_and_static_files_are_served() -> None:
    board = create_board(taskora.App("memory://"), title="ops <board>")
    async with client(board) as c:
        page = await c.get("/board/tasks/emails")
        assert page.status_code == 200 and "ops &lt;board&gt;" in page.text
        assert '<meta name="taskora-base" content="/board">' in page.text
        js = await c.get("/board/static/board.js")
        assert js.headers["content-type"].startswith("text/javascript") and "EventSource" in js.text
        assert (await c.get("/board/static/nope.js")).status_code == 404
        assert (await c.get("/")).headers["location"] == "/board/"
        for name in ("board.js", "board.css", "index.html"):  # works offline: no CDN
            text = (
                (await c.get("/board/static/" + name)).text if name != "index.html" else page.text
            )
            assert not re.search(r"(src|href)=\"?https?://", text), name
            assert "@import url(http" not in text


def test_import_taskora_does_not_load_the_board() -> None:
    code = (
        "import sys, taskora; "
        "assert 'taskora.board' not in sys.modules and 'starlette' not in sys.modules "
        "and 'uvicorn' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
