"""The board's JSON API (``<base>/api/...``): thin over ``app.inspect()``, ``app.dead_letters``
and ``app.schedules``. Every value that came from a job, a schedule or a workflow passes
the redactor before it leaves (decision 12)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from .._version import __version__
from ..errors import ConfigError, TaskoraError
from ..inspector import FINISHED, STATES, WORKFLOW_STATES, JobInfo, WorkerInfo, WorkflowInfo
from ..workflow import parse_step

if TYPE_CHECKING:
    from ..app import App
    from .redact import Redactor

__all__ = ["API", "BadRequest", "NotFound", "json_response", "worker_doc"]

MAX_LIMIT = 200
DLQ_SCAN = 1000  # failed jobs read per task to group the dead letters by error
PREVIEW = 200


class BadRequest(Exception):
    """A bad parameter: 400 with the message."""


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(doc, default=_default, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status, headers=headers, media_type="application/json")


def _int_param(request: Request, name: str, default: int, top: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if value < 0 or (top is not None and value > top):
        raise BadRequest(f"{name} must be between 0 and {top}, got {value}")
    return value


def _ms(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1000)


def worker_doc(worker: WorkerInfo) -> dict[str, Any]:
    """A live worker process as the overview and the stats frames show it (no user data:
    host and pid, behind the board's guard as every route)."""
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "tasks": worker.tasks,
        "concurrency": worker.concurrency,
        "active": worker.active,
        "version": worker.version,
        "started": _ms(worker.started_at),
        "last_seen": _ms(worker.last_seen),
    }


class API:
    """The endpoints; ``server.py`` guards them (auth, CSRF, read-only) and routes to them."""

    def __init__(self, app: App, redact: Redactor, title: str) -> None:
        self.app = app
        self.redact = redact
        self.title = title
        self.started = time.monotonic()

    # -- shaping --------------------------------------------------------------------------
    def text(self, value: str | None, limit: int | None = None) -> str | None:
        if value is None:
            return None
        out = self.redact.text(value)
        return out if limit is None or len(out) <= limit else out[: limit - 1] + "…"

    def preview(self, value: Any) -> str:
        text = json.dumps(self.redact(value), default=_default, ensure_ascii=False)
        return text if len(text) <= PREVIEW else text[: PREVIEW - 1] + "…"

    def job_row(self, job: JobInfo) -> dict[str, Any]:
        first = (job.error or "").strip().splitlines()
        return {
            "id": job.id,
            "task": job.task,
            "state": None if job.state is None else job.state.value,
            "attempt": job.attempt,
            "created": _ms(job.created_at),
            "started": _ms(job.started_at),
            "finished": _ms(job.finished_at),
            "error": self.text(first[-1] if first else None, 300),
            "data": self.preview(job.data),
        }

    def job_detail(self, job: JobInfo) -> dict[str, Any]:
        doc = job.to_json()
        for key in ("data", "result", "progress", "logs"):
            doc[key] = self.redact(doc[key])
        doc["error"] = self.text(job.error)
        doc["timeline"] = [[state, _ms(at)] for state, at in job.timeline]
        for key in ("created_at", "started_at", "finished_at"):
            doc[key] = _ms(getattr(job, key))
        step = parse_step(job.id)
        doc["workflow"] = None if step is None else {"id": step[0], "step": step[1]}
        task = self.app.tasks.get(job.task)
        retry = task.options.retry if task is not None else None
        doc["max_attempts"] = None if task is None else (retry.attempts if retry else 1)
        return doc

    def workflow_doc(self, wf: WorkflowInfo, steps: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": wf.id,
            "name": wf.name,
            "state": wf.state,
            "error": self.text(wf.error),
            "created": _ms(wf.created_at),
            "finished": _ms(wf.finished_at),
            "steps_total": len(wf.steps),
            "steps_done": sum(s.state == "completed" for s in wf.steps),
            "tasks": sorted({s.task for s in wf.steps}),
        }
        if steps:
            doc["result"] = self.redact(wf.result)
            doc["steps"] = [
                {
                    "index": s.index,
                    "task": s.task,
                    "job_id": s.job_id,
                    "deps": s.deps,
                    "state": s.state,
                    "data": self.redact(s.data),
                    "result": self.redact(s.result),
                    "error": self.text(s.error),
                }
                for s in wf.steps
            ]
        return doc

    def task_config(self, name: str) -> dict[str, Any] | None:
        task = self.app.tasks.get(name)
        if task is None:
            return None
        options = task.options
        retry = options.retry
        return {
            "has_handler": task.handler is not None,
            "concurrency": options.concurrency,
            "timeout_ms": options.timeout_ms,
            "retry": None
            if retry is None
            else {"attempts": retry.attempts, "backoff": str(getattr(retry, "backoff", ""))},
            "version": task.versioning.version,
            "since": task.versioning.since,
        }

    # -- reads ----------------------------------------------------------------------------
    async def config(self, request: Request) -> Response:
        board = request.scope["taskora.board"]
        session = request.scope.get("taskora.session")
        return json_response(
            {
                "title": self.title,
                "version": __version__,
                "read_only": board.read_only,
                "auth": board.auth is not None,
                "user": None if session is None else session.user,
                "csrf": request.scope["taskora.csrf"],
                "refresh_ms": int(board.refresh_s * 1000),
                "states": list(STATES),
                "finished": list(FINISHED),
            }
        )

    async def overview(self, request: Request) -> Response:
        insp = self.app.inspect()
        names = await insp.tasks()
        counts, hour, day, server, workers = await asyncio.gather(
            asyncio.gather(*(insp.stats(n) for n in names)),
            insp.throughput(None, 60),
            insp.throughput(None, 1440),
            insp.server(),
            insp.workers(),
        )
        totals = dict.fromkeys(STATES, 0)
        for row in counts:
            for state in STATES:
                totals[state] += row[state]
        hours: dict[int, list[int]] = {}
        for minute in day:
            at = _ms(minute["minute"]) or 0
            bucket = hours.setdefault(at // 3_600_000 * 3_600_000, [0, 0])
            bucket[0] += minute["completed"]
            bucket[1] += minute["failed"]
        return json_response(
            {
                "tasks": [
                    {"name": n, "counts": c, "config": self.task_config(n)}
                    for n, c in zip(names, counts, strict=True)
                ],
                "totals": totals,
                "throughput": {
                    "hour": [
                        {"t": _ms(m["minute"]), "completed": m["completed"], "failed": m["failed"]}
                        for m in hour
                    ],
                    "day": [
                        {"t": t, "completed": c, "failed": f} for t, (c, f) in sorted(hours.items())
                    ],
                },
                "server": self.redact(server),
                "workers": [worker_doc(w) for w in workers],
                "board": {"uptime_s": int(time.monotonic() - self.started)},
            }
        )

    async def workers(self, request: Request) -> Response:
        found = await self.app.inspect().workers()
        return json_response({"workers": [worker_doc(w) for w in found]})

    async def tasks(self, request: Request) -> Response:
        insp = self.app.inspect()
        names = await insp.tasks()
        counts = await asyncio.gather(*(insp.stats(n) for n in names))
        return json_response(
            {"tasks": [{"name": n, "counts": c} for n, c in zip(names, counts, strict=True)]}
        )

    async def throughput(self, request: Request) -> Response:
        minutes = _int_param(request, "minutes", 60, 1440) or 1
        task = request.query_params.get("task") or None
        rows = await self.app.inspect().throughput(task, minutes)
        return json_response(
            {
                "minutes": [
                    {"t": _ms(m["minute"]), "completed": m["completed"], "failed": m["failed"]}
                    for m in rows
                ]
            }
        )

    async def task_jobs(self, request: Request) -> Response:
        task = request.path_params["task"]
        state = request.query_params.get("state", "waiting")
        if state == "retrying":
            state = "delayed"  # the reference's tab: retrying jobs wait in the delayed set
        if state not in STATES:
            raise BadRequest(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
        limit = _int_param(request, "limit", 20, MAX_LIMIT)
        offset = _int_param(request, "offset", 0)
        insp = self.app.inspect()
        jobs, counts = await asyncio.gather(insp.list(state, task, limit, offset), insp.stats(task))
        return json_response(
            {
                "task": task,
                "state": state,
                "total": counts[state],
                "counts": counts,
                "limit": limit,
                "offset": offset,
                "jobs": [self.job_row(j) for j in jobs],
                "config": self.task_config(task),
            }
        )

    async def job(self, request: Request) -> Response:
        job = await self.app.inspect().find(request.path_params["id"])
        if job is None:
            return json_response({"error": "job not found"}, 404)
        return json_response(self.job_detail(job))

    async def schedules(self, request: Request) -> Response:
        rows = await self.app.schedules.list()
        return json_response(
            {
                "schedules": [
                    {
                        "name": s.name,
                        "task": s.task,
                        "every_s": None if s.every is None else s.every.total_seconds(),
                        "cron": s.cron,
                        "timezone": s.timezone,
                        "next_run": _ms(s.next_run),
                        "last_run": _ms(s.last_run),
                        "last_job_id": s.last_job_id,
                        "paused": s.paused,
                        "data": self.redact(s.data),
                        "on_missed": s.on_missed,
                        "overlap": s.overlap,
                    }
                    for s in rows
                ]
            }
        )

    async def workflows(self, request: Request) -> Response:
        state = request.query_params.get("state") or None
        if state is not None and state not in WORKFLOW_STATES:
            raise BadRequest(
                f"unknown workflow state {state!r}; expected one of {', '.join(WORKFLOW_STATES)}"
            )
        limit = _int_param(request, "limit", 20, MAX_LIMIT)
        offset = _int_param(request, "offset", 0)
        found = await self.app.inspect().workflows(state, limit, offset)
        return json_response(
            {
                "state": state,
                "limit": limit,
                "offset": offset,
                "workflows": [self.workflow_doc(w, steps=False) for w in found],
            }
        )

    async def workflow(self, request: Request) -> Response:
        wf = await self.app.inspect().workflow(request.path_params["id"])
        if wf is None:
            return json_response({"error": "workflow not found"}, 404)
        return json_response(self.workflow_doc(wf, steps=True))

    async def dlq(self, request: Request) -> Response:
        """Failed jobs grouped by their error's last line (up to ``DLQ_SCAN`` newest per
        task), and one page of them."""
        task = request.query_params.get("task") or None
        limit = _int_param(request, "limit", 20, MAX_LIMIT)
        offset = _int_param(request, "offset", 0)
        insp = self.app.inspect()
        if task is not None and task not in await insp.tasks():
            return json_response({"error": f"no task {task!r}"}, 404)
        scan, page, stats = await asyncio.gather(
            insp.failed(task, DLQ_SCAN, 0), insp.failed(task, limit, offset), insp.stats(task)
        )
        groups: Counter[str] = Counter()
        tasks: dict[str, set[str]] = {}
        sample: dict[str, str] = {}
        latest: dict[str, int] = {}
        for job in scan:
            lines = (job.error or "").strip().splitlines()
            message = _shape(self.text(lines[-1] if lines else "(no error message)", 300) or "")
            groups[message] += 1
            tasks.setdefault(message, set()).add(job.task)
            sample.setdefault(message, job.id)
            latest[message] = max(latest.get(message, 0), _ms(job.finished_at) or 0)
        return json_response(
            {
                "task": task,
                "total": stats["failed"],
                "scanned": len(scan),
                "groups": [
                    {
                        "error": message,
                        "count": count,
                        "tasks": sorted(tasks[message]),
                        "sample": sample[message],
                        "latest": latest[message] or None,
                    }
                    for message, count in groups.most_common()
                ],
                "limit": limit,
                "offset": offset,
                "jobs": [self.job_row(j) for j in page],
            }
        )

    async def versions(self, request: Request) -> Response:
        insp = self.app.inspect()
        names = await insp.tasks()
        found = await asyncio.gather(*(insp.migrations(n) for n in names))
        return json_response({"tasks": [self._migration(m) for m in found]})

    async def task_migrations(self, request: Request) -> Response:
        found = await self.app.inspect().migrations(request.path_params["task"])
        return json_response(self._migration(found))

    @staticmethod
    def _migration(m: Any) -> dict[str, Any]:
        return {
            "task": m.task,
            "version": m.version,
            "since": m.since,
            "migrations": m.migrations,
            "by_version": {str(v): n for v, n in m.by_version.items()},
            "oldest": m.oldest,
            "max_since": m.max_since,
            "can_raise_since": None
            if m.version is None or m.since is None
            else m.can_raise_since(m.since + 1) and m.since < m.version,
        }

    # -- actions --------------------------------------------------------------------------
    async def job_retry(self, request: Request) -> Response:
        job_id = request.path_params["id"]
        if not await self.app.dead_letters.retry(job_id):
            return json_response({"error": "no failed job with that id"}, 404)
        return json_response({"id": job_id, "retried": True})

    async def job_cancel(self, request: Request) -> Response:
        body = await _body(request)
        reason = body.get("reason") if isinstance(body.get("reason"), str) else None
        job_id = request.path_params["id"]
        outcome = await self.app.inspect().cancel(
            job_id, reason=reason or "cancelled from the board"
        )
        if outcome is None:
            return json_response({"error": "job not found"}, 404)
        if outcome == "not_cancellable":
            return json_response({"error": "the job has finished", "outcome": outcome}, 409)
        return json_response({"id": job_id, "outcome": outcome})

    async def task_retry_all(self, request: Request) -> Response:
        count = await self._known(request, lambda t: self.app.dead_letters.retry_all(t))
        return json_response({"retried": count})

    async def task_purge(self, request: Request) -> Response:
        state = request.query_params.get("state", "completed")
        if state not in FINISHED:
            raise BadRequest(f"only finished jobs can be purged ({', '.join(FINISHED)})")
        older = _int_param(request, "older_than_ms", 0)
        insp = self.app.inspect()
        count = await self._known(request, lambda t: insp.purge(t, state, older))
        return json_response({"deleted": count, "state": state})

    async def _known(self, request: Request, act: Callable[[str], Awaitable[int]]) -> int:
        task = request.path_params["task"]
        if task not in await self.app.inspect().tasks():
            raise NotFound(f"no task {task!r}")
        return await act(task)

    async def dlq_retry(self, request: Request) -> Response:
        return await self.job_retry(request)

    async def dlq_retry_all(self, request: Request) -> Response:
        task = request.query_params.get("task") or None
        try:
            count = await self.app.dead_letters.retry_all(task)
        except ConfigError:
            return json_response({"error": f"no task {task!r}"}, 404)
        return json_response({"retried": count})

    async def schedule_action(self, request: Request) -> Response:
        name = request.path_params["name"]
        action = request.path_params["action"]
        schedules = self.app.schedules
        if await schedules.get(name) is None:
            return json_response({"error": "schedule not found"}, 404)
        if action == "pause":
            await schedules.pause(name)
        elif action == "resume":
            await schedules.resume(name)
        elif action == "trigger":
            try:
                handle = await schedules.trigger(name)
            except ConfigError as exc:  # the task is not registered in this process
                return json_response({"error": str(exc)}, 409)
            return json_response({"name": name, "job_id": await handle})
        else:
            return json_response({"error": f"unknown action {action!r}"}, 404)
        return json_response({"name": name, "done": action})

    async def schedule_remove(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not await self.app.schedules.remove(name):
            return json_response({"error": "schedule not found"}, 404)
        return json_response({"name": name, "removed": True})

    async def workflow_cancel(self, request: Request) -> Response:
        state = await self.app.inspect().cancel_workflow(
            request.path_params["id"], "cancelled from the board"
        )
        if state is None:
            return json_response({"error": "workflow not found"}, 404)
        return json_response({"id": request.path_params["id"], "state": state})


class NotFound(TaskoraError):
    """An unknown task or the like: 404 with the message."""


_VARYING = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"  # ids
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"  # e-mail addresses
    r"|\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{12,}\b"  # addresses, hashes
    r"|\d+(?:\.\d+)?"  # numbers
)


def _shape(message: str) -> str:
    """An error message with its varying parts (ids, numbers, addresses) replaced, so the
    same failure with different values groups together."""
    return _VARYING.sub("…", message)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        raise BadRequest("the body must be JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    return doc
