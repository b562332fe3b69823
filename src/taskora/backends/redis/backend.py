"""RedisBackend: jobs in Redis (or Valkey), laid out in the reference's wire format v6.

Connections per process: one pool for commands and scripts, one blocking connection per
task being worked (``BZPOPMIN`` on its marker), one pub/sub connection for cancellation,
and one connection for the shared result reader (``XREAD``) while anyone waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...errors import BackendError, ConfigError, WireVersionError
from ...types import Retention
from ..base import (
    CancelListener,
    Claimed,
    ClaimOptions,
    EnqueueResult,
    FinishReport,
    Flow,
    JobSnapshot,
    NewJob,
    Outcome,
    StallReport,
    Terminal,
)
from .keys import TaskKeys, root, task_keys
from .scripts import SCRIPTS
from .waiter import ResultWaiter

__all__ = ["WIRE_VERSION", "RedisBackend"]

WIRE_VERSION = 6
MIN_COMPAT = 6
ENQUEUE_CHUNK = 250
MAX_EVENT_RESULT = 512
TRIM_BATCH = 500
POOL_SIZE = 32


class RedisBackend:
    """Redis backend. ``RedisBackend(url)`` or ``RedisBackend(client=redis_asyncio_client)``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        prefix: str | None = None,
    ) -> None:
        if url is None and client is None:
            url = "redis://127.0.0.1:6379/0"
        self._url = url
        self._given = client
        self.prefix = prefix
        self.url = _redact(url) if url else _describe(client)
        self._client: Redis | None = None
        self._blocking: dict[str, Redis] = {}
        self._pubsub: PubSub | None = None
        self._pubsub_task: asyncio.Task[None] | None = None
        self._cancel_listeners: dict[str, CancelListener] = {}
        self._offset_ms = 0.0
        self._token_seq = 0
        self.waiter = ResultWaiter(self)

    def configure(self, *, prefix: str | None) -> None:
        if self._client is not None:
            raise ConfigError("cannot change the prefix of a connected backend")
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"RedisBackend({self.url!r}, prefix={self.prefix!r})"

    # -- connections --------------------------------------------------------------------
    def _new_client(self, role: str, blocking: bool = False) -> Redis:
        name = f"taskora:{role}:{os.getpid()}"
        options: dict[str, Any] = {
            "decode_responses": False,
            "client_name": name,
            "socket_keepalive": True,
            "socket_connect_timeout": 5,
            "health_check_interval": 0 if blocking else 30,
            "retry": RedisRetry(ExponentialBackoff(cap=1.0, base=0.05), 3),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError, ConnectionError],
        }
        if blocking:
            options["socket_timeout"] = None
        size = 1 if blocking else POOL_SIZE
        # A blocking pool queues callers when every connection is busy, instead of failing:
        # ten thousand concurrent handles share a few dozen connections.
        if self._url is not None:
            pool = BlockingConnectionPool.from_url(
                self._url, max_connections=size, timeout=None, **options
            )
        else:
            assert self._given is not None
            kwargs = dict(self._given.connection_pool.connection_kwargs)
            kwargs.update(options)
            pool = BlockingConnectionPool(max_connections=size, timeout=None, **kwargs)
        return Redis.from_pool(pool)

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise BackendError("the Redis backend is not connected")
        return self._client

    async def connect(self) -> None:
        if self._client is not None:
            return
        client = self._given if self._given is not None else self._new_client("main")
        try:
            start = time.time()
            seconds, micros = await client.time()
            end = time.time()
            self._offset_ms = seconds * 1000 + micros / 1000 - (start + end) * 500
            pipe = client.pipeline(transaction=False)
            for script in SCRIPTS.values():
                pipe.script_load(script.source)
            await pipe.execute()
            stored = await SCRIPTS["handshake"](
                client,
                [root(self.prefix) + ":meta"],
                [WIRE_VERSION, MIN_COMPAT, f"taskora-wire-{WIRE_VERSION}"],
            )
        except RedisError as exc:
            if self._given is None:
                await client.aclose()
            raise self._error(exc) from None
        except OSError as exc:
            if self._given is None:
                await client.aclose()
            raise self._error(exc) from None
        try:
            _check_compat(stored)
        except WireVersionError:
            if self._given is None:
                await client.aclose()
            raise
        self._client = client

    async def close(self) -> None:
        await self.waiter.close()
        if self._pubsub_task is not None:
            self._pubsub_task.cancel()
            with contextlib.suppress(BaseException):
                await self._pubsub_task
            self._pubsub_task = None
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None
        self._cancel_listeners.clear()
        blocking, self._blocking = self._blocking, {}
        for conn in blocking.values():
            with contextlib.suppress(Exception):
                await conn.aclose()
        client, self._client = self._client, None
        if client is not None and client is not self._given:
            with contextlib.suppress(Exception):
                await client.aclose()

    def reset(self) -> None:
        """Forget connections made in an event loop that is gone (no I/O)."""
        self._client = None
        self._blocking = {}
        self._pubsub = None
        self._pubsub_task = None
        self._cancel_listeners.clear()
        self.waiter = ResultWaiter(self)

    def now_ms(self) -> int:
        return int(time.time() * 1000 + self._offset_ms)

    async def verify(self) -> str | None:
        """The meta hash is written at first connect and never deleted by taskora: if it is
        gone, Redis restarted without persistence (or was flushed) and jobs were lost."""
        meta = root(self.prefix) + ":meta"
        with self.errors():
            if await self.client.exists(meta):
                return None
            stored = await SCRIPTS["handshake"](
                self.client, [meta], [WIRE_VERSION, MIN_COMPAT, f"taskora-wire-{WIRE_VERSION}"]
            )
        _check_compat(stored)
        return (
            f"Redis at {self.url} lost taskora's data (restarted without persistence, or "
            "flushed): jobs accepted before that are gone; waiters on them get JobNotFoundError"
        )

    def keys(self, task: str) -> TaskKeys:
        return task_keys(self.prefix, task)

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> BackendError:
        return BackendError(f"Redis at {self.url}: {type(exc).__name__}: {exc}")

    # -- producer -----------------------------------------------------------------------
    async def enqueue(self, task: str, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        keys = self.keys(task)
        script = SCRIPTS["enqueue"]
        chunks = [jobs[i : i + ENQUEUE_CHUNK] for i in range(0, len(jobs), ENQUEUE_CHUNK)]
        arg_lists = [_enqueue_args(keys.base, chunk) for chunk in chunks]
        with self.errors():
            if len(chunks) == 1:
                replies = [await script(self.client, keys.standard, arg_lists[0])]
            else:
                replies = await self._pipelined(script.name, keys.standard, arg_lists)
        results: list[EnqueueResult] = []
        for reply in replies:
            for event_id in reply:
                text = event_id.decode() if isinstance(event_id, bytes) else str(event_id)
                results.append(EnqueueResult(True, event_id=text or None))
        return results

    async def _pipelined(
        self, name: str, keys: tuple[str, ...], arg_lists: list[list[Any]]
    ) -> list[Any]:
        script = SCRIPTS[name]
        pipe = self.client.pipeline(transaction=False)
        for args in arg_lists:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        missing = [
            i for i, r in enumerate(replies) if isinstance(r, RedisError) and "NOSCRIPT" in str(r)
        ]
        if missing:
            await self.client.script_load(script.source)
            for i in missing:
                replies[i] = await script(self.client, keys, arg_lists[i])
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def enqueue_flow(self, task: str, job: NewJob, flow: Flow) -> EnqueueResult:
        from .flow import enqueue_flow

        return await enqueue_flow(self, task, job, flow)

    # -- worker ---------------------------------------------------------------------------
    async def finish_and_claim(
        self,
        task: str,
        outcomes: Sequence[Outcome],
        claim: int,
        options: ClaimOptions,
        token_base: str,
    ) -> FinishReport:
        keys = self.keys(task)
        args: list[Any] = [keys.base, len(outcomes)]
        for o in outcomes:
            payload = o.result if o.kind == "completed" else (o.error or "")
            args += (o.id, o.token, o.kind, payload or "", o.retry_delay_ms)
        seq = self._token_seq
        self._token_seq += claim
        args += (
            claim,
            options.lock_ttl_ms,
            token_base,
            seq,
            "1" if options.singleton else "0",
            MAX_EVENT_RESULT,
            options.keep_completed,
            options.keep_failed,
        )
        with self.errors():
            refused, flat = await SCRIPTS["finish_claim"](self.client, keys.standard, args)
        claimed = tuple(
            Claimed(
                id=flat[i].decode(),
                data=flat[i + 1],
                version=_int(flat[i + 2], 1),
                attempt=_int(flat[i + 3], 1),
                ts=_int(flat[i + 4], 0),
                token=flat[i + 5].decode(),
            )
            for i in range(0, len(flat), 6)
        )
        return FinishReport(tuple(r.decode() for r in refused), claimed)

    async def wait_for_work(self, task: str, timeout_s: float) -> None:
        conn = self._blocking.get(task)
        if conn is None:
            conn = self._blocking[task] = self._new_client(f"block:{task}", blocking=True)
        marker = self.keys(task).key("marker")
        with self.errors():
            popped = await conn.bzpopmin(marker, timeout_s)
            if popped is None:
                return
            wait_ms = float(popped[2]) - self.now_ms()
            if wait_ms > 0:  # the next delayed job is due later: block until then or new work
                await conn.bzpopmin(marker, min(wait_ms / 1000, timeout_s))

    async def extend_locks(
        self, task: str, held: Sequence[tuple[str, str]], lock_ttl_ms: int
    ) -> list[int]:
        keys = self.keys(task)
        args: list[Any] = [keys.base, lock_ttl_ms]
        for job_id, token in held:
            args += (job_id, token)
        with self.errors():
            reply = await SCRIPTS["extend_locks"](self.client, keys.standard, args)
        return [int(r) for r in reply]

    async def stalled_check(self, task: str, max_count: int) -> StallReport:
        keys = self.keys(task)
        with self.errors():
            recovered, failed, cancelled = await SCRIPTS["stalled_check"](
                self.client, keys.standard, [keys.base, max_count]
            )
        return StallReport(_strs(recovered), _strs(failed), _strs(cancelled))

    async def trim(self, task: str, retention: Retention) -> int:
        keys = self.keys(task)
        r = retention
        args = [
            keys.base,
            TRIM_BATCH,
            r.completed_age_ms,
            r.completed_max,
            r.failed_age_ms,
            r.failed_max,
            r.failed_age_ms,
            r.failed_max,
            r.failed_age_ms,
            r.failed_max,
        ]
        total = 0
        with self.errors():
            for _ in range(20):
                removed = int(await SCRIPTS["trim"](self.client, keys.standard, args))
                total += removed
                if removed < TRIM_BATCH:
                    break
        return total

    async def subscribe_cancel(self, task: str, listener: CancelListener) -> None:
        self._cancel_listeners[self.keys(task).cancel_channel] = listener
        with self.errors():
            if self._pubsub is None:
                self._pubsub = self._new_client("pubsub", blocking=True).pubsub()
            await self._pubsub.subscribe(self.keys(task).cancel_channel)
        if self._pubsub_task is None:
            self._pubsub_task = asyncio.create_task(self._listen(), name="taskora-cancel-listener")

    async def unsubscribe_cancel(self, task: str) -> None:
        channel = self.keys(task).cancel_channel
        self._cancel_listeners.pop(channel, None)
        if self._pubsub is not None:
            with self.errors():
                await self._pubsub.unsubscribe(channel)

    async def _listen(self) -> None:
        backoff = 0.05
        while self._pubsub is not None:
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
                backoff = 0.05
            except (RedisError, OSError):
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"].decode()
            listener = self._cancel_listeners.get(channel)
            if listener is not None:
                listener(message["data"].decode())

    async def set_progress(self, task: str, job_id: str, value: str) -> None:
        keys = self.keys(task)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(keys.job(job_id), "progress", value)
        pipe.xadd(
            keys.events,
            {"event": "progress", "jobId": job_id, "value": value},
            maxlen=10000,
            approximate=True,
        )
        with self.errors():
            await pipe.execute()

    async def add_logs(self, task: str, job_id: str, entries: Sequence[str]) -> None:
        key = self.keys(task).logs(job_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(key, *entries)
        pipe.ltrim(key, -10000, -1)
        with self.errors():
            await pipe.execute()

    # -- results and inspection -------------------------------------------------------------
    async def get_snapshot(self, task: str, job_id: str) -> JobSnapshot:
        with self.errors():
            key = self.keys(task).job(job_id)
            if await self.client.type(key) != b"hash":
                return JobSnapshot(None)
            state, progress = await self.client.hmget(key, ["state", "progress"])
        return JobSnapshot(_str(state), _str(progress))

    async def get_logs(self, task: str, job_id: str) -> list[str]:
        with self.errors():
            key = self.keys(task).logs(job_id)
            if await self.client.type(key) != b"list":
                return []
            raw = await self.client.lrange(key, 0, -1)
        return [_str(r) or "" for r in raw]

    async def cancel(self, task: str, job_id: str, reason: str | None) -> str:
        keys = self.keys(task)
        with self.errors():
            reply = await SCRIPTS["cancel"](
                self.client, keys.standard, [keys.base, job_id, reason or ""]
            )
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    async def wait_terminal(
        self, task: str, job_id: str, timeout_s: float | None, event_id: str | None
    ) -> Terminal | None:
        return await self.waiter.wait(task, job_id, timeout_s, event_id)

    async def counts(self, task: str) -> dict[str, int]:
        keys = self.keys(task)
        pipe = self.client.pipeline(transaction=False)
        pipe.llen(keys.key("wait"))
        pipe.zcard(keys.key("prioritized"))
        for name in ("delayed",):
            pipe.zcard(keys.key(name))
        pipe.llen(keys.key("active"))
        for name in ("completed", "failed", "cancelled", "expired"):
            pipe.zcard(keys.key(name))
        with self.errors():
            (
                wait,
                prio,
                delayed,
                active,
                completed,
                failed,
                cancelled,
                expired,
            ) = await pipe.execute()
        return {
            "waiting": wait + prio,
            "delayed": delayed,
            "active": active,
            "completed": completed,
            "failed": failed,
            "cancelled": cancelled,
            "expired": expired,
        }

    async def list_jobs(
        self, task: str, state: str, offset: int, limit: int
    ) -> list[tuple[str, dict[str, str]]]:
        keys = self.keys(task)
        stop = offset + limit - 1
        with self.errors():
            if state in ("completed", "failed", "cancelled", "expired"):
                ids = await self.client.zrevrange(keys.key(state), offset, stop)
            elif state == "delayed":
                ids = await self.client.zrange(keys.key("delayed"), offset, stop)
            elif state == "active":
                ids = await self.client.lrange(keys.key("active"), offset, stop)
            elif state == "waiting":
                ids = await self._waiting_ids(keys, offset, limit)
            else:
                raise ConfigError(f"unknown state {state!r}")
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(keys.job(_str(job_id) or ""))
            rows = await pipe.execute(raise_on_error=False)
        out = []
        for job_id, row in zip(ids, rows, strict=True):
            if isinstance(row, dict) and row:
                fields = {_str(k) or "": _str(v) or "" for k, v in row.items()}
                out.append((_str(job_id) or "", fields))
        return out

    async def _waiting_ids(self, keys: TaskKeys, offset: int, limit: int) -> list[Any]:
        prioritized = await self.client.zrange(keys.key("prioritized"), offset, offset + limit - 1)
        if len(prioritized) >= limit:
            return list(prioritized)
        skip = max(0, offset - await self.client.zcard(keys.key("prioritized")))
        want = limit - len(prioritized)
        # the list is popped from its right end: claim order is right to left
        plain = await self.client.lrange(keys.key("wait"), -(skip + want), -(skip + 1))
        return list(prioritized) + list(reversed(plain))

    async def retry_failed(self, task: str, ids: Sequence[str] | None, limit: int) -> list[str]:
        keys = self.keys(task)
        with self.errors():
            reply = await SCRIPTS["retry_failed"](
                self.client, keys.standard, [keys.base, limit, *(ids or ())]
            )
        retried = [_str(r) or "" for r in reply]
        for job_id in retried:
            self.waiter.forget(task, job_id)
        return retried

    async def job_fields(self, task: str, job_id: str) -> dict[str, str]:
        """Every stored field of a job (for tools and tests)."""
        with self.errors():
            raw = await self.client.hgetall(self.keys(task).job(job_id))
        return {_str(k) or "": _str(v) or "" for k, v in raw.items()}


def _enqueue_args(base: str, jobs: Sequence[NewJob]) -> list[Any]:
    args: list[Any] = [base, len(jobs)]
    for j in jobs:
        args += (
            j.id,
            j.data,
            j.version,
            j.max_attempts,
            j.priority,
            j.delay_ms,
            j.ttl_ms,
            j.concurrency_key,
            j.concurrency_limit,
        )
    return args


def _check_compat(stored: list[Any]) -> None:
    ours = {"wireVersion": WIRE_VERSION, "minCompat": MIN_COMPAT}
    raw = [_str(v) for v in stored]
    theirs = {"wireVersion": raw[0], "minCompat": raw[1], "writtenBy": raw[2], "writtenAt": raw[3]}
    try:
        version, min_compat = int(raw[0] or ""), int(raw[1] or "")
    except ValueError:
        raise WireVersionError(
            f"taskora meta in Redis is corrupt ({theirs}); refusing to run", ours, theirs
        ) from None
    if version < 1 or min_compat < 1 or min_compat > version:
        raise WireVersionError(
            f"taskora meta in Redis is invalid ({theirs}); refusing to run", ours, theirs
        )
    if version < MIN_COMPAT:
        raise WireVersionError(
            f"Redis holds taskora wire version {version}, older than this taskora supports "
            f"(needs >= {MIN_COMPAT}); migrate the data first",
            ours,
            theirs,
        )
    if WIRE_VERSION < min_compat:
        raise WireVersionError(
            f"Redis holds taskora wire version {version} (needs readers >= {min_compat}); this "
            f"taskora speaks wire version {WIRE_VERSION}: upgrade taskora",
            ours,
            theirs,
        )


def _redact(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path or ''}"


def _describe(client: Redis | None) -> str:
    if client is None:
        return "redis://?"
    kw = client.connection_pool.connection_kwargs
    if "path" in kw:
        return f"unix://{kw['path']}"
    return f"redis://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _strs(values: list[Any]) -> tuple[str, ...]:
    return tuple(v.decode() for v in values)


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


# Re-exported for typing of listeners elsewhere.
Listener = Callable[[str], None]
