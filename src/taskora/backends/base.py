"""The storage boundary: what the core asks of a backend, and the records that cross it.

Core modules (task, handle, worker, app) talk only to :class:`Backend`. Every state
transition is one backend call, atomic on Redis (one Lua script) and in memory (one
synchronous step), so the two backends cannot disagree about what a transition means.
Payloads cross the boundary already serialized (``str``): backends never see user objects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from ..types import Retention

__all__ = [
    "Backend",
    "ClaimOptions",
    "Claimed",
    "EnqueueResult",
    "Flow",
    "JobDetail",
    "JobSnapshot",
    "NewJob",
    "Outcome",
    "ReadyStep",
    "ScheduleExpect",
    "StallReport",
    "Terminal",
    "WorkflowAdvance",
    "WorkflowInfo",
    "WorkflowNode",
    "WorkflowPlan",
    "WorkflowRecord",
    "WorkflowStep",
]


@dataclass(slots=True)  # not frozen: built once per dispatch, on the hot path
class NewJob:
    """A job to create. Times are relative (ms); the backend's clock fixes absolute times."""

    id: str
    data: str
    version: int = 1
    max_attempts: int = 1
    priority: int = 0
    delay_ms: int = 0
    ttl_ms: int = 0
    concurrency_key: str = ""
    concurrency_limit: int = 0
    trace: str = ""  # trace context (docs/design.md#tracing); "" = none, no field written


@dataclass(frozen=True, slots=True)
class Flow:
    """Flow control for one dispatch; exactly one of the kinds.

    ``schedule`` is one fire time of a schedule (``key`` = its name, ``fire_ms``, ``overlap``,
    ``window_ms`` = how long the per-schedule mark lives): created at most once, and not while
    the schedule's previous job is unfinished unless ``overlap``.

    ``collect`` appends the job's data as one item to the buffer of ``key`` (``delay_ms`` of
    quiet, ``max`` items, ``window_ms`` since the first item; docs/design.md#collect).
    """

    kind: Literal["debounce", "throttle", "dedup", "schedule", "collect"]
    key: str
    delay_ms: int = 0
    max: int = 0
    window_ms: int = 0
    states: tuple[str, ...] = ()
    fire_ms: int = 0
    overlap: bool = True


@dataclass(slots=True)  # not frozen: made once per job on the dispatch path
class EnqueueResult:
    """What happened to one dispatch.

    ``enqueued`` is False for a throttle or dedup rejection (``existing_id`` names the job
    holding a dedup key). ``event_id`` is the stream id of the job's creation event, which
    lets a waiter in the same process skip its first state check.
    """

    enqueued: bool
    existing_id: str | None = None
    replaced_id: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimOptions:
    """How a worker claims: lock lifetime, singleton gate, and the retention caps the
    backend applies to finished jobs as it records outcomes (so trimming keeps pace)."""

    lock_ttl_ms: int
    singleton: bool = False
    keep_completed: int = 1000
    keep_failed: int = 10_000
    # the newest payload version (``_v``) this worker runs; newer jobs are parked for a
    # worker of their version (docs/design.md#versions). 0 = any.
    version: int = 0


@dataclass(frozen=True, slots=True)
class Claimed:
    """A job this worker now holds: run it and report an :class:`Outcome` with ``token``."""

    id: str
    data: str
    version: int
    attempt: int
    ts: int
    token: str
    error: str | None = None  # set when the stored job is malformed: fail it, do not run it
    reserved: bool = False  # claimed ahead: still waiting until its ``start`` outcome is sent
    trace: str | None = None  # the job's trace context, when its producer traced it


OutcomeKind = Literal["start", "completed", "retry", "failed", "cancelled", "release"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a held job ended. ``release`` puts it back to waiting (graceful shutdown).

    ``start`` is not an end: a job claimed ahead (``Claimed.reserved``) becomes active only
    when its handler starts, recorded by this outcome in the worker's next call. Outcomes
    apply in order, so a batch may start a job and finish it."""

    id: str
    token: str
    kind: OutcomeKind
    result: str | None = None
    error: str | None = None
    retry_delay_ms: int = 0


@dataclass(frozen=True, slots=True)
class FinishReport:
    """Reply to :meth:`Backend.finish_and_claim`: outcomes refused (lock lost) and new jobs."""

    refused: tuple[str, ...]
    claimed: tuple[Claimed, ...]


@dataclass(frozen=True, slots=True)
class StallReport:
    recovered: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    cancelled: tuple[str, ...] = ()
    returned: tuple[str, ...] = ()  # claimed ahead by a dead worker, never started: no stall


@dataclass(frozen=True, slots=True)
class Terminal:
    """The end of a job as a waiter sees it.

    ``state`` is a terminal JobState value, or ``"missing"`` when the job does not exist.
    """

    state: str
    result: str | None = None
    error: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    """One node of a workflow as stored: its task and job options, its own data (serialized)
    or ``inputs``, a template of its input (``#<node>`` stands for that node's result:
    ``"#3"``, ``"[#1,#2]"``), the number of nodes it waits for and the nodes waiting for it."""

    task: str
    version: int
    max_attempts: int
    data: str | None
    inputs: str
    waits: int
    then: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class WorkflowPlan:
    """What ``workflow_create`` writes: the nodes, the template of the workflow's output,
    its ttl (0: none) and the lease before ``workflow_started``."""

    name: str
    steps: tuple[WorkflowStep, ...]
    output: str
    ttl_ms: int = 0
    lease_ms: int = 600_000


@dataclass(frozen=True, slots=True)
class ReadyStep:
    """A node whose inputs are all complete: enqueue it as job ``wf-<workflow>-<node>``."""

    node: int
    task: str
    data: str
    version: int
    max_attempts: int


@dataclass(frozen=True, slots=True)
class WorkflowAdvance:
    """After a step: the workflow's state (``missing``: no record) and the steps to enqueue."""

    state: str
    ready: tuple[ReadyStep, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    state: str
    name: str = ""
    result: str | None = None
    error: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class WorkflowNode:
    """One node of a stored workflow as operators see it: ``deps`` are the nodes it waits
    for; ``data`` its own input (serialized; None when it takes the previous output)."""

    task: str
    state: str
    deps: tuple[int, ...]
    data: str | None = None
    result: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    """A stored workflow for the inspector and the board (``workflow_records``): ``size``
    nodes, ``left`` of them not completed; ``nodes`` only when asked for."""

    state: str
    name: str
    created_ms: int
    finished_ms: int
    size: int
    left: int
    result: str | None = None
    error: str | None = None
    reason: str | None = None
    nodes: tuple[WorkflowNode, ...] = ()


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    state: str | None
    progress: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobDetail:
    """A job as stored: its hash, its log lines, and its events (``(ms, event)``, oldest
    first) still in the task's events stream."""

    fields: dict[str, str]
    logs: list[str]
    events: list[tuple[int, str]]


CancelListener = Callable[[str], None]


_ANY: Any = object()


@dataclass(frozen=True, slots=True)
class ScheduleExpect:
    """What a schedule must still be for :meth:`Backend.schedule_write` to apply: a record
    (None = absent) and a next fire time (None = paused or absent); ``ANY`` skips a check."""

    record: str | Any | None = _ANY
    next_ms: int | Any | None = _ANY

    ANY: ClassVar[Any] = _ANY


class Backend(Protocol):
    """A place jobs live. ``MemoryBackend`` and ``RedisBackend`` implement it."""

    url: str

    async def connect(self) -> None:
        """Connect and check compatibility; idempotent."""

    async def close(self) -> None:
        """Release every connection and wake every blocked call."""

    def now_ms(self) -> int:
        """The backend's clock in epoch ms (the Redis server's clock for Redis)."""

    async def verify(self) -> str | None:
        """Check the keyspace is still ours; a message when data was lost (and re-init)."""

    # -- producer -----------------------------------------------------------------
    async def enqueue(self, task: str, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        """Create jobs in one round trip. An id that already exists is left untouched."""

    def enqueue_now(
        self,
        task: str,
        jobs: Sequence[NewJob],
        settle: Callable[[list[EnqueueResult] | BaseException], None],
    ) -> bool:
        """The dispatch fast path: start a small plain enqueue right now, without a task
        switch; ``settle`` gets its results, or the error (the caller then retries through
        ``enqueue``), once, from the reply's callback (or before this returns). False when
        ``enqueue`` must be used instead (not connected yet, or too large): ``settle`` is
        never called then. ``settle`` must not raise."""

    async def enqueue_flow(self, task: str, job: NewJob, flow: Flow) -> EnqueueResult:
        """Create a job under debounce, throttle or dedup, decided atomically."""

    async def collect_push(
        self, task: str, items: Sequence[tuple[NewJob, Flow]]
    ) -> list[EnqueueResult]:
        """Append collect items (``Flow`` kind ``collect``) in order, in one round trip;
        each result's ``existing_id`` is the batch job the item joined (None: its own id)."""

    async def collect_peek(self, task: str, key: str) -> list[str]:
        """The items buffered under a collect key, in dispatch order (serialized)."""

    async def collect_info(self, task: str, key: str) -> tuple[int, int, int] | None:
        """(count, first append ms, last append ms) of a collect buffer, None when empty."""

    # -- worker -------------------------------------------------------------------
    async def finish_and_claim(
        self,
        task: str,
        outcomes: Sequence[Outcome],
        claim: int,
        options: ClaimOptions,
        token_base: str,
        reserve: int = 0,
    ) -> FinishReport:
        """Record outcomes, then claim up to ``claim`` waiting jobs, in one atomic step.

        ``claim`` jobs become active now; up to ``reserve`` more are claimed ahead: locked for
        this worker but still ``waiting`` (counts, lists, get_state) until their ``start``
        outcome. Jobs with a concurrency key or a ttl, and singleton tasks, are never claimed
        ahead. A dead worker's reservations go back to the front without a stall count;
        cancelling one ends it at once and tells its worker (the cancel listener); a newly
        waiting job that outranks one tells every worker with an empty id (give the buffer
        back and claim again)."""

    async def wait_for_work(
        self,
        task: str,
        timeout_s: float,
        claim: int,
        options: ClaimOptions,
        token_base: str,
        reserve: int = 0,
    ) -> tuple[Claimed, ...]:
        """Block until work may be claimable (an enqueue, a due delayed job) or ``timeout_s``,
        then claim up to ``claim`` jobs at once; returns them (possibly none)."""

    def finish_then_wait(
        self,
        task: str,
        outcomes: Sequence[Outcome],
        claim: int,
        options: ClaimOptions,
        token_base: str,
        timeout_s: float,
        reserve: int = 0,
    ) -> tuple[asyncio.Future[FinishReport], asyncio.Future[tuple[Claimed, ...]]] | None:
        """Optional fast path for a worker about to go idle: ``finish_and_claim`` and the
        next ``wait_for_work`` sent together. None: use the two calls."""

    async def extend_locks(
        self, task: str, held: Sequence[tuple[str, str]], lock_ttl_ms: int
    ) -> list[int]:
        """Renew locks; per job 1 = renewed, 0 = lost, -1 = cancellation requested."""

    async def stalled_check(self, task: str, max_count: int) -> StallReport:
        """Recover or fail jobs whose worker died (two-phase: seen twice without a lock)."""

    async def trim(self, task: str, retention: Retention) -> int:
        """Delete finished jobs past retention; returns how many were removed."""

    async def subscribe_cancel(self, task: str, listener: CancelListener) -> None:
        """Call ``listener(job_id)`` when cancellation of an active or claimed-ahead job is
        requested, and ``listener("")`` when a job outranking claimed-ahead ones arrived."""

    async def unsubscribe_cancel(self, task: str) -> None: ...

    async def set_progress(self, task: str, job_id: str, value: str) -> None: ...

    async def add_logs(self, task: str, job_id: str, entries: Sequence[str]) -> None: ...

    # -- results and inspection ---------------------------------------------------
    async def get_snapshot(self, task: str, job_id: str) -> JobSnapshot: ...

    async def get_logs(self, task: str, job_id: str) -> list[str]: ...

    async def cancel(self, task: str, job_id: str, reason: str | None) -> str:
        """``"cancelled"`` (was not running), ``"flagged"`` (active: worker will stop it)
        or ``"not_cancellable"`` (missing or already finished)."""

    async def wait_terminal(
        self, task: str, job_id: str, timeout_s: float | None, event_id: str | None
    ) -> Terminal | None:
        """Wait for the job to end; None on timeout. Pushed, never polled per job."""

    async def counts(self, task: str) -> dict[str, int]:
        """Number of jobs per state for ``task``."""

    async def list_jobs(
        self, task: str, state: str, offset: int, limit: int
    ) -> list[tuple[str, dict[str, str]]]:
        """Jobs in ``state`` with their stored fields: finished ones newest first, waiting
        ones in claim order, delayed ones by due time."""

    async def parked_versions(self, task: str) -> dict[int, int]:
        """Jobs parked for a newer worker (docs/design.md#versions), counted by payload
        version; ``list_jobs`` does not show them."""

    async def retry_failed(self, task: str, ids: Sequence[str] | None, limit: int) -> list[str]:
        """Move failed jobs (``ids``, or the ``limit`` oldest) back to waiting, attempt 1."""

    async def task_names(self) -> list[str]:
        """Tasks that have data in the store (for tools that have no app module)."""

    async def locate(self, tasks: Sequence[str], job_id: str) -> list[str]:
        """Which of ``tasks`` hold a job ``job_id`` (one round trip for all)."""

    async def job_detail(self, task: str, job_id: str) -> JobDetail | None:
        """Everything stored about one job, its logs and its entries still in the events
        stream; None when there is no such job."""

    async def throughput(
        self, task: str, since_ms: int, minutes: int
    ) -> list[tuple[int, int, int]]:
        """``(minute start ms, completed, failed)`` for ``minutes`` minutes from ``since_ms``
        (the per-minute metric counters; minutes with none read 0)."""

    async def purge(self, task: str, state: str, older_than_ms: int) -> int:
        """Delete finished jobs in ``state`` that ended more than ``older_than_ms`` ago."""

    # -- workflows (one record per workflow, its own slot; docs/design.md#workflows) ---------
    async def workflow_create(self, wf_id: str, plan: WorkflowPlan) -> bool:
        """Write a new workflow's record (roots marked queued); False if the id exists. The
        record expires after ``plan.lease_ms`` unless ``workflow_started`` follows, so a
        dispatcher that dies before enqueuing the roots leaves nothing behind for good."""

    async def workflow_started(self, wf_id: str) -> None:
        """The roots are enqueued: a running record now lives until it ends."""

    async def workflow_advance(
        self, wf_id: str, node: int, result: str, keep_ms: int
    ) -> WorkflowAdvance:
        """Record node ``node`` completed with ``result`` and return the steps it unblocks,
        in one atomic step. Repeated for a node already recorded, it returns the unblocked
        steps not completed yet again (a crash before they were enqueued loses nothing).
        Completing the last node completes the workflow: it keeps ``keep_ms``."""

    async def workflow_end(
        self, wf_id: str, state: str, node: int, message: str, keep_ms: int
    ) -> list[tuple[int, str]]:
        """End a running workflow as ``failed`` or ``cancelled`` (by node ``node``, or -1 for
        a cancel from a handle, -2 for its ttl) and return the (node, task) steps that were
        queued, to be cancelled. The same ender asking again gets the same list (a replay
        after a crash); anyone else, and a node already completed, gets nothing."""

    async def workflow_read(self, wf_id: str) -> WorkflowInfo | None:
        """A workflow's state and outcome, or None (never created, or trimmed)."""

    async def workflow_wait(self, wf_id: str, timeout_s: float | None) -> Terminal | None:
        """Wait for the workflow to end (pushed, as a job's end); None on timeout."""

    async def workflow_due(self, limit: int) -> list[str]:
        """Workflows whose ttl has passed, by the backend's clock (ended or not)."""

    async def workflow_undue(self, wf_ids: Sequence[str]) -> None:
        """Forget the deadlines of these workflows (they are ended)."""

    async def workflow_ids(self, limit: int) -> list[str]:
        """Up to ``limit`` stored workflow ids, in no order (for listing: a keyspace walk,
        every master of a cluster; never on a hot path)."""

    async def workflow_records(
        self, wf_ids: Sequence[str], nodes: bool = False
    ) -> list[WorkflowRecord | None]:
        """The stored records of these workflows, in order (None: no such workflow), with
        their nodes when ``nodes`` (one read per workflow; never on a hot path)."""

    async def server_info(self) -> dict[str, Any]:
        """What the store says of itself for operators: ``backend``, and on Redis its
        ``version``, ``used_memory``/``used_memory_human``, ``maxmemory``, ``clients``,
        ``blocked_clients`` and ``uptime_s``."""

    # -- the worker registry (its own keys, one cluster slot; docs/design.md#workers) -------
    async def worker_beat(self, worker_id: str, record: str, ttl_ms: int) -> None:
        """Store a worker process's ``record`` and keep it alive ``ttl_ms`` from now on the
        backend's clock; ``record`` "" removes it. Entries already past their time (workers
        gone without a clean close) are removed in the same atomic step."""

    async def worker_list(self) -> list[tuple[str, str, int]]:
        """The live entries, by the backend's clock: (id, record, the ms after which it
        counts as gone). Never on a hot path."""

    # -- schedules (their own keys, one cluster slot; docs/design.md#scheduling) -------------
    async def schedule_lock(self, token: str, ttl_ms: int, release: bool = False) -> bool:
        """Take or renew the scheduler leader lock for ``token`` (or give it up); True while
        held. The lock expires on the backend's clock after ``ttl_ms``."""

    async def schedule_due(
        self, token: str, limit: int
    ) -> tuple[int, list[tuple[str, int, str]]] | None:
        """None unless ``token`` holds the lock; else the backend's now (ms) and up to ``limit``
        due schedules as (name, fire time ms, record). Nothing is removed or changed."""

    async def schedule_read(self, name: str | None) -> list[tuple[str, str, int | None]]:
        """(name, record, next fire time or None when paused) of one schedule or of all."""

    async def schedule_write(
        self,
        name: str,
        expect: ScheduleExpect,
        record: str | None,
        next_ms: int | None,
    ) -> bool:
        """Compare-and-set: if the schedule still matches ``expect``, store ``record`` with
        ``next_ms`` (None = paused), or delete it when ``record`` is None. False: it changed."""


# -- events streams (taskora.events decodes what a backend hands over) ------------------------
# Stream entries that carry less than their payload needs: the job-hash fields to read
# (one pipeline per batch of entries). A field present in the entry itself wins.
ENRICH: dict[str, tuple[str, ...]] = {
    "completed": ("attempt", "processedOn", "finishedOn", "result"),
    "failed": ("attempt", "error"),
    "active": ("attempt",),
}

Fields = Mapping[str, str]
Deliver = Callable[[str, list[tuple[Fields, Fields]]], None]


class EventSource(Protocol):
    """What a backend provides: entries of the watched tasks' streams, in order."""

    def watch(self, tasks: Iterable[str]) -> None: ...

    async def close(self) -> None: ...


def needed_fields(fields: Fields) -> tuple[str, ...]:
    """Job-hash fields an entry lacks (empty: nothing to read)."""
    wanted = ENRICH.get(fields.get("event", ""), ())
    return tuple(name for name in wanted if name not in fields)
