"""`taskora demo`: a few hundred jobs through real workers, with a live display.

Runs on the embedded default backend (in-memory, nothing to install) or on Redis when
``TASKORA_URL`` is set; on Redis it uses a fresh key prefix (``demo-<hex>``) and deletes its
keys afterwards. Producer, workers and display share one process and one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .app import App
from .context import Context
from .errors import ConfigError, JobCancelledError, JobExpiredError, JobFailedError, TaskoraError
from .handle import ResultHandle
from .types import Retry

try:  # the demo's display is an extra: the library itself never needs rich
    from rich.console import Console, Group, RenderableType
    from rich.live import Live
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text
except ModuleNotFoundError:  # pragma: no cover - depends on what is installed
    raise ConfigError("the demo needs rich: pip install 'taskora[demo]'") from None


__all__ = ["run_demo"]

TASKS = ("resize-image", "send-email", "generate-report")
STATE_COLUMNS = ("waiting", "delayed", "active", "completed", "failed", "cancelled")
CANCEL_REASON = "User requested cancellation"
WAVES = 6  # jobs arrive in waves, so the queues visibly fill and drain
WAVE_GAP = 1.2  # seconds between waves
RESULT_DEADLINE = 180.0  # seconds; the demo reports and exits 1 rather than hang


class SmtpHiccup(ConnectionError):
    """A transient failure: retried."""


class Bounce(ValueError):
    """A permanent failure: never retried."""


@dataclass
class JobView:
    """What the display knows about one job (the handlers run in this process)."""

    task: str
    label: str
    state: str = "waiting"
    progress: float = 0.0
    attempt: int = 0
    updated: float = field(default_factory=time.monotonic)


class Board:
    """Recent job activity, written by the handlers and the result waiters."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobView] = {}

    def add(self, job_id: str, task: str, label: str) -> None:
        self.jobs[job_id] = JobView(task, label)

    def update(self, job_id: str, **changes: Any) -> None:
        view = self.jobs.get(job_id)
        if view is None:
            return
        for name, value in changes.items():
            setattr(view, name, value)
        view.updated = time.monotonic()

    def recent(self, limit: int) -> list[tuple[str, JobView]]:
        """Active jobs first, then the most recently finished ones."""
        touched = sorted(
            ((job_id, v) for job_id, v in self.jobs.items() if v.attempt > 0),
            key=lambda item: item[1].updated,
            reverse=True,
        )
        running = [item for item in touched if item[1].state in ("active", "retrying")]
        ended = [item for item in touched if item[1].state not in ("active", "retrying")]
        n_running = min(len(running), max(limit - 3, limit - len(ended)))
        return running[:n_running] + ended[: limit - n_running]

    def retried(self, task: str) -> int:
        return sum(1 for v in self.jobs.values() if v.task == task and v.attempt > 1)


@dataclass
class Planned:
    task: str
    label: str
    data: dict[str, Any]
    options: dict[str, Any]


def build_app(board: Board, prefix: str | None) -> App:
    app = App(prefix=prefix)

    async def step(ctx: Context, done: int, total: int, seconds: float) -> None:
        await asyncio.sleep(seconds)
        percent = round(100 * done / total)
        board.update(ctx.id, progress=percent)
        await ctx.progress(percent)

    @app.task("resize-image", concurrency=8)
    async def resize_image(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        board.update(ctx.id, state="active", attempt=ctx.attempt, progress=0)
        for n in range(1, 6):
            await step(ctx, n, 5, data["ms"] / 5000)
        return {"image": data["image"], "width": data["width"]}

    @app.task(
        "send-email",
        concurrency=6,
        retry=Retry(attempts=3, backoff="fixed", delay="400ms", jitter=False, no_retry_on=[Bounce]),
    )
    async def send_email(data: dict[str, Any], ctx: Context) -> dict[str, str]:
        board.update(ctx.id, state="active", attempt=ctx.attempt, progress=0)
        await step(ctx, 1, 2, data["ms"] / 2000)
        if data["to"].endswith(".invalid"):
            board.update(ctx.id, state="failed")
            raise Bounce(f"mailbox {data['to']} does not exist")
        if data.get("flaky") and ctx.attempt == 1:
            board.update(ctx.id, state="retrying")
            ctx.log.warn("SMTP connection reset, will retry", to=data["to"])
            raise SmtpHiccup("SMTP connection reset by peer")
        await step(ctx, 2, 2, data["ms"] / 2000)
        return {"message_id": f"<{ctx.id[:8]}@taskora.demo>"}

    @app.task("generate-report", concurrency=4)
    async def generate_report(data: dict[str, Any], ctx: Context) -> dict[str, Any]:
        board.update(ctx.id, state="active", attempt=ctx.attempt, progress=0)
        pages = data["pages"]
        try:
            for n in range(1, pages + 1):
                await step(ctx, n, pages, data["ms_per_page"] / 1000)
        except asyncio.CancelledError:
            board.update(ctx.id, state="cancelled")
            raise
        return {"report": data["report"], "pages": pages}

    return app


def plan(jobs: int, rng: random.Random) -> list[Planned]:
    """The jobs to dispatch, in order: a mix of tasks, priorities and delays."""
    planned: list[Planned] = []
    emails = 0
    for i in range(jobs):
        options: dict[str, Any] = {}
        if rng.random() < 0.15:
            options["delay"] = round(rng.uniform(0.5, 3.0), 1)
        kind = rng.random()
        if kind < 0.4:
            width = rng.choice((320, 640, 1280, 1920))
            data: dict[str, Any] = {
                "image": f"photo-{i:04d}.jpg",
                "width": width,
                "ms": rng.randint(200, 500),
            }
            planned.append(Planned("resize-image", f"photo-{i:04d}.jpg @{width}", data, options))
        elif kind < 0.8:
            emails += 1
            to = f"user{i}@example.com"
            data = {"to": to, "ms": rng.randint(80, 260), "flaky": emails % 15 == 1}
            planned.append(Planned("send-email", to, data, options))
        else:
            urgent = rng.random() < 0.25
            if urgent:
                options["priority"] = 10
            pages = rng.randint(3, 8)
            name = f"report-{i:04d}" + (" (urgent)" if urgent else "")
            data = {"report": name, "pages": pages, "ms_per_page": rng.randint(90, 170)}
            planned.append(Planned("generate-report", name, data, options))
    # One email that bounces (fails for good), so the closing table has a failure to show.
    planned.insert(
        len(planned) // 2,
        Planned(
            "send-email", "nobody@bounce.invalid", {"to": "nobody@bounce.invalid", "ms": 50}, {}
        ),
    )
    return planned


async def outcome(handle: ResultHandle[Any], board: Board) -> str:
    try:
        await handle.result
        state = "completed"
    except JobFailedError:
        state = "failed"
    except JobCancelledError:
        state = "cancelled"
    except JobExpiredError:
        state = "expired"
    except TaskoraError:
        state = "lost"
    board.update(handle.id, state=state, **({"progress": 100} if state == "completed" else {}))
    return state


class Demo:
    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.url = os.environ.get("TASKORA_URL") or None
        self.prefix = f"demo-{uuid.uuid4().hex[:8]}" if self.url else None
        self.board = Board()
        self.app = build_app(self.board, self.prefix)
        self.handles: list[ResultHandle[Any]] = []
        self.waiters: list[asyncio.Task[str]] = []
        self.victim: ResultHandle[Any] | None = None
        self.started = time.monotonic()
        self.finished: float | None = None
        self.counts: dict[str, dict[str, int]] = {name: {} for name in TASKS}

    @property
    def where(self) -> str:
        if not self.url:
            return "in-memory backend"
        parts = urlsplit(self.url)
        if parts.password:
            netloc = f"{parts.username or ''}:***@{parts.hostname}"
            if parts.port:
                netloc += f":{parts.port}"
            parts = parts._replace(netloc=netloc)
        return f"{urlunsplit(parts)} (prefix {self.prefix})"

    def dispatch(self, item: Planned) -> ResultHandle[Any]:
        handle = self.app.tasks[item.task].dispatch(item.data, **item.options)
        self.board.add(handle.id, item.task, item.label)
        self.handles.append(handle)
        self.waiters.append(asyncio.create_task(outcome(handle, self.board)))
        return handle

    async def produce(self, planned: list[Planned]) -> None:
        # A long report that a user cancels while it runs: highest priority, so it starts first.
        archive = {"report": "annual-archive", "pages": 400, "ms_per_page": 100}
        self.victim = self.dispatch(
            Planned("generate-report", "annual-archive (cancelled)", archive, {"priority": 100})
        )
        size = -(-len(planned) // WAVES)
        for wave in range(WAVES):
            for item in planned[wave * size : (wave + 1) * size]:
                self.dispatch(item)
            if wave < WAVES - 1:
                await asyncio.sleep(WAVE_GAP)

    async def cancel_victim(self) -> None:
        deadline = time.monotonic() + 5
        while self.victim is None:
            await asyncio.sleep(0.05)
        view = self.board.jobs[self.victim.id]
        while view.progress < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.victim.cancel(reason=CANCEL_REASON)

    async def refresh_counts(self) -> None:
        for name in TASKS:
            self.counts[name] = await self.app.counts(name)

    async def run(self, live: Live | None) -> bool:
        planned = plan(max(self.jobs - 2, 1), random.Random(2024))
        async with self.app:
            self.started = time.monotonic()
            display = asyncio.create_task(self.display(live))
            canceller = asyncio.create_task(self.cancel_victim())
            try:
                await self.produce(planned)
                everything = asyncio.gather(*self.waiters, canceller)
                try:
                    states = await asyncio.wait_for(everything, RESULT_DEADLINE)
                except TimeoutError:
                    ok = False
                else:
                    ok = "lost" not in states
            finally:
                for helper in (display, canceller):
                    helper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await helper
            self.finished = time.monotonic()
            await self.refresh_counts()
        return ok

    async def display(self, live: Live | None) -> None:
        """Refresh the live view a few times per second from the backend's counts."""
        if live is None:
            return
        while True:
            await self.refresh_counts()
            live.update(self.render_live())
            await asyncio.sleep(0.25)

    # -- rendering ----------------------------------------------------------------------
    def counts_table(self) -> Table:
        table = Table(title="jobs per task and state", title_justify="left", expand=False)
        table.add_column("task", no_wrap=True, style="bold")
        for column in STATE_COLUMNS:
            table.add_column(column, justify="right")
        for name in TASKS:
            counts = self.counts.get(name, {})
            table.add_row(name, *(str(counts.get(column, 0)) for column in STATE_COLUMNS))
        return table

    def recent_table(self) -> Table:
        table = Table(title="recent jobs", title_justify="left", expand=False)
        for column in ("job", "task", "what", "try", "state"):
            table.add_column(column, no_wrap=True)
        table.add_column("progress", no_wrap=True, width=24)
        styles = {
            "completed": "green",
            "failed": "red",
            "cancelled": "yellow",
            "retrying": "magenta",
        }
        for job_id, view in self.board.recent(8):
            bar = Table.grid(padding=(0, 1))
            bar.add_row(
                ProgressBar(total=100, completed=view.progress, width=18),
                f"{view.progress:3.0f}%",
            )
            table.add_row(
                job_id[:8],
                view.task,
                view.label,
                str(view.attempt),
                Text(view.state, style=styles.get(view.state, "cyan")),
                bar if view.state != "failed" else Text("-"),
            )
        return table

    def render_live(self) -> RenderableType:
        done = sum(1 for w in self.waiters if w.done())
        elapsed = time.monotonic() - self.started
        header = Text.assemble(
            ("taskora demo", "bold cyan"),
            f"  {self.where}\n",
            f"{done}/{len(self.handles)} jobs finished  ",
            f"elapsed {elapsed:4.1f} s",
        )
        return Group(header, self.counts_table(), self.recent_table())

    def summary(self, ok: bool) -> RenderableType:
        wall = (self.finished or time.monotonic()) - self.started
        table = Table(title="taskora demo: final states", title_justify="left")
        table.add_column("task", no_wrap=True, style="bold")
        for column in ("jobs", "completed", "failed", "cancelled", "retried", "jobs/s"):
            table.add_column(column, justify="right")
        totals = [0, 0, 0, 0, 0]
        for name in TASKS:
            counts = self.counts.get(name, {})
            jobs = sum(1 for v in self.board.jobs.values() if v.task == name)
            row = [
                jobs,
                counts.get("completed", 0),
                counts.get("failed", 0),
                counts.get("cancelled", 0),
                self.board.retried(name),
            ]
            totals = [a + b for a, b in zip(totals, row, strict=True)]
            table.add_row(name, *map(str, row), f"{row[1] / wall:.1f}")
        table.add_section()
        table.add_row("all", *map(str, totals), f"{totals[1] / wall:.1f}", style="bold")
        lines = [
            f"{totals[0]} jobs in {wall:.1f} s wall time: {totals[1] / wall:.1f} completed jobs/s",
            f"backend: {self.where}",
            "retried: failed once (SMTP reset), then succeeded on a later attempt",
            "failed: nobody@bounce.invalid (a bounce is never retried)",
            f"cancelled: annual-archive while running ({CANCEL_REASON!r})",
        ]
        if not self.url:
            lines.append("tip: TASKORA_URL=redis://localhost:6379 taskora demo runs it on Redis")
        if not ok:
            lines.append("[bold red]some jobs did not finish before the deadline[/]")
        return Group(table, *lines)


async def _main(jobs: int, console: Console) -> bool:
    demo = Demo(jobs)
    try:
        if console.is_terminal:
            with Live(console=console, refresh_per_second=8, transient=True) as live:
                ok = await demo.run(live)
        else:
            console.print(f"taskora demo: {max(jobs, 3)} jobs, {demo.where}")
            ok = await demo.run(None)
    finally:
        await _cleanup(demo)
    console.print(demo.summary(ok))
    return ok


async def _cleanup(demo: Demo) -> None:
    """Delete the demo's keys from Redis (a fresh prefix: nothing else lives there)."""
    if not demo.url or not demo.prefix or not demo.url.startswith(("redis", "unix")):
        return
    from .backends.redis.admin import delete_prefix

    with contextlib.suppress(Exception):
        await delete_prefix(demo.url, demo.prefix)


def run_demo(jobs: int = 300, console: Console | None = None) -> int:
    """Run the demo; return the process exit status (0 when every job ended as expected)."""
    console = console or Console()
    try:
        ok = asyncio.run(_main(jobs, console))
    except TaskoraError as exc:
        console.print(f"[bold red]taskora demo failed:[/] {exc}")
        return 1
    return 0 if ok else 1
