"""Looking at jobs from outside: the inspector (lists, counts, one job's story, throughput)
and the dead-letter queue (failed jobs). docs/design.md#inspector."""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import json
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .presence import WorkerInfo
from .runtime import Runtime
from .types import JobState
from .versions import Versioning
from .workflow import cancel_job, cancel_workflow, step_id

if TYPE_CHECKING:
    from .backends.base import WorkflowRecord

__all__ = [
    "DeadLetters",
    "Inspector",
    "JobInfo",
    "Migrations",
    "StepInfo",
    "WorkerInfo",
    "WorkflowInfo",
]

RETRY_BATCH = 500
_STATES = {state.value for state in JobState}
STATES = ("waiting", "active", "delayed", "completed", "failed", "expired", "cancelled")
FINISHED = ("completed", "failed", "expired", "cancelled")
# events that move a job from one state to another (the rest, e.g. progress, do not)
_TIMELINE_EVENTS = frozenset(
    {"waiting", "delayed", "promoted", "active", "retrying", "stalled", "debounced"} | set(FINISHED)
)


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job as stored. ``data``/``result`` are decoded JSON (None when absent or
    unreadable); times are aware UTC datetimes; ``timeline`` is ``(state, at)`` pairs,
    oldest first, rebuilt from the job's hash and its entries still in the events stream."""

    id: str
    task: str
    state: JobState | None
    data: Any
    result: Any
    error: str | None
    progress: Any
    logs: list[Any]
    attempt: int
    version: int
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    timeline: list[tuple[str, datetime]] = field(default_factory=list)

    @classmethod
    def from_fields(
        cls,
        task: str,
        job_id: str,
        fields: dict[str, str],
        logs: Sequence[str] = (),
        events: Sequence[tuple[int, str]] = (),
    ) -> JobInfo:
        state = fields.get("state", "")
        return cls(
            id=job_id,
            task=task,
            state=JobState(state) if state in _STATES else None,
            data=_json(fields.get("data")),
            result=_json(fields.get("result")),
            error=fields.get("error") or None,
            progress=_json(fields.get("progress")),
            logs=[_json(line) if _json(line) is not None else line for line in logs],
            attempt=_int(fields.get("attempt")) or 1,
            version=_int(fields.get("_v")) or 1,
            created_at=_at(fields.get("ts")),
            started_at=_at(fields.get("processedOn")),
            finished_at=_at(fields.get("finishedOn")),
            timeline=_timeline(fields, events),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the CLI's ``--json``)."""

        def iso(at: datetime | None) -> str | None:
            return None if at is None else at.isoformat()

        return {
            "id": self.id,
            "task": self.task,
            "state": None if self.state is None else self.state.value,
            "data": self.data,
            "result": self.result,
            "error": self.error,
            "progress": self.progress,
            "logs": self.logs,
            "attempt": self.attempt,
            "version": self.version,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "timeline": [[state, at.isoformat()] for state, at in self.timeline],
        }


def _timeline(
    fields: dict[str, str], events: Sequence[tuple[int, str]]
) -> list[tuple[str, datetime]]:
    """The stream's entries where it still has them; the hash's times fill in what the
    stream lost (it is capped): creation, start and end, as the reference rebuilds them."""
    points = [(ms, name) for ms, name in events if name in _TIMELINE_EVENTS]
    seen = {name for _, name in points}
    state = fields.get("state", "")
    ts, started, ended = (_int(fields.get(k)) for k in ("ts", "processedOn", "finishedOn"))
    if ts is not None and not seen & {"waiting", "delayed", "debounced"}:
        points.append((ts, "waiting"))
    if started is not None and "active" not in seen:
        points.append((started, "active"))
    if ended is not None and state in FINISHED and state not in seen:
        points.append((ended, state))
    points.sort(key=lambda point: point[0])  # stable: same-ms entries keep stream order
    return [(name, datetime.fromtimestamp(ms / 1000, UTC)) for ms, name in points]


class Inspector:
    """``app.inspect()``: read-only views of the queues for operators and tools.

    Without ``task``, a call covers every task: the app's registered ones plus those found
    in the store (``Backend.task_names``), so a process without the app module sees them
    too; lists then page each task with the same offset and limit and concatenate them, as
    the reference does."""

    def __init__(self, app: Runtime) -> None:
        self._app = app

    async def tasks(self) -> list[str]:
        """Every task this app registers or the store holds jobs or events for."""
        return await self._app._route(self._task_names)

    async def _task_names(self) -> list[str]:
        backend = await self._app._connected_backend()
        return sorted(set(self._app.tasks) | set(await backend.task_names()))

    async def _pick(self, task: str | None) -> list[str]:
        return [task] if task is not None else await self._task_names()

    async def _list(self, state: str, task: str | None, limit: int, offset: int) -> list[JobInfo]:
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        backend = await self._app._connected_backend()
        out: list[JobInfo] = []
        for name in await self._pick(task):
            rows = await backend.list_jobs(name, state, offset, limit)
            out += [JobInfo.from_fields(name, job_id, fields) for job_id, fields in rows]
        return out

    def _view(
        self, state: str, task: str | None, limit: int, offset: int
    ) -> Awaitable[builtins.list[JobInfo]]:
        return self._app._route(lambda: self._list(state, task, limit, offset))

    async def waiting(
        self, task: str | None = None, limit: int = 20, offset: int = 0
    ) -> list[JobInfo]:
        """Waiting jobs in claim order (priority desc, then dispatch order; jobs a worker
        claimed ahead but has not started yet count as waiting, docs/design.md#claim-ahead)."""
        return await self._view("waiting", task, limit, offset)

    async def active(
        self, task: str | None = None, limit: int = 20, offset: int = 0
    ) -> list[JobInfo]:
        """Running jobs, oldest dispatch first."""
        return await self._view("active", task, limit, offset)

    async def delayed(
        self, task: str | None = None, limit: int = 20, offset: int = 0
    ) -> list[JobInfo]:
        """Delayed and retrying jobs, soonest due first."""
        return await self._view("delayed", task, limit, offset)

    async def completed(
        self, task: str | None = None, limit: int = 20, offset: int = 0
    ) -> list[JobInfo]:
        """Completed jobs, newest first."""
        return await self._view("completed", task, limit, offset)

    async def failed(
        self, task: str | None = None, limit: int = 20, offset: int = 0
    ) -> list[JobInfo]:
        """Failed jobs (the dead letters), newest first."""
        return await self._view("failed", task, limit, offset)

    async def expired(
        self, task: str | None = None, limit: int = 20, offset: int = 0
    ) -> list[JobInfo]:
        """Expired jobs, newest first."""
        return await self._view("expired", task, limit, offset)

    async def cancelled(
        self, task: str | None = None, limit: int = 20, offset: int = 0
    ) -> list[JobInfo]:
        """Cancelled jobs, newest first."""
        return await self._view("cancelled", task, limit, offset)

    async def list(
        self, state: str, task: str | None = None, limit: int = 20, offset: int = 0
    ) -> builtins.list[JobInfo]:
        """One of the seven lists by name (for tools)."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; expected one of {', '.join(STATES)}")
        return await self._view(state, task, limit, offset)

    async def stats(self, task: str | None = None) -> dict[str, int]:
        """The seven state counts, summed over the tasks."""
        return await self._app._route(lambda: self._stats(task))

    async def _stats(self, task: str | None) -> dict[str, int]:
        backend = await self._app._connected_backend()
        total = dict.fromkeys(STATES, 0)
        names = await self._pick(task)
        for counts in await asyncio.gather(*(backend.counts(name) for name in names)):
            for state in STATES:
                total[state] += counts.get(state, 0)
        return total

    async def find(self, task_or_id: str, job_id: str | None = None) -> JobInfo | None:
        """``find(job_id)`` looks in every task (one round trip for all), ``find(task,
        job_id)`` in one; None when there is no such job."""
        task, jid = (None, task_or_id) if job_id is None else (task_or_id, job_id)
        return await self._app._route(lambda: self._find(task, jid))

    async def _find(self, task: str | None, job_id: str) -> JobInfo | None:
        backend = await self._app._connected_backend()
        names = await backend.locate(await self._pick(task), job_id)
        for name in names:
            detail = await backend.job_detail(name, job_id)
            if detail is not None:
                return JobInfo.from_fields(name, job_id, detail.fields, detail.logs, detail.events)
        return None

    async def throughput(
        self, task: str | None = None, minutes: int = 60
    ) -> builtins.list[dict[str, Any]]:
        """Completed and failed jobs per minute over the last ``minutes`` minutes, oldest
        first: ``{"minute": datetime, "completed": n, "failed": n}`` (summed over tasks)."""
        return await self._app._route(lambda: self._throughput(task, minutes))

    async def _throughput(self, task: str | None, minutes: int) -> builtins.list[dict[str, Any]]:
        if minutes < 1:
            raise ValueError("minutes must be >= 1")
        backend = await self._app._connected_backend()
        since = backend.now_ms() - (minutes - 1) * 60_000
        sums: dict[int, list[int]] = {}
        names = await self._pick(task)
        for rows in await asyncio.gather(*(backend.throughput(n, since, minutes) for n in names)):
            for minute, completed, failed in rows:
                entry = sums.setdefault(minute, [0, 0])
                entry[0] += completed
                entry[1] += failed
        if not sums:
            first = since // 60_000 * 60_000
            sums = {first + i * 60_000: [0, 0] for i in range(minutes)}
        return [
            {"minute": datetime.fromtimestamp(m / 1000, UTC), "completed": c, "failed": f}
            for m, (c, f) in sorted(sums.items())
        ]

    async def migrations(self, task: str, limit: int = 10_000) -> Migrations:
        """The payload versions (``_v``) of ``task``'s unfinished jobs (waiting, parked for a
        newer worker, active, delayed, retrying; up to ``limit`` per state) beside the
        task's own versions, and how far ``since`` can be raised (docs/design.md#versions)."""
        return await self._app._route(lambda: self._migrations(task, limit))

    async def _migrations(self, task: str, limit: int) -> Migrations:
        backend = await self._app._connected_backend()
        counts: Counter[int] = Counter(await backend.parked_versions(task))
        for state in ("waiting", "active", "delayed"):
            rows = await backend.list_jobs(task, state, 0, limit)
            counts.update(_int(fields.get("_v")) or 1 for _, fields in rows)
        versioning: Versioning | None = getattr(self._app.tasks.get(task), "versioning", None)
        return Migrations(
            task=task,
            version=versioning.version if versioning else None,
            since=versioning.since if versioning else None,
            migrations=len(versioning.steps) if versioning else 0,
            by_version=dict(sorted(counts.items())),
        )

    async def purge(self, task: str, state: str, older_than_ms: int) -> int:
        """Delete ``task``'s finished jobs in ``state`` that ended over ``older_than_ms``
        ago (the retention trim, with this one limit); returns how many."""
        if state not in FINISHED:
            raise ValueError(f"only finished jobs can be purged ({', '.join(FINISHED)})")

        async def run() -> int:
            backend = await self._app._connected_backend()
            return await backend.purge(task, state, older_than_ms)

        return await self._app._route(run)

    async def cancel(
        self, job_id: str, task: str | None = None, reason: str | None = None
    ) -> str | None:
        """Cancel one job by id (an operator's action): "cancelled", "flagged" (it is
        running; its worker stops it), "not_cancellable" (it has finished), or None when
        there is no such job."""

        async def run() -> str | None:
            job = await self._find(task, job_id)
            if job is None:
                return None
            return await cancel_job(self._app, job.task, job.id, reason)

        return await self._app._route(run)

    async def server(self) -> dict[str, Any]:
        """What the store says of itself (Redis: version, memory, clients, uptime)."""

        async def run() -> dict[str, Any]:
            return await (await self._app._connected_backend()).server_info()

        return await self._app._route(run)

    async def workers(self) -> builtins.list[WorkerInfo]:
        """The worker processes alive now, oldest first: one entry per started App, with its
        tasks and their concurrency (docs/design.md#workers). One read, never a scan."""

        async def run() -> builtins.list[WorkerInfo]:
            backend = await self._app._connected_backend()
            found = [WorkerInfo.from_entry(*entry) for entry in await backend.worker_list()]
            epoch = datetime.fromtimestamp(0, UTC)
            found.sort(key=lambda w: (w.started_at or epoch, w.host, w.pid, w.id))
            return found

        return await self._app._route(run)

    async def workflows(
        self, state: str | None = None, limit: int = 20, offset: int = 0, scan: int = 10_000
    ) -> builtins.list[WorkflowInfo]:
        """Stored workflows (running, or ended and not yet past retention), newest first,
        optionally of one ``state``. It walks the keyspace for up to ``scan`` of them and
        reads each one's head; only the page returned is read with its steps."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        if state is not None and state not in WORKFLOW_STATES:
            raise ValueError(f"unknown workflow state {state!r}; expected one of {WORKFLOW_STATES}")

        async def run() -> builtins.list[WorkflowInfo]:
            backend = await self._app._connected_backend()
            ids = await backend.workflow_ids(scan)
            heads = await backend.workflow_records(ids)
            found = [
                (head.created_ms, wf_id)
                for wf_id, head in zip(ids, heads, strict=True)
                if head is not None and (state is None or head.state == state)
            ]
            found.sort(reverse=True)
            page = [wf_id for _, wf_id in found[offset : offset + limit]]
            records = await backend.workflow_records(page, nodes=True)
            return [
                WorkflowInfo.from_record(wf_id, record)
                for wf_id, record in zip(page, records, strict=True)
                if record is not None  # it expired in between
            ]

        return await self._app._route(run)

    async def workflow(self, wf_id: str) -> WorkflowInfo | None:
        """One workflow with its steps; a queued step (its job waiting or running) shows
        its job's state."""

        async def run() -> WorkflowInfo | None:
            backend = await self._app._connected_backend()
            (record,) = await backend.workflow_records([wf_id], nodes=True)
            if record is None:
                return None
            info = WorkflowInfo.from_record(wf_id, record)
            queued = [s for s in info.steps if s.state == "queued"]
            snaps = await asyncio.gather(*(backend.get_snapshot(s.task, s.job_id) for s in queued))
            states = {s.index: snap.state for s, snap in zip(queued, snaps, strict=True)}
            steps = [
                dataclasses.replace(s, state=states.get(s.index) or s.state) for s in info.steps
            ]
            return dataclasses.replace(info, steps=steps)

        return await self._app._route(run)

    async def cancel_workflow(self, wf_id: str, reason: str | None = None) -> str | None:
        """Cancel a running workflow and its unfinished steps: its state after (an ended
        one keeps its own), or None when there is no such workflow."""
        return await self._app._route(lambda: cancel_workflow(self._app, wf_id, reason))


WORKFLOW_STATES = ("running", "completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class StepInfo:
    """One step of a workflow: its task, job id, the steps it waits for, and its state
    (pending, queued, completed, failed, cancelled; a queued step's job state when read by
    ``workflow(id)``), with its own data, its result or its error."""

    index: int
    task: str
    job_id: str
    deps: builtins.list[int]
    state: str
    data: Any = None
    result: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """A stored workflow (``inspect().workflows()`` / ``workflow(id)``): ``error`` is a
    failed workflow's error or a cancelled one's reason."""

    id: str
    name: str | None
    state: str
    error: str | None
    created_at: datetime | None
    finished_at: datetime | None
    result: Any
    steps: builtins.list[StepInfo]

    @classmethod
    def from_record(cls, wf_id: str, record: WorkflowRecord) -> WorkflowInfo:
        steps = [
            StepInfo(
                index=i,
                task=node.task,
                job_id=step_id(wf_id, i),
                deps=list(node.deps),
                state=node.state,
                data=_json(node.data),
                result=_json(node.result),
                error=node.error,
            )
            for i, node in enumerate(record.nodes)
        ]
        return cls(
            id=wf_id,
            name=record.name or None,
            state=record.state,
            error=record.error or record.reason or None,
            created_at=_at(str(record.created_ms)),
            finished_at=_at(str(record.finished_ms)),
            result=_json(record.result),
            steps=steps,
        )


@dataclass(frozen=True, slots=True)
class Migrations:
    """What ``inspect().migrations(task)`` found. ``version``/``since``/``migrations`` are
    the task's as registered in this App (None, None, 0 for a task it does not know)."""

    task: str
    version: int | None
    since: int | None
    migrations: int
    by_version: dict[int, int]  # payload version -> unfinished jobs carrying it

    @property
    def oldest(self) -> int | None:
        """The oldest payload version still queued or running; None when there is none."""
        return min(self.by_version) if self.by_version else None

    @property
    def max_since(self) -> int | None:
        """The highest ``since`` that fails no unfinished job: the oldest version present,
        or the task's version when nothing is pending."""
        return self.oldest if self.by_version else self.version

    def can_raise_since(self, candidate: int) -> bool:
        """True when no unfinished job is older than ``candidate``."""
        return all(v >= candidate for v in self.by_version)


class DeadLetters:
    """Permanently failed jobs: list them, retry one, or retry them all (``app.dead_letters``).

    A retried job starts over at attempt 1 with a fresh dispatch time; each move is atomic.
    """

    def __init__(self, app: Runtime) -> None:
        self._app = app

    async def _tasks(self, task: str | None) -> builtins.list[str]:
        """The registered tasks; an App with none (the CLI without an app module) uses the
        tasks found in the store, so the keyspace walk is paid only there."""
        known = set(self._app.tasks)
        if task is not None and task in known:
            return [task]
        if task is None and known:
            return sorted(known)
        backend = await self._app._connected_backend()
        found = set(await backend.task_names())
        if task is None:
            return sorted(found)
        if task not in found:
            raise ConfigError(f"unknown task {task!r}")
        return [task]

    async def list(
        self, task: str | None = None, limit: int = 20, offset: int = 0
    ) -> list[JobInfo]:
        """Failed jobs, newest first (per task, when no task is given)."""
        return await self._app._route(lambda: self._list(task, limit, offset))

    async def _list(self, task: str | None, limit: int, offset: int) -> builtins.list[JobInfo]:
        backend = await self._app._connected_backend()
        out: builtins.list[JobInfo] = []
        for name in await self._tasks(task):
            rows = await backend.list_jobs(name, "failed", offset, limit)
            out += [JobInfo.from_fields(name, job_id, fields) for job_id, fields in rows]
        return out

    async def retry(self, job_id: str, task: str | None = None) -> bool:
        """Put one failed job back to waiting; False if it is not in the dead-letter queue."""
        return await self._app._route(lambda: self._retry(job_id, task))

    async def _retry(self, job_id: str, task: str | None) -> bool:
        backend = await self._app._connected_backend()
        for name in await self._tasks(task):
            if await backend.retry_failed(name, [job_id], 1):
                return True
        return False

    async def retry_all(self, task: str | None = None) -> int:
        """Put every failed job back to waiting (oldest first); returns how many."""
        return await self._app._route(lambda: self._retry_all(task))

    async def _retry_all(self, task: str | None) -> int:
        backend = await self._app._connected_backend()
        total = 0
        for name in await self._tasks(task):
            while True:
                moved = await backend.retry_failed(name, None, RETRY_BATCH)
                total += len(moved)
                if len(moved) < RETRY_BATCH:
                    break
        return total


def _json(raw: str | None) -> Any:
    if raw is None or raw == "":
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _at(raw: str | None) -> datetime | None:
    ms = _int(raw)
    return None if ms is None or ms <= 0 else datetime.fromtimestamp(ms / 1000, UTC)
