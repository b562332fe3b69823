"""One transition suite: every row of docs/design.md#job-states, at the Backend boundary, on
both backends, compared to one expected snapshot of the stored outcome.

Each case drives ``Backend`` methods directly (no App, no worker) and takes snapshots of what
the backend stored: job hashes, the queue or set each id sits in, locks, the marker, the
events and done streams, and the metrics counters. Times are written relative to the step
that made them (``claim``, ``claim+600``): each step runs in its own window of the backend's
clock (the Redis server's TIME, the memory backend's own), so a timestamp names its step.
Redis's stored shapes are the reference (wire format v6); a memory backend that drifts fails
here with a readable diff.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import pprint
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis

import taskora
from taskora.backends.base import (
    Backend,
    Claimed,
    ClaimOptions,
    Flow,
    NewJob,
    Outcome,
    ScheduleExpect,
)
from taskora.backends.keys import task_base
from taskora.backends.memory import MemoryBackend
from taskora.backends.redis import RedisBackend
from taskora.backends.redis.cluster import key_slot
from tests.conftest import url_for

T = TypeVar("T")
TASK = "job"
LOCK_TTL = 150  # ms: short, so a dead worker's lock expires within a test
DELAY = 400
TTL = 250
RETRY = 600
GATED = 1000  # the marker's retry time when a concurrency key or the singleton gate blocks
DELTAS = (LOCK_TTL, TTL, DELAY, RETRY, GATED)
OPTS = ClaimOptions(lock_ttl_ms=LOCK_TTL)
LONG = ClaimOptions(lock_ttl_ms=60_000)


class Harness:
    """Runs steps on one backend and reads what it stored, in one normalized form."""

    def __init__(self, backend: Backend, rdb: aioredis.Redis | None, prefix: str) -> None:
        self.backend = backend
        self.rdb = rdb
        self.base = task_base(prefix, TASK)
        self.marks: list[tuple[str, int, int]] = []
        self.snaps: dict[str, Any] = {}
        self.claimed: dict[str, str] = {}  # id -> token of its latest claim
        self.unordered: set[str] = set()  # steps whose events come in no fixed order

    @property
    def memory(self) -> MemoryBackend:
        assert isinstance(self.backend, MemoryBackend)
        return self.backend

    async def now(self) -> int:
        if self.rdb is None:
            return self.backend.now_ms()
        seconds, micros = await self.rdb.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def step(self, label: str, call: Awaitable[T]) -> T:
        """Run one backend call in its own clock window, named ``label``."""
        assert all(m[0] != label for m in self.marks), label
        lo = await self.now()
        result = await call
        hi = await self.now()
        self.marks.append((label, lo, hi))
        await self._past(hi)
        return result

    async def _past(self, ms: int) -> None:
        """Move the clock strictly past ``ms`` (the next step gets a window of its own)."""
        while await self.now() <= ms:
            await asyncio.sleep(0.002)

    async def advance(self, ms: int) -> None:
        """Let ``ms`` pass on the backend's clock (past a due time, a ttl or a lock)."""
        last = self.marks[-1][2] if self.marks else await self.now()
        await self._past(last + ms + 5)

    # -- the common steps ---------------------------------------------------------------
    async def enqueue(self, label: str, *jobs: NewJob) -> None:
        await self.step(label, self.backend.enqueue(TASK, list(jobs)))

    async def claim(
        self,
        label: str,
        n: int,
        outcomes: tuple[Outcome, ...] = (),
        reserve: int = 0,
        opts: ClaimOptions = OPTS,
    ) -> list[str]:
        report = await self.step(
            label, self.backend.finish_and_claim(TASK, outcomes, n, opts, "w", reserve)
        )
        for c in report.claimed:
            self.claimed[c.id] = c.token
        return [c.id for c in report.claimed] + [f"refused:{r}" for r in report.refused]

    async def corrupt(self, job_id: str, name: str, value: str | None) -> None:
        """Damage a stored job as foreign or truncated data would (design.md#decisions, 4)."""
        if self.rdb is None:
            stored = self.memory._t(TASK).jobs[job_id]
            if value is None:
                del stored[name]
            else:
                stored[name] = value
        elif value is None:
            await self.rdb.hdel(self.base + job_id, name)
        else:
            await self.rdb.hset(self.base + job_id, name, value)

    def out(self, job_id: str, kind: str, **kw: Any) -> Outcome:
        return Outcome(job_id, self.claimed[job_id], kind, **kw)  # type: ignore[arg-type]

    # -- reading what was stored ----------------------------------------------------------
    def t(self, value: object, due: bool = False) -> str:
        """A timestamp as the step that made it: ``claim``, or for a due time (``due``)
        ``claim+600``. Step windows never overlap, so a time of now names one step; a due
        time takes the narrowest window that explains it (a slow step, ``wait``, may span a
        due time that a quick earlier step set)."""
        if not str(value).isdigit():
            return str(value)
        v = int(str(value))
        found = [
            (hi - lo, -i, label if d == 0 else f"{label}+{d}")
            for d in ((*DELTAS, 0) if due else (0,))
            for i, (label, lo, hi) in enumerate(self.marks)
            if lo <= v - d <= hi
        ]
        return min(found)[2] if found else f"?{v}"

    def norm(self, name: str, value: object) -> str:
        text = str(value).replace(self.base, "<base>")
        if name in ("ts", "processedOn", "finishedOn", "cancelledAt"):
            return self.t(text)
        if name in ("expireAt", "nextAttemptAt"):
            return self.t(text, due=True)
        return text

    async def snap(self, name: str, full: bool = True) -> None:
        snap = await (self._redis() if self.rdb is not None else self._memory())
        if not full:
            snap = {k: snap[k] for k in ("counts", "marker") if k in snap}
            snap["counts"] = await self.backend.counts(TASK)
        self.snaps[name] = {k: v for k, v in snap.items() if v not in ({}, [], None, 0)}

    async def _redis(self) -> dict[str, Any]:
        r, b = self.rdb, self.base
        assert r is not None

        async def ids(key: str) -> list[str]:
            return [x.decode() for x in await r.zrange(b + key, 0, -1)]

        jobs: dict[str, dict[str, str]] = {}
        locks = []
        async for raw in r.scan_iter(match=b + "*", count=1000):
            key = raw.decode()[len(b) :]
            if ":" in key or await r.type(raw) != b"hash":
                continue
            h = await r.hgetall(raw)
            jobs[key] = self.job({k.decode(): v.decode() for k, v in h.items()})
            if await r.exists(raw + b":lock"):
                locks.append(key)
        parked: dict[str, list[str]] = {}
        conc: dict[str, int] = {}
        metrics: dict[str, int] = {}
        flows: dict[str, str] = {}
        collect: dict[str, list[str]] = {}
        async for raw in r.scan_iter(match=b + "*:*", count=1000):
            key = raw.decode()[len(b) :]
            kind, _, rest = key.partition(":")
            if kind == "parked":
                parked[rest] = [x.decode() for x in await r.lrange(raw, 0, -1)]
            elif kind == "conc":
                conc[rest] = int(await r.get(raw))
            elif kind in ("dedup", "debounce", "throttle"):
                flows[key] = (
                    (await r.get(raw) or b"").decode() if await r.type(raw) == b"string" else "?"
                )
            elif kind == "collect" and rest.endswith(":items"):
                collect[rest[: -len(":items")]] = [x.decode() for x in await r.lrange(raw, 0, -1)]
            elif kind == "metrics":
                name = rest.partition(":")[0]
                assert 0 < await r.ttl(raw) <= 86400
                metrics[name] = metrics.get(name, 0) + int(await r.get(raw))
        delayed = await r.zrange(b + "delayed", 0, -1, withscores=True)
        marker = await r.zrange(b + "marker", 0, -1, withscores=True)
        done: dict[str, str] = {}
        for _, entry in await r.xrange(b + "done"):
            f = {k.decode(): v.decode() for k, v in entry.items()}
            state = "missing" if f["state"] == "debounced" else f["state"]  # as waiter.py reads it
            done[f["jobId"]] = state + (f" {f['detail']}" if f.get("detail") else "")
        return {
            "jobs": dict(sorted(jobs.items())),
            "wait": [x.decode() for x in await r.lrange(b + "wait", 0, -1)],
            "prioritized": await ids("prioritized"),
            "delayed": [(x.decode(), self.t(int(s), True)) for x, s in delayed],
            "active": [x.decode() for x in await r.lrange(b + "active", 0, -1)],
            "reserved": await ids("reserved"),
            "parked": parked,
            "parked_count": int(await r.get(b + "parked") or 0),
            "conc": conc,
            "locks": sorted(locks),
            "stalled": sorted(x.decode() for x in await r.smembers(b + "stalled")),
            **{s: await ids(s) for s in ("completed", "failed", "cancelled", "expired")},
            "marker": None
            if not marker
            else ("now" if marker[0][1] == 0 else self.t(int(marker[0][1]), True)),
            "events": self._events(
                (i.decode(), {k.decode(): v.decode() for k, v in e.items()})
                for i, e in await r.xrange(b + "events")
            ),
            "done": {k: v for k, v in done.items() if not v.startswith("waiting")},
            "metrics": metrics,
            "flows": dict(sorted(flows.items())),
            "collect": dict(sorted(collect.items())),
        }

    async def _memory(self) -> dict[str, Any]:
        m = self.memory
        t = m._t(TASK)
        now = m.now_ms()
        jobs = {job_id: self.job(job) for job_id, job in t.jobs.items()}
        done = {}
        for job_id, end in t.ends.items():
            detail = end.result if end.result is not None else end.error or end.reason
            done[job_id] = end.state + (f" {detail}" if detail else "")
        metrics: dict[str, int] = {}
        for completed, failed in t.metrics.values():
            for name, count in (("completed", completed), ("failed", failed)):
                if count:
                    metrics[name] = metrics.get(name, 0) + count
        return {
            "jobs": dict(sorted(jobs.items())),
            "wait": list(t.wait),
            "prioritized": [j for _, j in sorted((s, j) for j, s in t.prio_score.items())],
            "delayed": [(j, self.t(d, True)) for d, j in sorted((d, j) for j, d in t.due.items())],
            "active": list(reversed(t.active)),
            "reserved": [j for _, j in sorted((s, j) for j, s in t.reserved.items())],
            "parked": {k: list(v) for k, v in t.parked.items() if v},
            "parked_count": sum(map(len, t.parked.values())),
            "conc": dict(t.conc),
            "locks": sorted(j for j, (_, exp) in t.locks.items() if exp > now),
            "stalled": sorted(t.stalled),
            **{  # a zset: by finish time, then id
                s: [j for _, j in sorted((ms, j) for j, ms in t.finished[s].items())]
                for s in ("completed", "failed", "cancelled", "expired")
            },
            "marker": None
            if t.marker is None
            else ("now" if t.marker == 0 else self.t(t.marker, True)),
            "events": self._events((i, dict(f)) for i, f in t.events),
            "done": done,
            "metrics": metrics,
            "flows": {
                k[len(self.base) :]: v
                for k, (v, exp) in sorted(t.flow_keys.items())
                if exp is None or exp > now
            },
            "collect": {k: list(b.items) for k, b in sorted(t.collect.items()) if b.items},
        }

    def job(self, fields: dict[str, Any]) -> str:
        """A job hash in one line: its state, then the fields that differ from a plain job."""
        plain = {"_v": "1", "maxAttempts": "1", "priority": "0", "data": "1", "attempt": "1"}
        shown = {k: self.norm(k, v) for k, v in fields.items() if k != "state"}
        rest = " ".join(f"{k}={v}" for k, v in sorted(shown.items()) if plain.get(k) != v)
        return f"{fields.get('state')} {rest}"

    def _events(self, entries: Iterable[tuple[str, dict[str, str]]]) -> list[str]:
        """The events stream; the entries of a step in ``unordered`` sorted by job id (a step
        that walks a Redis set visits its ids in no fixed order)."""
        out: list[tuple[str, str, str]] = []
        for entry_id, fields in entries:
            label = self.t(entry_id.partition("-")[0])
            key = fields["jobId"] if label in self.unordered else ""
            out.append((label, key, self._event(fields)))
        if not self.unordered:
            return [text for _, _, text in out]
        # keep step order, sort by job id only inside an unordered step
        result: list[str] = []
        i = 0
        while i < len(out):
            j = i
            while j < len(out) and out[j][0] == out[i][0]:
                j += 1
            group = out[i:j]
            if out[i][0] in self.unordered:
                group = sorted(group, key=lambda e: e[1])
            result += [text for _, _, text in group]
            i = j
        return result

    def _event(self, fields: dict[str, str]) -> str:
        kind, job_id = fields.pop("event"), fields.pop("jobId")
        extra = "".join(f" {k}={self.norm(k, v)}" for k, v in sorted(fields.items()))
        return f"{kind} {job_id}{extra}"


@pytest.fixture(params=["memory", "redis", "redis-evalsha", "cluster"])
async def h(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Harness]:
    if request.param == "memory":
        yield Harness(MemoryBackend(prefix=prefix), None, prefix)
        return
    url = url_for(request)
    backend = RedisBackend(url, prefix=prefix)
    await backend.connect()
    assert backend.client.functions is (request.param != "redis-evalsha")
    if request.param == "cluster":  # every key of the task lives on its slot's master
        owner = request.getfixturevalue("redis_cluster").master_of(
            key_slot(task_base(prefix, TASK))
        )
        rdb = aioredis.Redis(port=owner.port)
    else:
        rdb = aioredis.Redis.from_url(url)
    try:
        yield Harness(backend, rdb, prefix)
    finally:
        await rdb.aclose()
        await backend.close()


def job(job_id: str, **kw: Any) -> NewJob:
    return NewJob(id=job_id, data=kw.pop("data", "1"), **kw)


Case = Callable[[Harness], Awaitable[None]]
CASES: dict[str, Case] = {}
EXPECTED: dict[str, dict[str, Any]] = {}


def case(expected: dict[str, Any]) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[fn.__name__] = fn
        EXPECTED[fn.__name__] = expected
        return fn

    return register


async def run_case(h: Harness, name: str) -> None:
    await CASES[name](h)
    if os.environ.get("TRANSITIONS_PRINT"):  # to write a new case's expected snapshot
        print(f"\n@@{name}@@" + pprint.pformat(h.snaps, width=92, sort_dicts=False))
    if h.snaps != EXPECTED[name]:
        want = pprint.pformat(EXPECTED[name], width=92, sort_dicts=False).splitlines()
        got = pprint.pformat(h.snaps, width=92, sort_dicts=False).splitlines()
        diff = difflib.unified_diff(want, got, "expected", "stored", lineterm="", n=2)
        pytest.fail("stored outcome differs:\n" + "\n".join(diff), pytrace=False)


# -- the cases: one per row (or group of rows) of docs/design.md#job-states ------------------


@case(
    {
        "after": {
            "jobs": {
                "a": "waiting ts=enq",
                "b": "waiting priority=5 ts=enq",
                "c": "delayed delay=400 ts=enq",
                "d": "waiting concurrencyKey=k concurrencyLimit=2 expireAt=enq2+250 ts=enq2",
            },
            "wait": ["d", "a"],
            "prioritized": ["b"],
            "delayed": [("c", "enq+400")],
            "marker": "now",
            "events": ["waiting a", "waiting b", "delayed c", "waiting d"],
        }
    }
)
async def dispatch(h: Harness) -> None:
    """(new) → waiting (list or prioritized) or delayed; ttl and concurrency fields."""
    await h.enqueue("enq", job("a"), job("b", priority=5), job("c", delay_ms=DELAY))
    await h.enqueue("enq2", job("d", ttl_ms=TTL, concurrency_key="k", concurrency_limit=2))
    await h.enqueue("again", job("a", data="2"))  # an existing id is left untouched
    await h.snap("after")


@case(
    {
        "active": {
            "jobs": {"a": "waiting ts=enq", "b": "active priority=3 processedOn=claim ts=enq"},
            "wait": ["a"],
            "active": ["b"],
            "locks": ["b"],
            "marker": "now",
            "events": ["waiting a", "waiting b", "active b"],
        },
        "completed": {
            "jobs": {
                "a": "waiting ts=enq",
                "b": 'completed finishedOn=finish priority=3 processedOn=claim result="ok" ts=enq',
            },
            "wait": ["a"],
            "completed": ["b"],
            "marker": "now",
            "events": ["waiting a", "waiting b", "active b", "completed b"],
            "done": {"b": 'completed "ok"'},
            "metrics": {"completed": 1},
        },
    }
)
async def claim_and_complete(h: Harness) -> None:
    """waiting → active → completed: lock, processedOn, metrics, done, events."""
    await h.enqueue("enq", job("a"), job("b", priority=3))
    assert await h.claim("claim", 1) == ["b"]
    await h.snap("active")
    assert await h.claim("finish", 0, (h.out("b", "completed", result='"ok"'),)) == []
    await h.snap("completed")


@case(
    {
        "failed": {
            "jobs": {"a": "failed error=boom finishedOn=fail processedOn=claim ts=enq"},
            "failed": ["a"],
            "events": ["waiting a", "active a", "failed a error=boom"],
            "done": {"a": "failed boom"},
            "metrics": {"failed": 1},
        },
        "retried": {
            "jobs": {"a": "waiting ts=retry"},
            "wait": ["a"],
            "marker": "now",
            "events": ["waiting a", "active a", "failed a error=boom", "waiting a"],
            "metrics": {"failed": 1},
        },
    }
)
async def fail_and_dead_letter_retry(h: Harness) -> None:
    """active → failed; failed → waiting by dead-letter retry (attempt 1, fresh ts)."""
    await h.enqueue("enq", job("a", max_attempts=1))
    await h.claim("claim", 1)
    await h.claim("fail", 0, (h.out("a", "failed", error="boom"),))
    await h.snap("failed")
    assert await h.step("retry", h.backend.retry_failed(TASK, None, 10)) == ["a"]
    await h.snap("retried")


@case(
    {
        "retrying": {
            "jobs": {"a": "retrying attempt=2 error=boom maxAttempts=3 processedOn=claim ts=enq"},
            "delayed": [("a", "retry+600")],
            "marker": "retry+600",
            "events": [
                "waiting a",
                "active a",
                "retrying a attempt=2 error=boom nextAttemptAt=retry+600",
            ],
        },
        "promoted": {
            "jobs": {"a": "waiting attempt=2 error=boom maxAttempts=3 processedOn=claim ts=enq"},
            "wait": ["a"],
            "marker": "now",
            "events": [
                "waiting a",
                "active a",
                "retrying a attempt=2 error=boom nextAttemptAt=retry+600",
                "promoted a",
            ],
        },
        "attempt2": {
            "jobs": {"a": "active attempt=2 error=boom maxAttempts=3 processedOn=claim2 ts=enq"},
            "active": ["a"],
            "locks": ["a"],
            "events": [
                "waiting a",
                "active a",
                "retrying a attempt=2 error=boom nextAttemptAt=retry+600",
                "promoted a",
                "active a",
            ],
        },
    }
)
async def retry_then_promotion(h: Harness) -> None:
    """active → retrying (delayed, due after backoff) → waiting at the due time → active."""
    await h.enqueue("enq", job("a", max_attempts=3))
    await h.claim("claim", 1)
    await h.claim("retry", 0, (h.out("a", "retry", error="boom", retry_delay_ms=RETRY),))
    await h.snap("retrying")
    await h.claim("early", 0)  # not due yet: nothing moves
    await h.advance(RETRY)
    await h.claim("promote", 0)
    await h.snap("promoted")
    assert await h.claim("claim2", 1) == ["a"]
    await h.snap("attempt2")


@case(
    {
        "flagged": {
            "jobs": {
                "act": "active cancelReason=stop cancelledAt=cancel-act processedOn=claim ts=enq",
                "d": "cancelled cancelReason=why delay=400 finishedOn=cancel-d ts=enq2",
                "res": "cancelled cancelReason=why finishedOn=cancel-res ts=enq",
                "ret": "cancelled attempt=2 cancelReason=why error=x "
                "finishedOn=cancel-ret maxAttempts=2 processedOn=claim ts=enq",
                "w": "cancelled cancelReason=why finishedOn=cancel-w ts=enq2",
            },
            "active": ["act"],
            "locks": ["act"],
            "cancelled": ["w", "d", "ret", "res"],
            "marker": "now",
            "events": [
                "waiting act",
                "waiting ret",
                "waiting res",
                "waiting w",
                "delayed d",
                "active act",
                "active ret",
                "retrying ret attempt=2 error=x nextAttemptAt=retry+600",
                "cancelled w reason=why",
                "cancelled d reason=why",
                "cancelled ret reason=why",
                "cancelled res reason=why",
            ],
            "done": {
                "w": "cancelled why",
                "d": "cancelled why",
                "ret": "cancelled why",
                "res": "cancelled why",
            },
        },
        "after": {
            "jobs": {
                "act": "cancelled cancelReason=stop cancelledAt=cancel-act "
                "finishedOn=ack processedOn=claim ts=enq",
                "d": "cancelled cancelReason=why delay=400 finishedOn=cancel-d ts=enq2",
                "res": "cancelled cancelReason=why finishedOn=cancel-res ts=enq",
                "ret": "cancelled attempt=2 cancelReason=why error=x "
                "finishedOn=cancel-ret maxAttempts=2 processedOn=claim ts=enq",
                "w": "cancelled cancelReason=why finishedOn=cancel-w ts=enq2",
            },
            "cancelled": ["w", "d", "ret", "res", "act"],
            "events": [
                "waiting act",
                "waiting ret",
                "waiting res",
                "waiting w",
                "delayed d",
                "active act",
                "active ret",
                "retrying ret attempt=2 error=x nextAttemptAt=retry+600",
                "cancelled w reason=why",
                "cancelled d reason=why",
                "cancelled ret reason=why",
                "cancelled res reason=why",
                "cancelled act reason=stop",
            ],
            "done": {
                "w": "cancelled why",
                "d": "cancelled why",
                "ret": "cancelled why",
                "res": "cancelled why",
                "act": "cancelled stop",
            },
        },
    }
)
async def cancel_in_each_state(h: Harness) -> None:
    """waiting, delayed, retrying and reserved → cancelled at once; active → flagged, then
    cancelled by its worker's outcome; a finished job is not cancellable."""
    await h.enqueue("enq", job("act"), job("ret", max_attempts=2), job("res"))
    await h.enqueue("enq2", job("w"), job("d", delay_ms=DELAY))
    # locks that outlive the steps below on a loaded machine (150 ms did not: the ack was
    # refused as a lost lock and "act" stayed flagged)
    assert await h.claim("claim", 2, reserve=1, opts=LONG) == ["act", "ret", "res"]
    await h.claim("retry", 0, (h.out("ret", "retry", error="x", retry_delay_ms=RETRY),))
    for job_id in ("w", "d", "ret", "res"):
        assert (
            await h.step(f"cancel-{job_id}", h.backend.cancel(TASK, job_id, "why")) == "cancelled"
        )
    assert await h.step("cancel-act", h.backend.cancel(TASK, "act", "stop")) == "flagged"
    await h.snap("flagged")
    assert await h.claim("start-res", 0, (h.out("res", "start"),)) == ["refused:res"]
    await h.claim("ack", 0, (h.out("act", "cancelled"),))
    assert await h.step("again", h.backend.cancel(TASK, "act", None)) == "not_cancellable"
    await h.snap("after")


@case(
    {
        "held": {
            "jobs": {
                "a": "active processedOn=claim ts=enq",
                "b": "active processedOn=claim ts=enq",
                "c": "waiting ts=enq",
                "d": "waiting ts=enq",
                "e": "waiting ts=enq",
            },
            "wait": ["e"],
            "active": ["b", "a"],
            "reserved": ["c", "d"],
            "locks": ["a", "b", "c", "d"],
            "marker": "now",
            "events": [
                "waiting a",
                "waiting b",
                "waiting c",
                "waiting d",
                "waiting e",
                "active a",
                "active b",
            ],
        },
        "released": {
            "jobs": {
                "a": "waiting processedOn=claim ts=enq",
                "b": "waiting processedOn=claim ts=enq",
                "c": "waiting processedOn=start ts=enq",
                "d": "waiting ts=enq",
                "e": "waiting ts=enq",
            },
            "wait": ["e", "d", "c", "b", "a"],
            "marker": "now",
            "events": [
                "waiting a",
                "waiting b",
                "waiting c",
                "waiting d",
                "waiting e",
                "active a",
                "active b",
                "active c",
                "waiting c",
                "waiting b",
                "waiting a",
            ],
        },
    }
)
async def release_to_the_front(h: Harness) -> None:
    """active → waiting at the front (release); reserved → front, in claim order; start."""
    await h.enqueue("enq", job("a"), job("b"), job("c"), job("d"), job("e"))
    assert await h.claim("claim", 2, reserve=2) == ["a", "b", "c", "d"]
    await h.snap("held")
    await h.claim("start", 0, (h.out("c", "start"),))
    outs = tuple(h.out(j, "release") for j in ("d", "c", "b", "a"))  # last claimed first
    await h.claim("release", 0, outs)
    await h.snap("released")


@case(
    {
        "call0": {
            "marker": "now",
            "counts": {
                "waiting": 200,
                "delayed": 250,
                "active": 0,
                "completed": 0,
                "failed": 0,
                "cancelled": 0,
                "expired": 0,
            },
        },
        "call1": {
            "marker": "now",
            "counts": {
                "waiting": 400,
                "delayed": 50,
                "active": 0,
                "completed": 0,
                "failed": 0,
                "cancelled": 0,
                "expired": 0,
            },
        },
        "call2": {
            "marker": "now",
            "counts": {
                "waiting": 450,
                "delayed": 0,
                "active": 0,
                "completed": 0,
                "failed": 0,
                "cancelled": 0,
                "expired": 0,
            },
        },
    }
)
async def promotion_batches(h: Harness) -> None:
    """At most 200 due jobs are promoted per call: 450 take three calls."""
    await h.enqueue("enq", *(job(f"j{i:03}", delay_ms=DELAY) for i in range(450)))
    await h.advance(DELAY)
    for i in range(3):
        await h.claim(f"promote{i}", 0)
        await h.snap(f"call{i}", full=False)


@case(
    {
        "expired": {
            "jobs": {
                "d": "expired delay=400 expireAt=enq+250 finishedOn=claim ts=enq",
                "w": "expired expireAt=enq+250 finishedOn=claim ts=enq",
            },
            "expired": ["d", "w"],
            "events": ["waiting w", "delayed d", "expired d", "expired w"],
            "done": {"d": "expired", "w": "expired"},
        },
        "waited": {
            "jobs": {
                "d": "expired delay=400 expireAt=enq+250 finishedOn=claim ts=enq",
                "w": "expired expireAt=enq+250 finishedOn=claim ts=enq",
                "x": "expired expireAt=enq2+250 finishedOn=wait ts=enq2",
            },
            "expired": ["d", "w", "x"],
            "marker": "now",
            "events": [
                "waiting w",
                "delayed d",
                "expired d",
                "expired w",
                "waiting x",
                "expired x",
            ],
            "done": {"d": "expired", "w": "expired", "x": "expired"},
        },
    }
)
async def expiry(h: Harness) -> None:
    """waiting → expired at claim; delayed → expired at promotion; waiting → expired by a
    result waiter that saw the past expireAt (expire_due)."""
    await h.enqueue("enq", job("w", ttl_ms=TTL), job("d", delay_ms=DELAY, ttl_ms=TTL))
    await h.advance(DELAY)
    assert await h.claim("claim", 1) == []
    await h.snap("expired")
    await h.enqueue("enq2", job("x", ttl_ms=TTL))
    end = await h.step("wait", h.backend.wait_terminal(TASK, "x", 10, None))
    assert end is not None and end.state == "expired"
    await h.snap("waited")


@case(
    {
        "count": {
            "jobs": {
                "c2": "completed finishedOn=finish processedOn=claim result=2 ts=enq",
                "c3": "completed finishedOn=finish processedOn=claim result=3 ts=enq",
                "f0": "active processedOn=claim ts=enq",
                "f1": "active processedOn=claim ts=enq",
            },
            "active": ["f1", "f0"],
            "locks": ["f0", "f1"],
            "completed": ["c2", "c3"],
            "events": [
                "waiting c0",
                "waiting c1",
                "waiting c2",
                "waiting c3",
                "waiting f0",
                "waiting f1",
                "active c0",
                "active c1",
                "active c2",
                "active c3",
                "active f0",
                "active f1",
                "completed c0",
                "completed c1",
                "completed c2",
                "completed c3",
            ],
            "done": {
                "c0": "completed 0",
                "c1": "completed 1",
                "c2": "completed 2",
                "c3": "completed 3",
            },
            "metrics": {"completed": 4},
        },
        "trimmed": {
            "jobs": {"f1": "failed error=y finishedOn=fail processedOn=claim ts=enq"},
            "failed": ["f1"],
            "events": [
                "waiting c0",
                "waiting c1",
                "waiting c2",
                "waiting c3",
                "waiting f0",
                "waiting f1",
                "active c0",
                "active c1",
                "active c2",
                "active c3",
                "active f0",
                "active f1",
                "completed c0",
                "completed c1",
                "completed c2",
                "completed c3",
                "failed f0 error=x",
                "failed f1 error=y",
            ],
            "done": {
                "c0": "completed 0",
                "c1": "completed 1",
                "c2": "completed 2",
                "c3": "completed 3",
                "f0": "failed x",
                "f1": "failed y",
            },
            "metrics": {"failed": 2, "completed": 4},
        },
    }
)
async def trim(h: Harness) -> None:
    """Retention by count as jobs finish (finish_and_claim), by age and count in trim."""
    keep2 = ClaimOptions(lock_ttl_ms=LOCK_TTL, keep_completed=2, keep_failed=2)
    await h.enqueue("enq", *(job(f"c{i}") for i in range(4)), job("f0"), job("f1"))
    await h.claim("claim", 6)
    outs = tuple(h.out(f"c{i}", "completed", result=str(i)) for i in range(4))
    await h.claim("finish", 0, outs, opts=keep2)
    await h.snap("count")
    fails = (h.out("f0", "failed", error="x"), h.out("f1", "failed", error="y"))
    await h.claim("fail", 0, fails, opts=keep2)
    await h.advance(DELAY)
    removed = await h.step("trim", h.backend.trim(TASK, taskora.Retention(0.2, 10, 3600, 1)))
    assert removed == 3
    await h.snap("trimmed")


@case(
    {
        "parked": {
            "jobs": {
                "a": "active concurrencyKey=k concurrencyLimit=1 processedOn=claim ts=enq",
                "b": "waiting concurrencyKey=k concurrencyLimit=1 ts=enq",
                "c": "waiting concurrencyKey=k concurrencyLimit=1 ts=enq",
                "x": "active processedOn=claim ts=enq",
            },
            "active": ["x", "a"],
            "parked": {"k": ["b", "c"]},
            "parked_count": 2,
            "conc": {"k": 1},
            "locks": ["a", "x"],
            "events": ["waiting a", "waiting b", "waiting c", "waiting x", "active a", "active x"],
        },
        "unparked": {
            "jobs": {
                "a": "completed concurrencyKey=k concurrencyLimit=1 "
                "finishedOn=done-a processedOn=claim result=1 ts=enq",
                "b": "waiting concurrencyKey=k concurrencyLimit=1 ts=enq",
                "c": "waiting concurrencyKey=k concurrencyLimit=1 ts=enq",
                "x": "active processedOn=claim ts=enq",
            },
            "wait": ["b"],
            "active": ["x"],
            "parked": {"k": ["c"]},
            "parked_count": 1,
            "locks": ["x"],
            "completed": ["a"],
            "marker": "now",
            "events": [
                "waiting a",
                "waiting b",
                "waiting c",
                "waiting x",
                "active a",
                "active x",
                "completed a",
            ],
            "done": {"a": "completed 1"},
            "metrics": {"completed": 1},
        },
        "after": {
            "jobs": {
                "a": "completed concurrencyKey=k concurrencyLimit=1 finishedOn=done-a "
                "processedOn=claim result=1 ts=enq",
                "b": "completed concurrencyKey=k concurrencyLimit=1 finishedOn=done-b "
                "processedOn=claim2 result=1 ts=enq",
                "c": "cancelled cancelReason= concurrencyKey=k concurrencyLimit=1 "
                "finishedOn=cancel-c ts=enq",
                "x": "active processedOn=claim ts=enq",
            },
            "active": ["x"],
            "locks": ["x"],
            "completed": ["a", "b"],
            "cancelled": ["c"],
            "events": [
                "waiting a",
                "waiting b",
                "waiting c",
                "waiting x",
                "active a",
                "active x",
                "completed a",
                "active b",
                "cancelled c reason=",
                "completed b",
            ],
            "done": {"a": "completed 1", "c": "cancelled", "b": "completed 1"},
            "metrics": {"completed": 2},
        },
    }
)
async def parked_concurrency(h: Harness) -> None:
    """waiting → parked while its key is at its limit; each freed slot unparks the oldest
    job of that key to the front."""
    k = {"concurrency_key": "k", "concurrency_limit": 1}
    await h.enqueue("enq", job("a", **k), job("b", **k), job("c", **k), job("x"))
    assert await h.claim("claim", 4, opts=LONG) == ["a", "x"]
    await h.snap("parked")
    await h.claim("done-a", 0, (h.out("a", "completed", result="1"),), opts=LONG)
    await h.snap("unparked")
    assert await h.claim("claim2", 1, opts=LONG) == ["b"]
    assert await h.step("cancel-c", h.backend.cancel(TASK, "c", None)) == "cancelled"
    await h.claim("done-b", 0, (h.out("b", "completed", result="1"),), opts=LONG)
    await h.snap("after")


@case(
    {
        "seen": {
            "jobs": {
                "a": "active processedOn=claim ts=enq",
                "b": "active cancelReason=r cancelledAt=cancel-b processedOn=claim ts=enq",
                "c": "waiting ts=enq",
            },
            "active": ["b", "a"],
            "reserved": ["c"],
            "locks": ["a", "b", "c"],
            "stalled": ["a", "b"],
            "events": ["waiting a", "waiting b", "waiting c", "active a", "active b"],
        },
        "recovered": {
            "jobs": {
                "a": "waiting processedOn=claim stalledCount=1 ts=enq",
                "b": "cancelled cancelReason=r cancelledAt=cancel-b "
                "finishedOn=check2 processedOn=claim ts=enq",
                "c": "waiting ts=enq",
            },
            "wait": ["c", "a"],
            "cancelled": ["b"],
            "marker": "now",
            "events": [
                "waiting a",
                "waiting b",
                "waiting c",
                "active a",
                "active b",
                "stalled a action=recovered count=1",
                "cancelled b reason=r",
            ],
            "done": {"b": "cancelled r"},
        },
        "failed": {
            "jobs": {
                "a": "failed error=Job stalled and exceeded max stalled count "
                "finishedOn=check4 processedOn=claim2 stalledCount=2 ts=enq",
                "b": "cancelled cancelReason=r cancelledAt=cancel-b finishedOn=check2 "
                "processedOn=claim ts=enq",
                "c": "waiting processedOn=claim2 stalledCount=1 ts=enq",
            },
            "wait": ["c"],
            "failed": ["a"],
            "cancelled": ["b"],
            "marker": "now",
            "events": [
                "waiting a",
                "waiting b",
                "waiting c",
                "active a",
                "active b",
                "stalled a action=recovered count=1",
                "cancelled b reason=r",
                "active a",
                "active c",
                "stalled a action=failed count=2",
                "failed a error=Job stalled and exceeded max stalled count",
                "stalled c action=recovered count=1",
            ],
            "done": {"b": "cancelled r", "a": "failed Job stalled and exceeded max stalled count"},
        },
    }
)
async def stall_recovery(h: Harness) -> None:
    """active → waiting front with stalledCount; → failed past max_count; a dead worker's
    reserved job → front without a stall count; a flagged one → cancelled."""
    h.unordered = {"check2", "check4"}
    await h.enqueue("enq", job("a"), job("b"), job("c"))
    assert await h.claim("claim", 2, reserve=1) == ["a", "b", "c"]
    await h.step("cancel-b", h.backend.cancel(TASK, "b", "r"))
    await h.step("check1", h.backend.stalled_check(TASK, 1))
    await h.snap("seen")
    await h.advance(LOCK_TTL)
    report = await h.step("check2", h.backend.stalled_check(TASK, 1))
    assert (report.recovered, report.cancelled, report.returned) == (("a",), ("b",), ("c",))
    await h.snap("recovered")
    assert sorted(await h.claim("claim2", 2)) == ["a", "c"]
    await h.step("check3", h.backend.stalled_check(TASK, 1))
    await h.advance(LOCK_TTL)
    report = await h.step("check4", h.backend.stalled_check(TASK, 1))
    assert set(report.failed) == {"a"}
    await h.snap("failed")


@case(
    {
        "held": {
            "jobs": {
                "a": "waiting dedupKey=<base>dedup:k ts=dedup1",
                "d2": "delayed delay=400 ts=bounce2",
            },
            "wait": ["a"],
            "delayed": [("d2", "bounce2+400")],
            "marker": "now",
            "events": ["waiting a", "delayed d1", "debounced d1 replacedBy=d2", "delayed d2"],
            "done": {"d1": "missing replaced by a later debounced dispatch d2"},
            "flows": {"debounce:q": "d2", "dedup:k": "a"},
        },
        "released": {
            "jobs": {
                "a": "completed dedupKey=<base>dedup:k "
                "finishedOn=finish processedOn=claim result=1 ts=dedup1",
                "d2": "delayed delay=400 ts=bounce2",
            },
            "delayed": [("d2", "bounce2+400")],
            "completed": ["a"],
            "marker": "bounce2+400",
            "events": [
                "waiting a",
                "delayed d1",
                "debounced d1 replacedBy=d2",
                "delayed d2",
                "active a",
                "completed a",
            ],
            "done": {
                "d1": "missing replaced by a later debounced dispatch d2",
                "a": "completed 1",
            },
            "metrics": {"completed": 1},
            "flows": {"debounce:q": "d2"},
        },
    }
)
async def flow_control(h: Harness) -> None:
    """Dedup holds its key until the job ends; a later debounced dispatch replaces the
    delayed one (it ends as debounced)."""
    dedup = Flow("dedup", "k")
    first = await h.step("dedup1", h.backend.enqueue_flow(TASK, job("a"), dedup))
    second = await h.step("dedup2", h.backend.enqueue_flow(TASK, job("b"), dedup))
    assert (first.enqueued, second.enqueued, second.existing_id) == (True, False, "a")
    bounce = Flow("debounce", "q", delay_ms=DELAY)
    await h.step("bounce1", h.backend.enqueue_flow(TASK, job("d1"), bounce))
    replaced = await h.step("bounce2", h.backend.enqueue_flow(TASK, job("d2"), bounce))
    assert replaced.replaced_id == "d1"
    await h.snap("held")
    await h.claim("claim", 1)
    await h.claim("finish", 0, (h.out("a", "completed", result="1"),))
    await h.snap("released")


@case(
    {
        "buffered": {
            "jobs": {"i0": "delayed collectKey=k data=[] ts=push"},
            "delayed": [("i0", "push+400")],
            "marker": "push+400",
            "events": [
                "collect i0 count=1 key=k",
                "collect i0 count=2 key=k",
                "collect i0 count=3 key=k",
            ],
            "collect": {"k": ["0", "1", "2"]},
        },
        "flushed": {
            "jobs": {"i0": "active data=[0,1,2] processedOn=claim ts=push"},
            "active": ["i0"],
            "locks": ["i0"],
            "events": [
                "collect i0 count=1 key=k",
                "collect i0 count=2 key=k",
                "collect i0 count=3 key=k",
                "promoted i0",
                "active i0",
            ],
        },
    }
)
async def collect_batch(h: Harness) -> None:
    """The first item creates a delayed batch job; the due batch takes the items as data."""
    flow = Flow("collect", "k", delay_ms=DELAY, max=10, window_ms=10 * DELAY)
    items = [(job(f"i{n}", data=str(n)), flow) for n in range(3)]
    results = await h.step("push", h.backend.collect_push(TASK, items))
    assert [r.existing_id for r in results] == [None, "i0", "i0"]
    await h.snap("buffered")
    await h.advance(DELAY)
    assert await h.claim("claim", 1) == ["i0"]
    await h.snap("flushed")


@case(
    {
        "after": {
            "jobs": {
                "a": "active processedOn=woke ts=woke",
                "b": "waiting ts=woke",
                "p": "waiting priority=9 ts=enq2",
            },
            "prioritized": ["p"],
            "active": ["a"],
            "reserved": ["b"],
            "locks": ["a", "b"],
            "marker": "now",
            "events": ["waiting a", "waiting b", "active a", "waiting p"],
        }
    }
)
async def wait_then_claim(h: Harness) -> None:
    """An idle worker wakes on an enqueue (the marker) and claims; the outranking arrival of
    a prioritized job while one is reserved does not touch the reservation's storage."""
    waiter = asyncio.ensure_future(h.backend.wait_for_work(TASK, 10, 1, OPTS, "w", 1))
    await asyncio.sleep(0.05)

    async def enqueue_and_wake() -> tuple[Claimed, ...]:  # one window: the claim may run
        await h.backend.enqueue(TASK, [job("a"), job("b")])  # before this returns
        return await waiter

    claimed = await h.step("woke", enqueue_and_wake())
    assert [c.id for c in claimed] == ["a", "b"] and claimed[1].reserved
    await h.enqueue("enq2", job("p", priority=9))
    await h.snap("after")


@case(
    {
        "after": {
            "jobs": {
                "badprio": "failed delay=400 error=malformed job: priority is not a "
                "number finishedOn=claim priority=high ts=enq",
                "badttl": "failed error=malformed job: expireAt is not a number "
                "expireAt=soon finishedOn=claim ts=enq",
                "nodata": "failed error=malformed job: data field missing finishedOn=claim ts=enq",
                "ok": "active processedOn=claim ts=enq",
            },
            "active": ["ok"],
            "locks": ["ok"],
            "failed": ["badprio", "badttl", "nodata"],
            "events": [
                "waiting nodata",
                "waiting badttl",
                "waiting ok",
                "delayed badprio",
                "failed badprio error=malformed job: priority is not a number",
                "failed nodata error=malformed job: data field missing",
                "failed badttl error=malformed job: expireAt is not a number",
                "active ok",
            ],
            "done": {
                "badprio": "failed malformed job: priority is not a number",
                "nodata": "failed malformed job: data field missing",
                "badttl": "failed malformed job: expireAt is not a number",
            },
        }
    }
)
async def malformed_data(h: Harness) -> None:
    """A job missing its data or with a bad ttl ends failed with a reason at claim; a
    delayed job with a bad priority at promotion. Good jobs around them run."""
    await h.enqueue("enq", job("nodata"), job("badttl"), job("ok"), job("badprio", delay_ms=DELAY))
    await h.corrupt("nodata", "data", None)
    await h.corrupt("badttl", "expireAt", "soon")
    await h.corrupt("badprio", "priority", "high")
    await h.advance(DELAY)
    assert await h.claim("claim", 3) == ["ok"]
    await h.snap("after")


@case(
    {
        "gated": {
            "jobs": {"a": "active processedOn=claim ts=enq", "b": "waiting ts=enq"},
            "wait": ["b"],
            "active": ["a"],
            "locks": ["a"],
            "marker": "gated+1000",
            "events": ["waiting a", "waiting b", "active a"],
        },
        "freed": {
            "jobs": {
                "a": "completed finishedOn=finish processedOn=claim result=1 ts=enq",
                "b": "waiting ts=enq",
            },
            "wait": ["b"],
            "completed": ["a"],
            "marker": "now",
            "events": ["waiting a", "waiting b", "active a", "completed a"],
            "done": {"a": "completed 1"},
            "metrics": {"completed": 1},
        },
    }
)
async def singleton_gate_marker(h: Harness) -> None:
    """A claim the singleton gate blocks re-arms the marker a second ahead (rearm, gated);
    the finish that frees the gate arms it for now."""
    one = ClaimOptions(lock_ttl_ms=60_000, singleton=True)
    await h.enqueue("enq", job("a"), job("b"))
    assert await h.claim("claim", 1, opts=one) == ["a"]
    assert await h.claim("gated", 1, opts=one) == []
    await h.snap("gated")
    assert await h.claim("finish", 0, (h.out("a", "completed", result="1"),), opts=one) == []
    await h.snap("freed")


@case(
    {
        "recovered": {
            "jobs": {
                "a": "waiting concurrencyKey=k concurrencyLimit=1 "
                "processedOn=claim stalledCount=1 ts=enq",
                "b": "waiting concurrencyKey=k concurrencyLimit=1 ts=enq",
                "z": "completed finishedOn=renew processedOn=claim result=1 ts=enq",
            },
            "wait": ["b", "a"],
            "completed": ["z"],
            "marker": "now",
            "events": [
                "waiting a",
                "waiting b",
                "waiting z",
                "active a",
                "active z",
                "completed z",
                "stalled a action=recovered count=1",
            ],
            "done": {"z": "completed 1"},
            "metrics": {"completed": 1},
        }
    }
)
async def stall_unparks_its_key(h: Harness) -> None:
    """A stalled job with a concurrency key frees its slot: the key's parked job and the
    recovered one both go to the front (the recovered one first)."""
    k = {"concurrency_key": "k", "concurrency_limit": 1}
    await h.enqueue("enq", job("a", **k), job("b", **k), job("z"))
    assert await h.claim("claim", 2) == ["a", "z"]
    await h.claim("renew", 0, (h.out("z", "completed", result="1"),))
    await h.step("check1", h.backend.stalled_check(TASK, 3))
    await h.advance(LOCK_TTL)
    report = await h.step("check2", h.backend.stalled_check(TASK, 3))
    assert report.recovered == ("a",)
    await h.snap("recovered")


@case(
    {
        "calls": {
            "lock": True,
            "other": False,
            "write": True,
            "stale": False,
            "due": [("s", "fire", '{"task":"job"}')],
            "not_leader": None,
            "pause": True,
            "read": [("s", "{}", None)],
            "release": False,
            "b_takes": True,
        }
    }
)
async def schedules(h: Harness) -> None:
    """The leader lock, a compare-and-set write, due and read (their own keys)."""
    got: dict[str, Any] = {}
    got["lock"] = await h.step("lock", h.backend.schedule_lock("A", 60_000))
    got["other"] = await h.step("other", h.backend.schedule_lock("B", 60_000))
    fire = await h.now()
    h.marks.append(("fire", fire, fire))
    await h._past(fire)
    put = ScheduleExpect(record=None, next_ms=None)
    got["write"] = await h.step("write", h.backend.schedule_write("s", put, '{"task":"job"}', fire))
    got["stale"] = await h.step("stale", h.backend.schedule_write("s", put, "{}", fire))
    due = await h.step("due", h.backend.schedule_due("A", 10))
    assert due is not None
    got["due"] = [(name, h.t(ms), record) for name, ms, record in due[1]]
    got["not_leader"] = await h.step("due2", h.backend.schedule_due("B", 10))
    paused = ScheduleExpect(record='{"task":"job"}')
    got["pause"] = await h.step("pause", h.backend.schedule_write("s", paused, "{}", None))
    got["read"] = await h.step("read", h.backend.schedule_read(None))
    got["release"] = await h.step("release", h.backend.schedule_lock("A", 60_000, release=True))
    got["b_takes"] = await h.step("take", h.backend.schedule_lock("B", 60_000))
    h.snaps["calls"] = got


@pytest.mark.parametrize("name", list(CASES))
async def test_transition(h: Harness, name: str) -> None:
    await run_case(h, name)
