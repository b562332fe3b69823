"""The operator's commands of the `taskora` CLI: inspect, jobs, job, retry, cancel,
dead-letters, purge (docs/design.md#inspector).

They need no app module: an App made from ``--url``/``--prefix`` (or ``TASKORA_URL``)
finds the task names in Redis (``Backend.task_names``); ``--app module:app`` uses an app's
connection settings instead. Output is a table for people (rich when it is installed and
stdout is a terminal, plain aligned text otherwise, so `pip install taskora` alone has a
working CLI and pipes get stable text) or, with ``--json``, one JSON document.
Exit status: 0 ok, 1 not found (or nothing to do it to), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from .app import App
from .durations import to_ms
from .errors import ConfigError
from .inspector import FINISHED, STATES, Inspector, JobInfo
from .workflow import cancel_job

__all__ = ["OPS_COMMANDS", "add_ops_commands", "run_ops"]

OK, NOT_FOUND, USAGE = 0, 1, 2
OPS_COMMANDS = ("inspect", "jobs", "job", "retry", "cancel", "dead-letters", "purge")


class UsageError(Exception):
    """A mistake on the command line: one line on stderr, exit status 2."""


def non_negative(text: str) -> int:
    """An argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def duration_ms(text: str) -> int:
    """An argparse type: seconds or a duration string, in milliseconds."""
    value: float | str = text
    try:
        value = float(text)  # plain seconds
    except ValueError:
        pass
    try:
        return to_ms(value, "duration")
    except ConfigError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 30, 30s, 500ms, 15m, 1h or 7d, got {text!r}"
        ) from None


def add_ops_commands(sub: Any) -> None:
    """Add the operator's subcommands to the `taskora` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None, help="backend URL (default: TASKORA_URL)")
    common.add_argument("--prefix", default=None, help="key prefix (default: none)")
    common.add_argument(
        "--app", default=None, metavar="module:app", help="take URL and prefix from an App"
    )
    common.add_argument("--json", action="store_true", help="print one JSON document")

    p = sub.add_parser(
        "inspect",
        parents=[common],
        help="tasks by state, throughput, oldest waiting job; worker processes alive",
    )
    p.add_argument("--task", default=None, help="only this task")

    p = sub.add_parser("jobs", parents=[common], help="list a task's jobs in one state")
    p.add_argument("task")
    p.add_argument("--state", default="waiting", choices=STATES)
    p.add_argument("--limit", type=non_negative, default=20)
    p.add_argument("--offset", type=non_negative, default=0)

    p = sub.add_parser("job", parents=[common], help="everything about one job")
    p.add_argument("id")
    p.add_argument("--task", default=None, help="look only in this task")

    p = sub.add_parser("retry", parents=[common], help="put failed jobs back to waiting")
    p.add_argument("id", nargs="?", default=None)
    p.add_argument("--all", action="store_true", help="every failed job (of --task)")
    p.add_argument("--task", default=None)

    p = sub.add_parser("cancel", parents=[common], help="cancel one job")
    p.add_argument("id")
    p.add_argument("--task", default=None)
    p.add_argument("--reason", default="cancelled from the command line")

    p = sub.add_parser("dead-letters", parents=[common], help="failed jobs, newest first")
    p.add_argument("--task", default=None)
    p.add_argument("--limit", type=non_negative, default=20)
    p.add_argument("--offset", type=non_negative, default=0)

    p = sub.add_parser("purge", parents=[common], help="delete old finished jobs")
    p.add_argument("task")
    p.add_argument("--state", required=True, choices=FINISHED)
    p.add_argument("--before", type=duration_ms, required=True, metavar="AGE", help="e.g. 1h, 7d")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def run_ops(args: argparse.Namespace, load_app: Callable[[str], App]) -> int:
    """Run one operator command; returns the exit status."""
    try:
        app = _app(args, load_app)
    except (UsageError, ConfigError) as exc:
        return _fail(str(exc), USAGE)
    command = _COMMANDS[args.command]
    try:
        return asyncio.run(_with_app(app, lambda: command(app, args)))
    except UsageError as exc:
        return _fail(str(exc), USAGE)
    except ValueError as exc:
        return _fail(str(exc), USAGE)


async def _with_app(app: App, body: Callable[[], Awaitable[int]]) -> int:
    try:
        return await body()
    finally:
        await app.close()


def _app(args: argparse.Namespace, load_app: Callable[[str], App]) -> App:
    if args.app is not None:
        app = load_app(args.app)
        app._retarget(args.url, args.prefix)
        return app
    url = args.url or os.environ.get("TASKORA_URL")
    if not url:
        raise UsageError("no backend: give --url redis://... or set TASKORA_URL")
    return App(url, prefix=args.prefix)


def _fail(message: str, status: int) -> int:
    print(f"taskora: error: {message}", file=sys.stderr)
    return status


# -- output -------------------------------------------------------------------------------
def _emit_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, default=str, ensure_ascii=False))


def _table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    if sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            table = Table(title=title)
            for name in headers:
                table.add_column(name)
            for row in cells:
                table.add_row(*row)
            Console().print(table)
            return
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    print(title)
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."


def _job_rows(jobs: Sequence[JobInfo]) -> list[list[Any]]:
    return [
        [
            j.id,
            j.task,
            j.state.value if j.state else None,
            j.attempt,
            j.created_at,
            j.finished_at,
            j.error,
        ]
        for j in jobs
    ]


JOB_HEADERS = ("id", "task", "state", "attempt", "created", "finished", "error")


async def _known_task(insp: Inspector, task: str | None) -> None:
    if task is not None and task not in await insp.tasks():
        raise _NotFound(f"no task {task!r} in this backend")


class _NotFound(Exception):
    pass


# -- commands -----------------------------------------------------------------------------
async def _inspect(app: App, args: argparse.Namespace) -> int:
    insp = app.inspect()
    try:
        await _known_task(insp, args.task)
    except _NotFound as exc:
        return _fail(str(exc), NOT_FOUND)
    names = [args.task] if args.task else await insp.tasks()
    now = datetime.now(UTC)
    report = []
    for name in names:
        stats = await insp.stats(name)
        minutes = await insp.throughput(name, minutes=5)
        # the next jobs in claim order: for FIFO work the first is the oldest
        head = await insp.waiting(name, limit=50)
        oldest = min((j.created_at for j in head if j.created_at), default=None)
        report.append(
            {
                "task": name,
                **stats,
                "completed_per_min": sum(m["completed"] for m in minutes) / len(minutes),
                "failed_per_min": sum(m["failed"] for m in minutes) / len(minutes),
                "oldest_waiting_s": None
                if oldest is None
                else round((now - oldest).total_seconds(), 3),
            }
        )
    workers = [w for w in await insp.workers() if args.task is None or args.task in w.tasks]
    if args.json:
        _emit_json({"tasks": report, "workers": [w.to_json() for w in workers]})
        return OK
    rows = [
        [
            r["task"],
            *(r[s] for s in STATES),
            f"{r['completed_per_min']:.1f}",
            f"{r['failed_per_min']:.1f}",
            "-" if r["oldest_waiting_s"] is None else _secs(r["oldest_waiting_s"]),
        ]
        for r in report
    ]
    headers = ["task", *STATES, "done/min", "failed/min", "oldest waiting"]
    _table("taskora: tasks (per minute: average of the last 5 minutes)", headers, rows)
    if not report:
        print("(no tasks found)")
    print()
    _table(
        f"taskora: {len(workers)} worker process(es) alive",
        ["host", "pid", "tasks (concurrency)", "running (last beat)", "started", "last seen"],
        [
            [
                w.host,
                w.pid,
                ", ".join(f"{name} x{n}" for name, n in w.tasks.items()),
                f"{w.active}/{w.concurrency}",
                w.started_at,
                w.last_seen,
            ]
            for w in workers
        ],
    )
    return OK


def _secs(seconds: float) -> str:
    s = int(seconds)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


async def _jobs(app: App, args: argparse.Namespace) -> int:
    insp = app.inspect()
    try:
        await _known_task(insp, args.task)
    except _NotFound as exc:
        return _fail(str(exc), NOT_FOUND)
    jobs = await insp.list(args.state, args.task, args.limit, args.offset)
    if args.json:
        _emit_json({"task": args.task, "state": args.state, "jobs": [j.to_json() for j in jobs]})
    else:
        _table(f"{args.task}: {args.state} jobs", JOB_HEADERS, _job_rows(jobs))
    return OK


async def _job(app: App, args: argparse.Namespace) -> int:
    insp = app.inspect()
    job = await insp.find(args.task, args.id) if args.task else await insp.find(args.id)
    if job is None:
        return _fail(f"no job {args.id!r}", NOT_FOUND)
    if args.json:
        _emit_json(job.to_json())
        return OK
    doc = job.to_json()
    for name in (
        "id",
        "task",
        "state",
        "attempt",
        "version",
        "created_at",
        "started_at",
        "finished_at",
        "error",
        "progress",
        "data",
        "result",
    ):
        print(
            f"{name + ':':<12} "
            + (json.dumps(doc[name]) if name in ("data", "result") else _cell(doc[name]))
        )
    print("timeline:")
    for state, at in job.timeline:
        print(f"  {_cell(at)}.{at.microsecond // 1000:03d}  {state}")
    print(f"logs ({len(job.logs)}):")
    for line in job.logs:
        print(f"  {json.dumps(line) if not isinstance(line, str) else line}")
    return OK


async def _retry(app: App, args: argparse.Namespace) -> int:
    if args.all == (args.id is not None):
        raise UsageError("retry takes a job id, or --all (with --task to limit it)")
    dead = app.dead_letters
    try:
        if args.all:
            count = await dead.retry_all(args.task)
            if args.json:
                _emit_json({"retried": count})
            else:
                print(f"retried {count} failed job(s)")
            return OK
        ok = await dead.retry(args.id, args.task)
    except ConfigError as exc:  # an unknown --task
        return _fail(str(exc), NOT_FOUND)
    if args.json:
        _emit_json({"id": args.id, "retried": ok})
    if not ok:
        return _fail(f"no failed job {args.id!r}", NOT_FOUND)
    if not args.json:
        print(f"retried {args.id}")
    return OK


async def _cancel(app: App, args: argparse.Namespace) -> int:
    insp = app.inspect()
    job = await insp.find(args.task, args.id) if args.task else await insp.find(args.id)
    if job is None:
        if args.json:
            _emit_json({"id": args.id, "outcome": "not_found"})
        return _fail(f"no job {args.id!r}", NOT_FOUND)
    outcome = await cancel_job(app, job.task, job.id, args.reason)
    if args.json:
        _emit_json({"id": job.id, "task": job.task, "outcome": outcome})
    if outcome == "not_cancellable":
        state = job.state.value if job.state else "unknown"
        return _fail(f"job {args.id!r} cannot be cancelled (it is {state})", NOT_FOUND)
    if not args.json:
        said = "cancelled" if outcome == "cancelled" else "cancel requested (it is running)"
        print(f"{job.id}: {said}")
    return OK


async def _dead_letters(app: App, args: argparse.Namespace) -> int:
    insp = app.inspect()
    try:
        await _known_task(insp, args.task)
    except _NotFound as exc:
        return _fail(str(exc), NOT_FOUND)
    jobs = await insp.failed(args.task, args.limit, args.offset)
    total = (await insp.stats(args.task))["failed"]
    if args.json:
        _emit_json({"total": total, "jobs": [j.to_json() for j in jobs]})
    else:
        _table(f"dead letters: {total} failed job(s)", JOB_HEADERS, _job_rows(jobs))
    return OK


async def _purge(app: App, args: argparse.Namespace) -> int:
    insp = app.inspect()
    try:
        await _known_task(insp, args.task)
    except _NotFound as exc:
        return _fail(str(exc), NOT_FOUND)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("purge needs --yes when stdin is not a terminal")
        prompt = (
            f"Delete {args.task}'s {args.state} jobs that ended over "
            f"{_secs(args.before / 1000)} ago? [y/N] "
        )
        if input(prompt).strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return OK
    removed = await insp.purge(args.task, args.state, args.before)
    if args.json:
        _emit_json({"task": args.task, "state": args.state, "deleted": removed})
    else:
        print(f"deleted {removed} {args.state} job(s) of {args.task}")
    return OK


_COMMANDS: dict[str, Callable[[App, argparse.Namespace], Awaitable[int]]] = {
    "inspect": _inspect,
    "jobs": _jobs,
    "job": _job,
    "retry": _retry,
    "cancel": _cancel,
    "dead-letters": _dead_letters,
    "purge": _purge,
}
