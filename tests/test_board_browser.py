"""The board as a person uses it: headless Chromium (Debian's package, installed by
scripts/ensure-chromium.sh) driven through Playwright's Python API, against a real uvicorn
server and a real Redis. Screenshots of the main pages land in tests/artifacts/board/
(git-ignored). Waits are for what the page shows, never sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import taskora
from taskora import chain
from tests.test_board_live import board_server

CHROMIUM = os.environ.get("TASKORA_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts" / "board"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000  # live updates on a loaded machine: generous

playwright_api = pytest.importorskip("playwright.async_api", reason="pip install playwright")
pytestmark = [
    pytest.mark.redis_only,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None and not os.access(CHROMIUM, os.X_OK),
        reason=f"no chromium at {CHROMIUM} (bash scripts/ensure-chromium.sh installs it)",
    ),
]


@contextlib.asynccontextmanager
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1280, "height": 860},
        )
        context.set_default_timeout(WAIT_MS)
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            yield page
            assert errors == [], errors  # no JavaScript error on any page
        finally:
            await context.close()


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def number(page: Any, selector: str) -> int:
    return int((await page.text_content(selector) or "0").replace(",", ""))


async def test_overview_live_counts_then_retry_a_failed_job(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    app = taskora.App(redis_url, prefix=prefix)
    healed = asyncio.Event()
    gate = asyncio.Event()

    @app.task(retry=taskora.Retry(attempts=1), concurrency=8)
    async def send_email(data: dict[str, Any], ctx: taskora.Context) -> dict[str, Any]:
        ctx.log.info("sending", to=data["to"])
        if data.get("fail") and not healed.is_set():
            raise ConnectionError(f"SMTP server refused {data['to']}")
        return {"sent": data["to"]}

    @app.task()
    async def render_pdf(n: int) -> int:
        await gate.wait()
        return n

    app.schedule("digest", task=send_email, every="1h", data={"to": "team@example.org"})
    async with app, board_server(app, refresh_interval=0.5) as (url, _), browser(tmp_path) as page:
        first = [send_email.dispatch({"to": f"u{i}@example.org"}) for i in range(5)]
        await asyncio.gather(*(handle.wait_for(60) for handle in first))
        await page.goto(url + "/")
        await page.wait_for_selector("tr[data-task='send_email']")
        assert await number(page, "#total-completed") == 5  # drawn after the five ended
        await page.wait_for_selector("#live.on")
        # jobs flowing while the page is open: the counts change without a reload
        for i in range(30):
            send_email.dispatch({"to": f"later{i}@example.org"})
        await page.wait_for_function(
            "() => Number(document.getElementById('total-completed').textContent"
            ".replace(/,/g, '')) === 35"
        )
        assert await number(page, "tr[data-task='send_email'] td[data-state='completed']") == 35
        assert await number(page, "#workers-alive") == 1  # this process, with its two tasks
        assert "send_email \u00d78" in (await page.text_content("#workers tr[data-worker]") or "")

        failing = send_email.dispatch({"to": "broken@example.org", "fail": True})
        with pytest.raises(taskora.JobFailedError):
            await failing.wait_for(60)
        flow = chain(render_pdf.s(1), render_pdf.s(), render_pdf.s()).dispatch(name="report")
        await flow
        await page.wait_for_function(
            "() => Number(document.getElementById('total-failed').textContent) >= 1"
        )
        await shot(page, "overview")

        # open the failed job from the task page
        await page.click("tr[data-task='send_email'] a")
        await page.click("nav.tabs a:has-text('failed')")
        await page.wait_for_selector(f"tr[data-job='{failing.id}']")
        await shot(page, "task")
        await page.click(f"tr[data-job='{failing.id}'] a")
        await page.wait_for_selector("#job-error")
        assert "SMTP server refused broken@example.org" in (
            await page.text_content("#job-error") or ""
        )
        assert await page.text_content("#job-state") == "failed"
        await shot(page, "job-failed")

        # retry it and watch it complete, live
        healed.set()
        await page.click("button[data-action='retry']")
        await page.wait_for_function(
            "() => document.getElementById('job-state')?.textContent === 'completed'"
        )
        assert '"sent": "broken@example.org"' in (await page.text_content("#job-result") or "")
        await shot(page, "job-retried")

        # the other pages, keyboard navigation and the DAG
        await page.keyboard.press("2")
        await page.wait_for_selector("tr[data-schedule='digest']")
        await shot(page, "schedules")
        await page.keyboard.press("3")
        # the workflow's link: the schedules table (links too) stays until this page is drawn
        await page.click(f"tbody tr a[href$='/workflows/{flow.id}']")
        await page.wait_for_selector(".dag .node.active")
        assert await page.locator(".dag .node").count() == 3
        await shot(page, "workflow")
        gate.set()
        await page.keyboard.press("4")
        await page.wait_for_selector("h1:has-text('Dead letters')")
        await shot(page, "dead-letters")
        await page.keyboard.press("5")
        await page.wait_for_selector("section[data-task='send_email']")
        await shot(page, "versions")
        await page.keyboard.press("1")
        await page.wait_for_selector("tr[data-task='render_pdf']")
        await page.click("#theme")  # auto -> light
        await page.click("#theme")  # light -> dark
        assert await page.get_attribute("html", "data-theme") == "dark"
        await shot(page, "overview-dark")
        await page.keyboard.press("/")
        await page.keyboard.type(failing.id)
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#job-id")
        assert await page.text_content("#job-id") == failing.id
        await flow.wait_for(60)


async def test_log_in_out_and_a_csrf_less_post_is_refused(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    app = taskora.App(redis_url, prefix=prefix)
    password = "correct horse battery"
    async with board_server(app, auth=password) as (url, _), browser(tmp_path) as page:
        await page.goto(url + "/dlq")
        assert "/board/login?next=/board/dlq" in page.url
        await page.fill("input[name=username]", "ops")
        await page.fill("input[name=password]", "wrong password")
        await page.click("button[type=submit]")
        await page.wait_for_selector(".login-error")
        await shot(page, "login")
        await page.fill("input[name=username]", "ops")
        await page.fill("input[name=password]", password)
        await page.click("button[type=submit]")
        await page.wait_for_selector("h1:has-text('Dead letters')")
        assert page.url.endswith("/board/dlq")
        assert await page.text_content("#user") == "ops"

        statuses = await page.evaluate(
            """async (base) => {
                const post = (headers) => fetch(base + "/api/dlq/retry-all",
                    {method: "POST", credentials: "same-origin", headers}).then(r => r.status);
                const config = await (await fetch(base + "/api/config")).json();
                return [await post({}), await post({"X-CSRF-Token": "forged"}),
                        await post({"X-CSRF-Token": config.csrf})];
            }""",
            url,
        )
        assert statuses == [403, 403, 200]

        await page.click("#logout")
        await page.wait_for_selector("input[name=password]")
        status = await page.evaluate(
            "(base) => fetch(base + '/api/overview').then(r => r.status)", url
        )
        assert status == 401
    await app.close()


async def test_a_page_left_before_its_data_came_does_not_draw_over_the_next(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    """Schedules (its read held back), then at once Versions: the late schedules reply must
    neither replace the versions page nor take over its live updates."""
    app = taskora.App(redis_url, prefix=prefix)

    @app.task()
    async def tick(n: int) -> int:
        return n

    app.schedule("minutely", task=tick, every="1m", data=1)
    async with app, board_server(app) as (url, _), browser(tmp_path) as page:
        await page.goto(url + "/")
        await page.wait_for_selector("tr[data-task='tick']")
        held: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def hold(route: Any) -> None:
            held.set_result(route)

        await page.route("**/api/schedules", hold)
        # clicks, not keys: this test is about the race, the keys are the other test's
        await page.click("#nav a[data-key='2']")
        route = await asyncio.wait_for(held, 60)  # the schedules page waits for its read
        await page.click("#nav a[data-key='5']")
        await page.wait_for_selector("section[data-task='tick']")  # the versions page
        async with page.expect_request_finished(lambda r: r.url.endswith("/api/schedules")):
            await route.continue_()
        # the reply is in; let the page's scripts run what it started (two event-loop turns)
        await page.evaluate("() => new Promise((r) => setTimeout(() => setTimeout(r, 50), 0))")
        assert await page.locator("tr[data-schedule='minutely']").count() == 0
        assert await page.text_content("main h1") == "Versions"
        assert await page.locator("section[data-task='tick']").count() == 1
