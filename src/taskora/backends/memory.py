"""MemoryBackend: the same semantics as Redis, inside one process.

It mirrors the Lua scripts step for step (the backend contract suite runs against both),
so it is a faithful stand-in for users' unit tests and the embedded demo. Each method is
one synchronous step, which makes it atomic the way a Lua script is. The clock is
injectable (epoch ms) for virtual time.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..types import Retention
from .base import (
    CancelListener,
    Claimed,
    ClaimOptions,
    Deliver,
    EnqueueResult,
    Fields,
    FinishReport,
    Flow,
    JobDetail,
    JobSnapshot,
    NewJob,
    Outcome,
    ScheduleExpect,
    StallReport,
    Terminal,
    WorkflowAdvance,
    WorkflowInfo,
    WorkflowPlan,
    WorkflowRecord,
    needed_fields,
)
from .memory_collect import Buffer, collect_drain, collect_push
from .memory_flow import enqueue_flow
from .memory_schedules import ScheduleStore
from .memory_workflows import WorkflowStore

__all__ = ["MemoryBackend"]

Job = dict[str, Any]
STALL_MESSAGE = "Job stalled and exceeded max stalled count"
EVENTS_MAXLEN = 10_000
DONE_MAXLEN = 10_000  # ends kept per task, as the Redis done stream (lib.lua EVENTS_MAXLEN)
MAX_INLINE_RESULT = 4096  # larger results live only in the job, as on Redis
PROMOTE_BATCH = 200  # due jobs promoted per step, as lib.lua's promote
METRICS_KEEP_MS = 86_400_000  # per-minute counters live a day, as the Redis keys' EXPIRE


def _system_clock() -> int:
    return int(time.time() * 1000)


def _malformed(job: Job) -> str | None:
    """Why a waiting job cannot be claimed (lib.lua's claim checks), or None."""
    if job.get("expireAt") is not None and not isinstance(job["expireAt"], int):
        return "expireAt is not a number"
    if "concurrencyKey" in job and not isinstance(job.get("concurrencyLimit"), int):
        return "concurrencyLimit is not a number"
    if "data" not in job:
        return "data field missing"
    return None


@dataclass(eq=False)
class _Task:
    name: str = ""
    jobs: dict[str, Job] = field(default_factory=dict)
    logs: dict[str, list[str]] = field(default_factory=dict)
    wait: deque[str] = field(default_factory=deque)  # appendleft = LPUSH, pop = RPOP
    prioritized: list[tuple[float, str]] = field(default_factory=list)
    prio_score: dict[str, float] = field(default_factory=dict)
    delayed: list[tuple[int, str]] = field(default_factory=list)
    due: dict[str, int] = field(default_factory=dict)
    active: dict[str, None] = field(default_factory=dict)
    reserved: dict[str, float] = field(default_factory=dict)  # claimed ahead: id -> rank score
    reserved_seq: int = 0
    locks: dict[str, tuple[str, int]] = field(default_factory=dict)
    finished: dict[str, OrderedDict[str, int]] = field(
        default_factory=lambda: {
            s: OrderedDict() for s in ("completed", "failed", "cancelled", "expired")
        }
    )
    stalled: set[str] = field(default_factory=set)
    ends: OrderedDict[str, Terminal] = field(default_factory=OrderedDict)  # the done stream
    conc: dict[str, int] = field(default_factory=dict)
    parked: dict[str, deque[str]] = field(default_factory=dict)  # per concurrency key, FIFO
    newer: dict[str, tuple[int, int]] = field(default_factory=dict)  # parked for a newer
    # worker: id -> (version, sequence), taken in that order (`newer` zset in lib.lua)
    newer_seq: int = 0
    flow_keys: dict[str, tuple[str, int | None]] = field(
        default_factory=dict
    )  # key -> (value, expiry)
    marker: int | None = None
    marker_event: asyncio.Event | None = None
    events: deque[tuple[str, dict[str, str]]] = field(
        default_factory=lambda: deque(maxlen=EVENTS_MAXLEN)
    )  # the events stream: (entry id, fields)
    collect: dict[str, Buffer] = field(default_factory=dict)  # collect key -> its buffer
    collect_seen: OrderedDict[str, int] = field(default_factory=OrderedDict)  # id -> appended at
    metrics: dict[int, list[int]] = field(default_factory=dict)  # minute -> [completed, failed]

    def waiting_count(self) -> int:
        parked = sum(map(len, self.parked.values())) + len(self.newer)
        return len(self.wait) + len(self.prio_score) + parked + len(self.reserved)

    def queued_count(self) -> int:
        return len(self.wait) + len(self.prio_score)


def _parked_for(t: _Task, max_v: int, total: int) -> list[str]:
    """Up to ``total`` jobs parked by older workers that a worker of ``max_v`` runs, last
    to take first (by version, then FIFO; the ``newer`` zset in lib.lua)."""
    if max_v <= 1 or not t.newer:
        return []
    fits = sorted((vs, i) for i, vs in t.newer.items() if vs[0] <= max_v)[:total]
    return [i for _, i in reversed(fits)]


def _unpark(t: _Task, older: list[str]) -> tuple[str, float | None]:
    job_id = older.pop()
    del t.newer[job_id]
    return job_id, None


class MemoryBackend:
    """In-process backend with Redis semantics. ``MemoryBackend(clock=lambda: ms)``."""

    url = "memory://"

    def __init__(self, prefix: str | None = None, clock: Callable[[], int] | None = None) -> None:
        self.prefix = prefix
        self.clock = clock or _system_clock
        self.workflows = WorkflowStore(self.now_ms)
        self._tasks: dict[str, _Task] = {}
        self._waiters: dict[tuple[str, str], list[asyncio.Future[Terminal]]] = {}
        self._cancel_listeners: dict[str, CancelListener] = {}
        self._token_seq = 0
        self._closed_event: asyncio.Event | None = None
        self.schedules = ScheduleStore(self.now_ms)
        # the worker registry: id -> (record, ms after which it counts as gone)
        self.worker_entries: dict[str, tuple[str, int]] = {}
        self._event_sources: list[_EventSource] = []
        self._event_last = (0, 0)

    def configure(self, *, prefix: str | None) -> None:
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"MemoryBackend(prefix={self.prefix!r})"

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        for t in self._tasks.values():
            if t.marker_event is not None:
                t.marker_event.set()
                t.marker_event = None
        self._cancel_listeners.clear()

    def reset(self) -> None:
        for t in self._tasks.values():
            t.marker_event = None
        self._waiters.clear()
        self.workflows.reset()
        self._event_sources.clear()  # they belonged to the old event loop

    def now_ms(self) -> int:
        return self.clock()

    def next_due_ms(self) -> int | None:
        """The earliest time anything here moves by itself: a delayed or retrying job (delays,
        backoff, debounce, collect flushes, ttl of delayed jobs), a schedule's next fire or a
        workflow's ttl.
        ``taskora.testing`` jumps its virtual clock from one such time to the next."""
        soonest = self.workflows.next_deadline()
        for t in self._tasks.values():
            if t.delayed and (due := self._next_due(t)) is not None:
                soonest = due if soonest is None else min(soonest, due)
        if self.schedules.next:
            at = min(self.schedules.next.values())
            soonest = at if soonest is None else min(soonest, at)
        return soonest

    async def verify(self) -> str | None:
        return None

    def _t(self, task: str) -> _Task:
        t = self._tasks.get(task)
        if t is None:
            t = self._tasks[task] = _Task(name=task)
        return t

    def _emit(self, t: _Task, job_id: str, kind: str, *pairs: str | int) -> None:
        """XADD to the task's events stream (the same entries as the Lua scripts write);
        listeners of this backend get it at once, with the job fields it needs."""
        fields = {"event": kind, "jobId": job_id}
        if pairs:
            for i in range(0, len(pairs), 2):
                fields[str(pairs[i])] = str(pairs[i + 1])
        now = self.clock()
        ms, seq = self._event_last
        if now <= ms:
            seq += 1
        else:
            ms, seq = now, 0
        self._event_last = (ms, seq)
        t.events.append((f"{ms}-{seq}", fields))
        if not self._event_sources:
            return
        for source in self._event_sources:
            if t.name in source.tasks:
                job = t.jobs.get(job_id, {})
                extra = {n: str(job[n]) for n in needed_fields(fields) if job.get(n) is not None}
                source.deliver(t.name, [(fields, extra)])

    def open_events(
        self, deliver: Deliver, on_error: Callable[[BaseException], None]
    ) -> _EventSource:
        """Events of the watched tasks, handed over as they happen (in-process)."""
        return _EventSource(self, deliver)

    # -- queue primitives (the Lua helpers of lib.lua) -------------------------------------
    def _requeue(
        self, t: _Task, job_id: str, priority: int, ts: int, arrival: bool = False
    ) -> None:
        """An arrival (not a job put back in front) may outrank jobs claimed ahead: tell the
        workers to give those back (lib.lua's requeue)."""
        if priority > 0:
            self._add_prioritized(t, job_id, -priority * 1e13 + ts)
            if arrival and t.reserved and t.prio_score[job_id] < max(t.reserved.values()):
                self._tell(t.name, "")
        else:
            t.wait.appendleft(job_id)

    def _add_prioritized(self, t: _Task, job_id: str, score: float) -> None:
        t.prio_score[job_id] = score
        heapq.heappush(t.prioritized, (score, job_id))

    def _tell(self, task: str, message: str) -> None:
        listener = self._cancel_listeners.get(task)
        if listener is not None:
            asyncio.get_running_loop().call_soon(listener, message)

    def _requeue_front(self, t: _Task, job_id: str, job: Job) -> None:
        if job["priority"] > 0:
            self._requeue(t, job_id, job["priority"], job["ts"])
        else:
            t.wait.append(job_id)

    def _pop_waiting(self, t: _Task) -> tuple[str, float | None] | None:
        while t.prioritized:
            score, job_id = heapq.heappop(t.prioritized)
            if t.prio_score.get(job_id) == score:
                del t.prio_score[job_id]
                return job_id, score
        if t.wait:
            return t.wait.pop(), None
        return None

    def _remove_waiting(self, t: _Task, job_id: str) -> None:
        if t.prio_score.pop(job_id, None) is not None:
            return
        if t.reserved.pop(job_id, None) is not None:
            t.locks.pop(job_id, None)
            self._tell(t.name, job_id)
            return
        try:
            t.wait.remove(job_id)
            return
        except ValueError:
            pass
        key = t.jobs.get(job_id, {}).get("concurrencyKey")
        parked = t.parked.get(key) if key is not None else None
        if parked is not None and job_id in parked:
            parked.remove(job_id)
            return
        t.newer.pop(job_id, None)

    def _add_delayed(self, t: _Task, job_id: str, due: int) -> None:
        t.due[job_id] = due
        heapq.heappush(t.delayed, (due, job_id))

    def _next_due(self, t: _Task) -> int | None:
        while t.delayed:
            due, job_id = t.delayed[0]
            if t.due.get(job_id) == due:
                return due
            heapq.heappop(t.delayed)
        return None

    def _set_marker(self, t: _Task, score: int | None, lower_only: bool = False) -> None:
        if score is None:
            t.marker = None
            return
        if lower_only and t.marker is not None and t.marker <= score:
            return
        t.marker = score
        if t.marker_event is not None:
            t.marker_event.set()

    def _end(
        self,
        task: str,
        t: _Task,
        job_id: str,
        state: str,
        now: int,
        *,
        result: str | None = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> None:
        """End a job, as lib.lua's end sequence does: state and finish time (with its result or
        error), its dedup key released, the event, the terminal set and the end for waiters.
        The caller has already released its lock, active entry and concurrency slot."""
        job = t.jobs[job_id]
        job["state"] = state
        job["finishedOn"] = now
        if result is not None:
            job["result"] = result
        if error is not None:
            job["error"] = error
        if "dedupKey" in job:
            self._release_dedup(t, job["dedupKey"], job_id)
        if error is not None:
            self._emit(t, job_id, state, "error", error)
        elif state == "cancelled":
            self._emit(t, job_id, state, "reason", reason or "")
        else:
            self._emit(t, job_id, state)
        t.finished[state][job_id] = now
        self._notify(task, job_id, Terminal(state, result, error, reason or None), t)

    def _notify(self, task: str, job_id: str, terminal: Terminal, t: _Task | None = None) -> None:
        ends = (t or self._t(task)).ends
        end, result = terminal, terminal.result
        if result is not None and len(result) * 4 > MAX_INLINE_RESULT:  # maybe over, in bytes
            if len(result.encode()) > MAX_INLINE_RESULT:
                end = Terminal("missing", reason="completed, but its large result was trimmed")
        ends.pop(job_id, None)
        ends[job_id] = end
        if len(ends) > DONE_MAXLEN:
            ends.popitem(last=False)
        for future in self._waiters.pop((task, job_id), ()):
            if not future.done():
                future.set_result(terminal)

    def _release_concurrency(self, t: _Task, key: str | None) -> bool:
        """Free a slot of ``key``; its oldest parked job returns to the front of the queue."""
        if key is None:
            return False
        left = t.conc.get(key, 0) - 1
        if left <= 0:
            t.conc.pop(key, None)
        else:
            t.conc[key] = left
        parked = t.parked.get(key)
        if parked:
            job_id = parked.popleft()
            if not parked:
                del t.parked[key]
            job = t.jobs.get(job_id)
            if job is not None and job["state"] == "waiting":
                self._requeue_front(t, job_id, job)
        return True

    def _release_dedup(self, t: _Task, dedup_key: str | None, job_id: str) -> None:
        if dedup_key is not None:
            held = t.flow_keys.get(dedup_key)
            if held is not None and held[0] == job_id:
                del t.flow_keys[dedup_key]

    def _expire(self, task: str, t: _Task, job_id: str, now: int) -> None:
        self._end(task, t, job_id, "expired", now)

    def _fail_malformed(self, task: str, t: _Task, job_id: str, reason: str, now: int) -> None:
        """A job whose stored form is unusable ends failed with a reason (lib.lua's
        fail_malformed; docs/design.md#decisions, 4): only data poked into the tables can be."""
        error = "malformed job: " + reason
        t.active.pop(job_id, None)
        self._end(task, t, job_id, "failed", now, error=error)

    def _promote(self, task: str, t: _Task, now: int) -> None:
        if not t.delayed:
            return
        for _ in range(PROMOTE_BATCH):
            due = self._next_due(t)
            if due is None or due > now:
                return
            _, job_id = heapq.heappop(t.delayed)
            del t.due[job_id]
            job = t.jobs.get(job_id)
            if job is None or job["state"] not in ("delayed", "retrying"):
                continue
            if "collectKey" in job and job["state"] == "delayed":
                if not collect_drain(self, task, t, job_id, job["collectKey"], now):
                    continue  # an empty batch: it ended cancelled
            expire_at = job.get("expireAt")
            if expire_at is not None and not isinstance(expire_at, int):
                self._fail_malformed(task, t, job_id, "expireAt is not a number", now)
            elif not isinstance(job.get("priority"), int):
                self._fail_malformed(task, t, job_id, "priority is not a number", now)
            elif expire_at is not None and expire_at <= now:
                self._expire(task, t, job_id, now)
            else:
                self._requeue(t, job_id, job["priority"], now, arrival=True)
                job["state"] = "waiting"
                self._emit(t, job_id, "promoted")

    def _claim_any(
        self,
        task: str,
        t: _Task,
        now: int,
        want: int,
        options: ClaimOptions,
        token_base: str,
        reserve: int,
    ) -> tuple[list[Claimed], bool, bool]:
        """``_claim``, or at once nothing when nothing is queued (a singleton's gate matters
        to ``_rearm`` only when something is)."""
        if not (t.wait or t.prio_score or t.newer):
            return [], False, False
        return self._claim(task, t, now, want, options, token_base, reserve)

    def _claim(
        self,
        task: str,
        t: _Task,
        now: int,
        want: int,
        options: ClaimOptions,
        token_base: str,
        reserve: int = 0,
    ) -> tuple[list[Claimed], bool, bool]:
        """Claim up to ``want`` jobs (+ ``reserve`` ahead). Returns the jobs, whether the
        singleton gate held, and whether a job was parked for a newer worker."""
        out: list[Claimed] = []
        max_v = options.version
        parked_newer = False
        reserve = 0 if options.singleton else reserve
        if want + reserve <= 0:
            return out, False, False
        if options.singleton:  # at most one active job of the task
            if want <= 0:
                return out, False, False
            if t.active:
                return out, True, False
            want = 1
        total = want + reserve
        pops = 0
        older = _parked_for(t, max_v, total) if t.newer else []
        while len(out) < total and pops < total + 100:
            popped = _unpark(t, older) if older else self._pop_waiting(t)
            if popped is None:
                break
            job_id, score = popped
            pops += 1
            job = t.jobs.get(job_id)
            if job is None or job["state"] != "waiting":
                continue
            expire_at = job.get("expireAt")
            key = job.get("concurrencyKey")
            malformed = _malformed(job)
            if malformed is not None:
                self._fail_malformed(task, t, job_id, malformed, now)
            elif expire_at is not None and expire_at <= now:
                self._expire(task, t, job_id, now)
            elif max_v > 0 and job["_v"] > max_v:
                t.newer_seq += 1
                t.newer[job_id] = (job["_v"], t.newer_seq)
                parked_newer = True
            elif key is not None and t.conc.get(key, 0) >= job["concurrencyLimit"]:
                t.parked.setdefault(key, deque()).append(job_id)  # waits for its key's slot
            elif len(out) >= want and (key is not None or expire_at is not None):
                self._put_back(t, job_id, score)  # never claimed ahead: stop here
                break
            else:
                out.append(self._hold(t, job_id, score, now, len(out) >= want, options, token_base))
        return out, False, parked_newer

    def _put_back(self, t: _Task, job_id: str, score: float | None) -> None:
        """Undo a pop: the job goes back exactly where it was."""
        if score is not None:
            self._add_prioritized(t, job_id, score)
        else:
            t.wait.append(job_id)

    def _hold(
        self,
        t: _Task,
        job_id: str,
        score: float | None,
        now: int,
        ahead: bool,
        options: ClaimOptions,
        token_base: str,
    ) -> Claimed:
        """Lock a claimed job for the worker: active now, or reserved (claimed ahead)."""
        job = t.jobs[job_id]
        self._token_seq += 1
        token = f"{token_base}:{self._token_seq}"
        t.locks[job_id] = (token, now + options.lock_ttl_ms)
        if ahead:
            if score is None:  # a plain job's rank: a claim sequence number (lib.lua)
                t.reserved_seq += 1
                score = t.reserved_seq
            t.reserved[job_id] = score
        else:
            key = job.get("concurrencyKey")
            if key is not None:
                t.conc[key] = t.conc.get(key, 0) + 1
            t.active[job_id] = None
            job["state"] = "active"
            job["processedOn"] = now
            self._emit(t, job_id, "active")
        data, version, attempt, ts = job["data"], job["_v"], job["attempt"], job["ts"]
        return Claimed(job_id, data, version, attempt, ts, token, None, ahead, job.get("trace"))

    def _rearm(
        self, t: _Task, now: int, gated: bool, released: bool, parked_newer: bool = False
    ) -> None:
        if t.wait or t.prio_score or parked_newer:  # a job parked for a newer worker: wake one
            self._set_marker(t, now + 1000 if gated and not released else 0)
            return
        self._set_marker(t, self._next_due(t))

    def _count_minute(self, t: _Task, now: int, completed: int, failed: int) -> None:
        """The per-minute metric counters (``metrics:*:<minute>`` in finish_claim.lua),
        kept one day."""
        minute = now // 60_000 * 60_000
        counts = t.metrics.get(minute)
        if counts is None:  # a new minute: drop the ones over a day old (oldest first:
            # minutes are added in time order, so this stops at the first one kept)
            while t.metrics:
                oldest = next(iter(t.metrics))
                if oldest >= minute - METRICS_KEEP_MS:
                    break
                del t.metrics[oldest]
            counts = t.metrics[minute] = [0, 0]
        counts[0] += completed
        counts[1] += failed

    def _trim_count(self, t: _Task, state: str, keep: int, budget: int) -> None:
        finished = t.finished[state]
        if len(finished) - keep <= keep // 100:  # the 1 % slack of finish_claim.lua
            return
        over = min(len(finished) - keep, budget)
        for _ in range(max(over, 0)):
            job_id, _ = finished.popitem(last=False)
            self._delete(t, job_id)

    def _delete(self, t: _Task, job_id: str) -> None:
        t.jobs.pop(job_id, None)
        t.logs.pop(job_id, None)
        t.locks.pop(job_id, None)

    # -- producer -----------------------------------------------------------------------
    async def enqueue(self, task: str, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        return self._enqueue(task, jobs)

    def _enqueue(self, task: str, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        t = self._t(task)
        now = self.now_ms()
        results = []
        waiting, min_due = False, None
        for new in jobs:
            if new.id in t.jobs:
                results.append(EnqueueResult(True))
                continue
            self._create(t, new, now)
            if new.delay_ms > 0:
                due = now + new.delay_ms
                min_due = due if min_due is None else min(min_due, due)
            else:
                waiting = True
            results.append(EnqueueResult(True))
        if waiting:
            self._set_marker(t, 0)
        elif min_due is not None:
            self._set_marker(t, min_due, lower_only=True)
        return results

    def enqueue_now(
        self,
        task: str,
        jobs: Sequence[NewJob],
        settle: Callable[[list[EnqueueResult] | BaseException], None],
    ) -> bool:
        try:
            results = self._enqueue(task, jobs)
        except Exception as exc:  # settled as an error: the caller's retrying path reports it
            settle(exc)
        else:
            settle(results)
        return True

    def _create(
        self,
        t: _Task,
        new: NewJob,
        now: int,
        extra: dict[str, Any] | None = None,
        event: bool = True,
    ) -> None:
        job: Job = {
            "ts": now,
            "_v": new.version,
            "attempt": 1,
            "maxAttempts": new.max_attempts,
            "state": "delayed" if new.delay_ms > 0 else "waiting",
            "priority": new.priority,
            "data": new.data,
        }
        if new.delay_ms > 0:
            job["delay"] = new.delay_ms
        if new.ttl_ms > 0:
            job["expireAt"] = now + new.ttl_ms
        if new.concurrency_key:
            job["concurrencyKey"] = new.concurrency_key
            job["concurrencyLimit"] = new.concurrency_limit
        if new.trace:
            job["trace"] = new.trace
        if extra:
            job.update(extra)
        t.jobs[new.id] = job
        if new.delay_ms > 0:
            self._add_delayed(t, new.id, now + new.delay_ms)
        else:
            self._requeue(t, new.id, new.priority, now, arrival=True)
        if event:  # a creation event (a collect batch job gets its own: memory_collect)
            self._emit(t, new.id, job["state"])

    async def enqueue_flow(self, task: str, job: NewJob, flow: Flow) -> EnqueueResult:
        if flow.kind == "collect":
            return collect_push(self, task, job, flow)
        return enqueue_flow(self, task, job, flow)

    async def collect_push(
        self, task: str, items: Sequence[tuple[NewJob, Flow]]
    ) -> list[EnqueueResult]:
        return [collect_push(self, task, job, flow) for job, flow in items]

    async def collect_peek(self, task: str, key: str) -> list[str]:
        buffer = self._t(task).collect.get(key)
        return [] if buffer is None else list(buffer.items)

    async def collect_info(self, task: str, key: str) -> tuple[int, int, int] | None:
        buffer = self._t(task).collect.get(key)
        if buffer is None or not buffer.items:
            return None
        return len(buffer.items), buffer.first_at, buffer.last_at

    # -- worker ---------------------------------------------------------------------------
    async def finish_and_claim(
        self,
        task: str,
        outcomes: Sequence[Outcome],
        claim: int,
        options: ClaimOptions,
        token_base: str,
        reserve: int = 0,
    ) -> FinishReport:
        refused, claimed = self.finish_and_claim_now(
            task, outcomes, claim, options, token_base, reserve
        )
        return FinishReport(tuple(refused), tuple(claimed))

    def finish_and_claim_now(
        self,
        task: str,
        outcomes: Sequence[Outcome],
        claim: int,
        options: ClaimOptions,
        token_base: str,
        reserve: int = 0,
    ) -> tuple[list[str], list[Claimed]]:
        """``finish_and_claim`` as the plain call it is here, its report as two lists: the
        outcomes refused and the jobs claimed (``taskora.testing`` makes two a job)."""
        t = self._t(task)
        now = self.clock()
        refused: list[str] = []
        released = False
        n_completed = n_failed = 0
        for o in outcomes:
            lock = t.locks.get(o.id)
            job = t.jobs.get(o.id)
            if lock is None or lock[0] != o.token or lock[1] <= now or job is None:
                refused.append(o.id)
                continue
            if o.kind == "start" or o.id in t.reserved:
                if not self._reserved_outcome(t, o, job, now, options):
                    refused.append(o.id)
                released = released or o.kind != "start"
                continue
            del t.locks[o.id]
            t.active.pop(o.id, None)
            if self._release_concurrency(t, job.get("concurrencyKey")):
                released = True
            if o.kind == "completed":
                self._end(task, t, o.id, "completed", now, result=o.result or "")
                n_completed += 1
            elif o.kind == "retry":
                job["attempt"] += 1
                job.update(state="retrying", error=o.error or "")
                self._add_delayed(t, o.id, now + o.retry_delay_ms)
                self._emit(
                    t, o.id, "retrying", "attempt", job["attempt"],
                    "nextAttemptAt", now + o.retry_delay_ms, "error", o.error or "",
                )  # fmt: skip
            elif o.kind == "failed":
                self._end(task, t, o.id, "failed", now, error=o.error or "")
                n_failed += 1
            elif o.kind == "cancelled":
                self._end(task, t, o.id, "cancelled", now, reason=job.get("cancelReason"))
            else:
                job["state"] = "waiting"
                self._requeue_front(t, o.id, job)
                released = True
                self._emit(t, o.id, "waiting")
        if n_completed or n_failed:
            self._count_minute(t, now, n_completed, n_failed)
        if n_completed:
            self._trim_count(t, "completed", options.keep_completed, 2 * n_completed + 10)
        if n_failed:
            self._trim_count(t, "failed", options.keep_failed, 2 * n_failed + 10)
        self._promote(task, t, now)
        claimed, gated, parked_newer = self._claim_any(
            task, t, now, claim, options, token_base, reserve
        )
        self._rearm(t, now, gated, released, parked_newer)
        return refused, claimed

    def _reserved_outcome(
        self, t: _Task, o: Outcome, job: Job, now: int, options: ClaimOptions
    ) -> bool:
        """A start, or any other outcome for a job still claimed ahead (it goes back to the
        front). False: refused."""
        if o.kind != "start":
            del t.reserved[o.id]
            del t.locks[o.id]
            self._requeue_front(t, o.id, job)
            return True
        if t.reserved.pop(o.id, None) is None:
            return bool(job["state"] == "active")  # started already (a retried call), else refused
        t.locks[o.id] = (o.token, now + options.lock_ttl_ms)
        t.active[o.id] = None
        job.update(state="active", processedOn=now)
        self._emit(t, o.id, "active")
        return True

    async def wait_for_work(
        self,
        task: str,
        timeout_s: float,
        claim: int,
        options: ClaimOptions,
        token_base: str,
        reserve: int = 0,
    ) -> tuple[Claimed, ...]:
        await self._wait_marker(task, timeout_s)
        report = await self.finish_and_claim(task, (), claim, options, token_base, reserve)
        return report.claimed

    async def _wait_marker(self, task: str, timeout_s: float) -> None:
        t = self._t(task)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if t.marker is None:
            if not await self._marker_wait(t, timeout_s):
                return
        score, t.marker = t.marker, None  # BZPOPMIN
        wait_ms = (score or 0) - self.now_ms()
        if wait_ms > 0:
            remaining = min(wait_ms / 1000, max(0.0, deadline - loop.time()))
            if t.marker is None and remaining > 0:
                await self._marker_wait(t, remaining)
            t.marker = None if t.marker is not None and t.marker <= self.now_ms() else t.marker

    async def _marker_wait(self, t: _Task, timeout_s: float) -> bool:
        event = t.marker_event
        if event is None:
            event = t.marker_event = asyncio.Event()
        event.clear()
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return False
        return t.marker is not None

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
        return None  # in-process: nothing to save

    async def extend_locks(
        self, task: str, held: Sequence[tuple[str, str]], lock_ttl_ms: int
    ) -> list[int]:
        t = self._t(task)
        now = self.now_ms()
        out = []
        for job_id, token in held:
            lock = t.locks.get(job_id)
            if lock is None or lock[0] != token or lock[1] <= now:
                out.append(0)
                continue
            t.locks[job_id] = (token, now + lock_ttl_ms)
            t.stalled.discard(job_id)
            out.append(-1 if "cancelledAt" in t.jobs.get(job_id, {}) else 1)
        return out

    async def stalled_check(self, task: str, max_count: int) -> StallReport:
        t = self._t(task)
        now = self.now_ms()
        recovered, failed, cancelled, returned = [], [], [], []
        released = False
        for job_id in sorted(t.reserved, key=t.reserved.__getitem__, reverse=True):
            lock = t.locks.get(job_id)
            if lock is not None and lock[1] > now:
                continue
            del t.reserved[job_id]  # claimed ahead by a dead worker: back in front, no stall
            t.locks.pop(job_id, None)
            job = t.jobs.get(job_id)
            if job is not None and job["state"] == "waiting":
                self._requeue_front(t, job_id, job)
                released = True
                returned.append(job_id)
        for job_id in list(t.stalled):
            t.stalled.discard(job_id)
            lock = t.locks.get(job_id)
            if lock is not None and lock[1] > now:
                continue
            t.locks.pop(job_id, None)
            job = t.jobs.get(job_id)
            if job is None or job["state"] != "active":
                t.active.pop(job_id, None)
                continue
            t.active.pop(job_id, None)
            self._release_concurrency(t, job.get("concurrencyKey"))
            released = True
            if "cancelledAt" in job:
                self._end(task, t, job_id, "cancelled", now, reason=job.get("cancelReason"))
                cancelled.append(job_id)
                continue
            job["stalledCount"] = job.get("stalledCount", 0) + 1
            if job["stalledCount"] > max_count:
                count = job["stalledCount"]
                self._emit(t, job_id, "stalled", "count", count, "action", "failed")
                self._end(task, t, job_id, "failed", now, error=STALL_MESSAGE)
                failed.append(job_id)
            else:
                job["state"] = "waiting"
                self._requeue_front(t, job_id, job)
                count = job["stalledCount"]
                self._emit(t, job_id, "stalled", "count", count, "action", "recovered")
                recovered.append(job_id)
        t.stalled.update(t.active)
        if released:
            self._rearm(t, now, False, True)
        return StallReport(tuple(recovered), tuple(failed), tuple(cancelled), tuple(returned))

    async def trim(self, task: str, retention: Retention) -> int:
        t = self._t(task)
        now = self.now_ms()
        removed = 0
        r = retention
        for state, age, keep in (
            ("completed", r.completed_age_ms, r.completed_max),
            ("failed", r.failed_age_ms, r.failed_max),
            ("cancelled", r.failed_age_ms, r.failed_max),
            ("expired", r.failed_age_ms, r.failed_max),
        ):
            finished = t.finished[state]
            cutoff = now - age
            while finished and (next(iter(finished.values())) <= cutoff or len(finished) > keep):
                job_id, _ = finished.popitem(last=False)
                self._delete(t, job_id)
                removed += 1
        return removed

    async def subscribe_cancel(self, task: str, listener: CancelListener) -> None:
        self._cancel_listeners[task] = listener

    async def unsubscribe_cancel(self, task: str) -> None:
        self._cancel_listeners.pop(task, None)

    async def set_progress(self, task: str, job_id: str, value: str) -> None:
        t = self._t(task)
        job = t.jobs.get(job_id)
        if job is not None:
            job["progress"] = value
        self._emit(t, job_id, "progress", "value", value)

    async def add_logs(self, task: str, job_id: str, entries: Sequence[str]) -> None:
        logs = self._t(task).logs.setdefault(job_id, [])
        logs.extend(entries)
        del logs[:-10000]

    # -- results and inspection --------------------------------------------------------------
    async def get_snapshot(self, task: str, job_id: str) -> JobSnapshot:
        job = self._t(task).jobs.get(job_id)
        if job is None:
            return JobSnapshot(None)
        return JobSnapshot(job["state"], job.get("progress"))

    async def get_logs(self, task: str, job_id: str) -> list[str]:
        return list(self._t(task).logs.get(job_id, ()))

    async def cancel(self, task: str, job_id: str, reason: str | None) -> str:
        t = self._t(task)
        job = t.jobs.get(job_id)
        if job is None:
            return "not_cancellable"
        now = self.now_ms()
        state = job["state"]
        if state in ("waiting", "delayed", "retrying"):
            if state == "waiting":
                self._remove_waiting(t, job_id)
            else:
                t.due.pop(job_id, None)
            job["cancelReason"] = reason or ""
            self._end(task, t, job_id, "cancelled", now, reason=reason)
            return "cancelled"
        if state == "active":
            job.update(cancelledAt=now, cancelReason=reason or "")
            self._tell(task, job_id)
            return "flagged"
        return "not_cancellable"

    async def wait_terminal(
        self, task: str, job_id: str, timeout_s: float | None, event_id: str | None
    ) -> Terminal | None:
        t = self._t(task)
        job = t.jobs.get(job_id)
        if job is None:  # trimmed, its end still readable while kept (as on Redis)
            return t.ends.get(job_id) or Terminal("missing", reason="no such job")
        state = job["state"]
        if state in ("completed", "failed", "cancelled", "expired"):
            return Terminal(
                state,
                result=job.get("result"),
                error=job.get("error"),
                reason=job.get("cancelReason") or None,
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Terminal] = loop.create_future()
        key = (task, job_id)
        self._waiters.setdefault(key, []).append(future)
        expiry = None
        if job.get("expireAt") is not None and state != "active":
            # nobody may claim it before its ttl passes: end it then, so the wait ends too
            delay = max(0.0, (job["expireAt"] - self.now_ms()) / 1000)
            expiry = loop.call_later(delay, self._expire_due, task, job_id)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return None
        finally:
            if expiry is not None:
                expiry.cancel()
            futures = self._waiters.get(key)
            if futures is not None and future in futures:
                futures.remove(future)
                if not futures:
                    del self._waiters[key]

    def _expire_due(self, task: str, job_id: str) -> None:
        t = self._t(task)
        job = t.jobs.get(job_id)
        now = self.now_ms()
        if job is None or job.get("expireAt") is None or job["expireAt"] > now:
            return
        if job["state"] == "waiting":
            self._remove_waiting(t, job_id)
        elif job["state"] in ("delayed", "retrying"):
            t.due.pop(job_id, None)
        else:
            return
        self._expire(task, t, job_id, now)

    async def counts(self, task: str) -> dict[str, int]:
        t = self._t(task)
        counts = {
            "waiting": t.waiting_count(),
            "delayed": len(t.due),
            "active": len(t.active),
        }
        counts.update({state: len(ids) for state, ids in t.finished.items()})
        return counts

    async def parked_versions(self, task: str) -> dict[int, int]:
        counts: dict[int, int] = {}
        for v, _ in self._t(task).newer.values():
            counts[v] = counts.get(v, 0) + 1
        return counts

    async def list_jobs(
        self, task: str, state: str, offset: int, limit: int
    ) -> list[tuple[str, dict[str, str]]]:
        t = self._t(task)
        if state in t.finished:
            ids = list(reversed(t.finished[state]))
        elif state == "delayed":
            ids = [job_id for _, job_id in sorted((due, j) for j, due in t.due.items())]
        elif state == "active":  # by dispatch time, as on Redis
            ids = sorted(t.active, key=lambda j: int(t.jobs.get(j, {}).get("ts", 0)))
        elif state == "waiting":  # claim order; claimed-ahead jobs merge by score (lib.lua)
            scored = list(t.prio_score.items()) + list(t.reserved.items())
            ids = [j for _, j in sorted((score, j) for j, score in scored)]
            ids += list(reversed(t.wait))
            ids = [j for j in ids if t.jobs.get(j, {}).get("state") == "waiting"]
        else:
            from ..errors import ConfigError

            raise ConfigError(f"unknown state {state!r}")
        return [
            (job_id, {k: str(v) for k, v in t.jobs[job_id].items()})
            for job_id in ids[offset : offset + limit]
            if job_id in t.jobs
        ]

    # -- workflows (memory_workflows.py) -------------------------------------------------------
    async def workflow_create(self, wf_id: str, plan: WorkflowPlan) -> bool:
        return self.workflows.create(wf_id, plan)

    async def workflow_started(self, wf_id: str) -> None:
        self.workflows.started(wf_id)

    async def workflow_advance(
        self, wf_id: str, node: int, result: str, keep_ms: int
    ) -> WorkflowAdvance:
        return self.workflows.advance(wf_id, node, result, keep_ms)

    async def workflow_end(
        self, wf_id: str, state: str, node: int, message: str, keep_ms: int
    ) -> list[tuple[int, str]]:
        return self.workflows.end(wf_id, state, node, message, keep_ms)

    async def workflow_read(self, wf_id: str) -> WorkflowInfo | None:
        return self.workflows.read(wf_id)

    async def workflow_wait(self, wf_id: str, timeout_s: float | None) -> Terminal | None:
        return await self.workflows.wait(wf_id, timeout_s)

    async def workflow_due(self, limit: int) -> list[str]:
        return self.workflows.due(limit)

    async def workflow_undue(self, wf_ids: Sequence[str]) -> None:
        self.workflows.undue(wf_ids)

    async def workflow_ids(self, limit: int) -> list[str]:
        return self.workflows.ids(limit)

    async def workflow_records(
        self, wf_ids: Sequence[str], nodes: bool = False
    ) -> list[WorkflowRecord | None]:
        return [self.workflows.record(wf_id, nodes) for wf_id in wf_ids]

    async def server_info(self) -> dict[str, Any]:
        return {"backend": "memory"}

    # -- the worker registry (redis/lua/worker_beat.lua) --------------------------------------
    async def worker_beat(self, worker_id: str, record: str, ttl_ms: int) -> None:
        now = self.clock()
        for gone in [w for w, (_, until) in self.worker_entries.items() if until <= now]:
            del self.worker_entries[gone]
        if record:
            self.worker_entries[worker_id] = (record, now + ttl_ms)
        else:
            self.worker_entries.pop(worker_id, None)

    async def worker_list(self) -> list[tuple[str, str, int]]:
        now = self.clock()
        return [(w, rec, until) for w, (rec, until) in self.worker_entries.items() if until > now]

    # -- schedules (memory_schedules.py) ------------------------------------------------------
    async def schedule_lock(self, token: str, ttl_ms: int, release: bool = False) -> bool:
        return self.schedules.lock(token, ttl_ms, release)

    async def schedule_due(
        self, token: str, limit: int
    ) -> tuple[int, list[tuple[str, int, str]]] | None:
        return self.schedules.due(token, limit)

    async def schedule_read(self, name: str | None) -> list[tuple[str, str, int | None]]:
        return self.schedules.read(name)

    async def schedule_write(
        self, name: str, expect: ScheduleExpect, record: str | None, next_ms: int | None
    ) -> bool:
        return self.schedules.write(name, expect, record, next_ms)

    async def retry_failed(self, task: str, ids: Sequence[str] | None, limit: int) -> list[str]:
        t = self._t(task)
        failed = t.finished["failed"]
        chosen = list(ids) if ids else list(failed)[:limit]
        now = self.now_ms()
        done = []
        for job_id in chosen:
            job = t.jobs.get(job_id)
            if job is None or failed.pop(job_id, None) is None:
                continue
            for name in (
                "error",
                "finishedOn",
                "result",
                "stalledCount",
                "cancelledAt",
                "cancelReason",
                "processedOn",
            ):
                job.pop(name, None)
            job.update(state="waiting", attempt=1, ts=now)
            t.ends.pop(job_id, None)  # it starts over: forget its end (retry_failed.lua)
            self._requeue(t, job_id, job["priority"], now, arrival=True)
            self._emit(t, job_id, "waiting")
            done.append(job_id)
        if done:
            self._set_marker(t, 0)
        return done

    # -- the inspector's reads ---------------------------------------------------------------
    async def task_names(self) -> list[str]:
        return sorted(name for name, t in self._tasks.items() if t.events or t.jobs)

    async def locate(self, tasks: Sequence[str], job_id: str) -> list[str]:
        return [task for task in tasks if job_id in self._t(task).jobs]

    async def job_detail(self, task: str, job_id: str) -> JobDetail | None:
        t = self._t(task)
        job = t.jobs.get(job_id)
        if job is None:
            return None
        events = [
            (int(entry_id.split("-")[0]), fields.get("event", ""))
            for entry_id, fields in t.events
            if fields.get("jobId") == job_id
        ]
        fields = {k: str(v) for k, v in job.items()}
        return JobDetail(fields, list(t.logs.get(job_id, ())), events)

    async def throughput(
        self, task: str, since_ms: int, minutes: int
    ) -> list[tuple[int, int, int]]:
        metrics = self._t(task).metrics
        first = since_ms // 60_000 * 60_000
        out = []
        for i in range(minutes):
            minute = first + i * 60_000
            completed, failed = metrics.get(minute, (0, 0))
            out.append((minute, completed, failed))
        return out

    async def purge(self, task: str, state: str, older_than_ms: int) -> int:
        t = self._t(task)
        if state not in t.finished:
            from ..errors import ConfigError

            raise ConfigError(f"cannot purge jobs in state {state!r}")
        finished = t.finished[state]
        cutoff = self.now_ms() - older_than_ms
        removed = 0
        while finished and next(iter(finished.values())) <= cutoff:
            job_id, _ = finished.popitem(last=False)
            self._delete(t, job_id)
            removed += 1
        return removed

    async def job_fields(self, task: str, job_id: str) -> dict[str, str]:
        job = self._t(task).jobs.get(job_id, {})
        return {k: str(v) for k, v in job.items()}


class _EventSource:
    """The memory backend's event source: entries are handed over as they are written."""

    def __init__(self, backend: MemoryBackend, deliver: Deliver) -> None:
        self.backend = backend
        self._deliver = deliver
        self.tasks: set[str] = set()
        self._pending: list[tuple[str, list[tuple[Fields, Fields]]]] = []
        backend._event_sources.append(self)

    def deliver(self, task: str, entries: list[tuple[Fields, Fields]]) -> None:
        """Called inside a backend step: hand over right after it, never in the middle
        (a listener may dispatch, and a step must look atomic)."""
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((task, entries))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for task, entries in pending:
            self._deliver(task, entries)

    def watch(self, tasks: Iterable[str]) -> None:
        self.tasks = set(tasks)

    async def close(self) -> None:
        self.tasks = set()
        if self in self.backend._event_sources:
            self.backend._event_sources.remove(self)
