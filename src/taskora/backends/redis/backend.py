"""RedisBackend: jobs in Redis (or Valkey), laid out in the reference's wire format v6
(docs/design.md#redis-layout).

Connections per process: one pool for commands and scripts, one blocking connection per
task being worked (``BZPOPMIN`` on its marker), one pub/sub connection for cancellation,
and one connection for the shared result reader (``XREAD``) while anyone waits. On a Redis
Cluster (found at connect, cluster.py) each of these is one per node it talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import BackendError, ConfigError, WireVersionError
from ...types import Retention
from ..base import (
    CancelListener,
    Claimed,
    ClaimOptions,
    EnqueueResult,
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
)
from ..keys import meta_key, root, workers_keys, workflows_base
from .address import Address, parse_address
from .cluster import (
    ClusterClient,
    ClusterEvents,
    ClusterSubscriber,
    Topology,
    describe_seeds,
    discover,
    masters,
    split_seeds,
)
from .keys import TaskKeys, task_keys
from .resp import Packed, ReplyError, RespClient, Subscriber
from .scripts import (
    LIBRARY,
    SCRIPTS,
    Cancel,
    EnqueueJobs,
    ExpireDue,
    ExtendLocks,
    FinishClaim,
    FinishClaimReply,
    FinishOutcome,
    Handshake,
    HeldLock,
    Meta,
    RetryFailed,
    StalledCheck,
    Trim,
    WorkerBeat,
    library_loaded,
    run_pipelined,
)
from .waiter import ResultWaiter

if TYPE_CHECKING:
    from ..base import Deliver
    from .events_reader import EventsReader

__all__ = ["WIRE_VERSION", "RedisBackend"]

log = logging.getLogger("taskora.redis")

WIRE_VERSION = 6
MIN_COMPAT = 6
T = TypeVar("T")

ENQUEUE_CHUNK = 250
TRIM_BATCH = 500


class RedisBackend:
    """Redis backend: ``RedisBackend(url)`` or ``RedisBackend(client=redis_client)``.

    Given a redis-py client (asyncio or sync), taskora copies its connection settings (host
    and port or unix socket, database, username and password or credential provider, every
    ``ssl_*`` TLS setting, connect timeout) and opens connections of its own with them: it
    never uses the client's pool, so the client stays yours to use and to close.

    On a server with Redis Functions (Redis >= 7.0, Valkey) the scripts run as one library
    (FCALL), otherwise by EVALSHA; ``functions = False`` (before connecting) keeps EVALSHA.
    """

    functions = True

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        prefix: str | None = None,
    ) -> None:
        if url is None and client is None:
            url = "redis://127.0.0.1:6379/0"
        try:
            # several nodes (redis://h1:7000,h2:7001): seeds of a Redis Cluster
            seeds = (
                [parse_address(u) for u in split_seeds(url)]
                if url is not None
                else [_address_of(client)]
            )
        except ValueError as exc:  # parse_address's messages never include the password
            raise ConfigError(f"invalid Redis {'URL' if url else 'client'}: {exc}") from None
        except (TypeError, AttributeError) as exc:
            raise ConfigError(f"invalid Redis URL or client: {type(exc).__name__}") from None
        self.address = seeds[0]
        self._seeds = seeds
        self._topology: Topology | None = None  # set at connect on a Redis Cluster
        self.prefix = prefix
        self.url = describe_seeds(seeds)
        self._client: RespClient | None = None
        self._blocking: dict[str, RespClient] = {}
        self._subscriber: Subscriber | None = None
        self._cancel_listeners: dict[str, CancelListener] = {}
        self._offset_ms = 0.0
        self._token_seq = 0
        self._next_due: dict[str, int] = {}  # task -> due ms of its next delayed job (0: none)
        self._use_functions = False  # the library is loaded on the server (at connect)
        self.waiter = ResultWaiter(self)
        # per task: the enqueue script's SHA and keys, packed once (enqueue_now)
        self._packers: dict[tuple[str, bool], Packed | None] = {}

    def configure(self, *, prefix: str | None) -> None:
        if self._client is not None:
            raise ConfigError("cannot change the prefix of a connected backend")
        self.prefix = prefix
        self._packers.clear()

    def __repr__(self) -> str:
        return f"RedisBackend({self.url!r}, prefix={self.prefix!r})"

    # -- connections --------------------------------------------------------------------
    def _new_client(self, role: str, blocking: bool = False) -> RespClient:
        # Blocking reads wait at most a few seconds server-side; a longer silence is a dead peer.
        client: RespClient
        if self._topology is not None:
            client = ClusterClient(
                self._topology,
                f"taskora:{role}",
                connect_timeout=self.address.connect_timeout,
                reply_timeout=20.0 if blocking else 30.0,
            )
        else:
            client = RespClient(
                self.address,
                f"taskora:{role}",
                connect_timeout=self.address.connect_timeout,
                reply_timeout=20.0 if blocking else 30.0,
            )
        client.functions = self._use_functions
        return client

    def _new_subscriber(
        self,
        role: str,
        on_message: Callable[[str, bytes], None],
        on_reconnect: Callable[[], None] | None = None,
    ) -> Subscriber:
        """Pub/sub: sharded (per slot, on its master) on a cluster, plain otherwise."""
        name = f"taskora:{role}"
        if self._topology is not None:
            return ClusterSubscriber(self._topology, name, on_message, on_reconnect)
        return Subscriber(self.address, name, on_message, on_reconnect)

    @property
    def cluster(self) -> Topology | None:
        """The cluster's slot map when connected to a Redis Cluster, else None."""
        return self._topology

    @property
    def client(self) -> RespClient:
        if self._client is None:
            raise BackendError("the Redis backend is not connected")
        return self._client

    async def connect(self) -> None:
        if self._client is not None:
            return
        try:
            self._topology = await discover(self._seeds, self.url)
        except BackendError:
            self._topology = None
            raise
        client = self._new_client("main")
        try:
            # The Redis clock, read against our monotonic clock: a host clock that is off, or
            # jumps later, never shifts a due time we compute (docs/design.md#decisions, 2).
            start = time.monotonic()
            seconds, micros = await client.execute("TIME")
            end = time.monotonic()
            self._offset_ms = int(seconds) * 1000 + int(micros) / 1000 - (start + end) * 500
            policy, *loaded = await client.pipeline(
                [
                    ("CONFIG", "GET", "maxmemory-policy"),
                    *((("FUNCTION", "LOAD", LIBRARY.code),) if self.functions else ()),
                ]
            )
            self._use_functions = client.functions = bool(loaded) and library_loaded(loaded[0])
            if not client.functions:
                if loaded:  # an older server, FUNCTION not allowed (ACL), over maxmemory
                    log.info(
                        "Redis at %s: scripts run by EVALSHA (FUNCTION LOAD: %s)",
                        self.url,
                        loaded[0],
                    )
                for reply in await client.pipeline(
                    [("SCRIPT", "LOAD", s.source) for s in SCRIPTS.values()]
                ):
                    if isinstance(reply, Exception):
                        raise reply
            self._check_eviction(policy)
            stored = await _handshake(self.prefix).run(client)
            _check_compat(stored)
        except WireVersionError:
            await client.close()
            raise
        except _FAILURES as exc:
            await client.close()
            raise self._error(exc) from None
        self._client = client

    async def close(self) -> None:
        await self.waiter.close()
        subscriber, self._subscriber = self._subscriber, None
        if subscriber is not None:
            await subscriber.close()
        self._cancel_listeners.clear()
        blocking, self._blocking = self._blocking, {}
        for conn in blocking.values():
            await conn.close()
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        self._topology = None

    def reset(self) -> None:
        """Forget connections made in an event loop that is gone (no I/O)."""
        self._client = None
        self._topology = None
        self._blocking = {}
        self._subscriber = None
        self._cancel_listeners.clear()
        self.waiter = ResultWaiter(self)

    def round_trips(self) -> dict[str, int]:
        """Round trips made so far, per connection role (for tests and benchmarks)."""
        out = {"main": self._client.round_trips if self._client else 0}
        for task, conn in self._blocking.items():
            out[f"block:{task}"] = conn.round_trips
        out["waiter"] = self.waiter.round_trips
        return out

    def now_ms(self) -> int:
        """The Redis server's clock, estimated locally (offset measured at connect)."""
        return int(time.monotonic() * 1000 + self._offset_ms)

    def _check_eviction(self, reply: Any) -> None:
        """Warn when Redis may evict keys: an evicted job hash, lock or queue is a job lost
        or run twice without any error. Servers that refuse CONFIG (ACL, managed Redis)
        are not checked."""
        if isinstance(reply, Exception):
            log.info(
                "Redis at %s: cannot read maxmemory-policy (%s); make sure it is noeviction",
                self.url,
                reply.code if isinstance(reply, ReplyError) else type(reply).__name__,
            )
            return
        policy = _str(reply[1]) if isinstance(reply, list) and len(reply) > 1 else None
        if policy is not None and policy != "noeviction":
            log.warning(
                "Redis at %s has maxmemory-policy %s: under memory pressure it will evict "
                "taskora's keys and silently lose jobs; set maxmemory-policy noeviction",
                self.url,
                policy,
            )

    async def verify(self) -> str | None:
        """The meta hash is written at first connect and never deleted by taskora: if it is
        gone, Redis restarted without persistence (or was flushed) and jobs were lost."""
        meta = meta_key(self.prefix)
        with self.errors():
            if await self.client.execute("EXISTS", meta):
                return None
            stored = await _handshake(self.prefix).run(self.client)
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
        except _FAILURES as exc:
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> BackendError:
        if isinstance(exc, ReplyError) and exc.code == "OOM":
            # A script over maxmemory is refused at its first write, so nothing was written.
            return BackendError(
                f"Redis at {self.url} is out of memory (used memory over maxmemory): the "
                "write was refused and nothing was written; free memory (drain queues, "
                "shorter retention) or raise maxmemory"
            )
        detail = str(exc) or type(exc).__name__
        return BackendError(f"Redis at {self.url}: {detail}")

    # -- producer -----------------------------------------------------------------------
    async def enqueue(self, task: str, jobs: Sequence[NewJob]) -> list[EnqueueResult]:
        keys = self.keys(task)
        calls = [
            EnqueueJobs(keys, jobs[i : i + ENQUEUE_CHUNK])
            for i in range(0, len(jobs), ENQUEUE_CHUNK)
        ]
        with self.errors():
            if len(calls) == 1:
                return await calls[0].run(self.client)
            replies = await run_pipelined(self.client, calls)
        return [result for reply in replies for result in reply]

    def enqueue_now(
        self,
        task: str,
        jobs: Sequence[NewJob],
        settle: Callable[[list[EnqueueResult] | BaseException], None],
    ) -> bool:
        client = self._client
        if client is None or len(jobs) > ENQUEUE_CHUNK:
            return False
        call = EnqueueJobs(self.keys(task), jobs)
        functions = client.functions
        on_reply = functools.partial(_converted, settle, call)
        if self._topology is not None:  # a cluster routes the command (sharded script)
            return client.send_now_call(on_reply, *call.command(functions))
        # FCALL or EVALSHA: the mode may change at a reconnect, so the head is kept per mode
        packer = self._packers.get((task, functions))
        if packer is None:
            packer = self._packers[task, functions] = _script_packer(call, functions)
        if packer is None:
            return client.send_now_call(on_reply, *call.command(functions))
        return client.send_packed_call(packer.pack(call.argv()), on_reply)

    async def enqueue_flow(self, task: str, job: NewJob, flow: Flow) -> EnqueueResult:
        if flow.kind == "collect":
            return (await self.collect_push(task, [(job, flow)]))[0]
        from .flow import enqueue_flow

        return await enqueue_flow(self, task, job, flow)

    async def collect_push(
        self, task: str, items: Sequence[tuple[NewJob, Flow]]
    ) -> list[EnqueueResult]:
        from .collect import collect_push

        return await collect_push(self, task, items)

    async def collect_peek(self, task: str, key: str) -> list[str]:
        from .collect import collect_peek

        return await collect_peek(self, task, key)

    async def collect_info(self, task: str, key: str) -> tuple[int, int, int] | None:
        from .collect import collect_info

        return await collect_info(self, task, key)

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
        call = self._finish_call(
            self.keys(task), outcomes, claim, options, token_base, reserve=reserve
        )
        with self.errors():
            reply = await call.run(self.client)
        self._next_due[task] = reply.next_due
        return FinishReport(reply.refused, reply.claimed)

    def _finish_call(
        self,
        keys: TaskKeys,
        outcomes: Sequence[Outcome],
        claim: int,
        options: ClaimOptions,
        token_base: str,
        after_wait: bool = False,
        reserve: int = 0,
    ) -> FinishClaim:
        seq = self._token_seq
        self._token_seq += claim + reserve
        return FinishClaim(
            keys,
            [
                FinishOutcome(
                    o.id,
                    o.token,
                    o.kind,
                    (o.result if o.kind == "completed" else o.error) or "",
                    o.retry_delay_ms,
                )
                for o in outcomes
            ],
            want=claim,
            lock_ttl_ms=options.lock_ttl_ms,
            token_base=token_base,
            token_seq=seq,
            singleton=options.singleton,
            completed_max=options.keep_completed,
            failed_max=options.keep_failed,
            after_wait=after_wait,
            reserve=reserve,
            max_version=options.version,
        )

    async def wait_for_work(
        self,
        task: str,
        timeout_s: float,
        claim: int,
        options: ClaimOptions,
        token_base: str,
        reserve: int = 0,
    ) -> tuple[Claimed, ...]:
        """BZPOPMIN the task's marker with a claim queued right behind it on the same
        connection: Redis runs the claim the moment work arrives, with no round trip back to
        this process first (both replies come back together). When nothing was claimable
        and a delayed job is due sooner than the timeout, block again until it is due."""
        return await self._wait(task, timeout_s, claim, options, token_base, None, reserve)

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
        """Send a finish and the next blocking wait (with its claim) in one write on the
        blocking connection; Redis answers the finish at once and the wait when work comes.
        None when that connection is not ready (use the separate calls).

        Both results are futures that the replies complete from their callbacks, with no
        task in between on the usual path (a wake-up that claimed, or a reply that failed,
        falls back to the coroutines: ``_finished``, ``_wait``): per job that is one asyncio
        task and two event-loop hops less on the worker."""
        conn = self._blocking.get(task)
        if conn is None or self._client is None:
            return None
        keys = self.keys(task)
        # The finish claims nothing: if work is waiting it leaves the marker at 0, so the
        # wait right behind it returns at once and claims it.
        finish = self._finish_call(keys, outcomes, 0, options, token_base)
        wait_s = self._until_due(task, timeout_s)
        wait = self._finish_call(
            keys, (), claim, options, token_base, after_wait=True, reserve=reserve
        )
        futures = conn.send_many_now(
            [
                finish.command(conn.functions),
                ("BZPOPMIN", keys.key("marker"), wait_s),
                wait.command(conn.functions),
            ]
        )
        if futures is None:
            return None
        for future in futures[1:]:  # the wait may be cancelled before it reads them
            future.add_done_callback(_retrieved)
        loop = asyncio.get_running_loop()
        report: asyncio.Future[FinishReport] = loop.create_future()
        futures[0].add_done_callback(functools.partial(self._on_finished, task, finish, report))
        waiter: asyncio.Future[tuple[Claimed, ...]] = loop.create_future()
        wake = _Wake(conn, waiter)
        waiter.add_done_callback(wake.dropped)
        futures[2].add_done_callback(
            functools.partial(
                self._on_woke,
                task,
                wake,
                (futures[1], futures[2], wait),
                time.monotonic() + timeout_s,
                claim,
                options,
                token_base,
                reserve,
            )
        )
        return report, waiter

    def _on_finished(
        self,
        task: str,
        call: FinishClaim,
        report: asyncio.Future[FinishReport],
        raw: asyncio.Future[Any],
    ) -> None:
        """The finish's reply: decoded here; an error reply goes the careful path."""
        if report.done():
            return
        if not raw.cancelled() and raw.exception() is None:
            with contextlib.suppress(Exception):
                reply = call.decode(raw.result())
                self._next_due[task] = reply.next_due
                report.set_result(FinishReport(reply.refused, reply.claimed))
                return
        _chain(asyncio.ensure_future(self._finished(task, raw, call)), report)

    def _on_woke(
        self,
        task: str,
        wake: _Wake,
        first: tuple[asyncio.Future[Any], asyncio.Future[Any], FinishClaim],
        deadline: float,
        claim: int,
        options: ClaimOptions,
        token_base: str,
        reserve: int,
        _: asyncio.Future[Any],
    ) -> None:
        """The wait's replies (the wake-up and the claim behind it): a claim that took jobs,
        a timeout or the deadline ends the wait here; anything else (nothing claimable yet,
        an error) continues in ``_wait``, which blocks again or takes the careful path."""
        waiter = wake.waiter
        if waiter.done():
            return
        popped_f, reply_f, call = first
        resume: tuple[asyncio.Future[Any], asyncio.Future[Any], FinishClaim] | None = first
        if not (popped_f.cancelled() or reply_f.cancelled()) and (
            popped_f.exception() is None and reply_f.exception() is None
        ):
            with contextlib.suppress(Exception):
                popped = popped_f.result()
                reply = call.decode(reply_f.result())
                self._next_due[task] = reply.next_due
                if reply.claimed or popped is None or deadline - time.monotonic() <= 0.001:
                    waiter.set_result(reply.claimed)
                    return
                resume = None  # nothing claimable yet: block again
        remaining = max(deadline - time.monotonic(), 0.001)
        wake.inner = asyncio.ensure_future(
            self._wait(task, remaining, claim, options, token_base, resume, reserve)
        )
        _chain(wake.inner, waiter)

    async def _finished(
        self, task: str, future: asyncio.Future[Any], call: FinishClaim
    ) -> FinishReport:
        try:
            reply = call.decode(await future)
        except (ReplyError, ConnectionError):
            # NOSCRIPT (nothing ran), a key to repair, or a lost connection (it may have run:
            # a second run refuses what was already applied): the careful path
            with self.errors():
                reply = await call.run(self.client)
        self._next_due[task] = reply.next_due
        return FinishReport(reply.refused, reply.claimed)

    async def _wait(
        self,
        task: str,
        timeout_s: float,
        claim: int,
        options: ClaimOptions,
        token_base: str,
        first: tuple[asyncio.Future[Any], asyncio.Future[Any], FinishClaim] | None,
        reserve: int = 0,
    ) -> tuple[Claimed, ...]:
        conn = self._blocking.get(task)
        if conn is None:
            conn = self._blocking[task] = self._new_client(f"block:{task}", blocking=True)
        keys = self.keys(task)
        deadline = time.monotonic() + timeout_s
        wait_s = self._until_due(task, timeout_s)
        try:
            with self.errors():
                while True:
                    if first is not None:
                        popped, claimed, next_due = await self._claimed_on_wake(*first)
                        first = None
                    else:
                        popped, claimed, next_due = await self._pop_and_claim(
                            conn, keys, wait_s, claim, options, token_base, reserve
                        )
                    self._next_due[task] = next_due
                    remaining = deadline - time.monotonic()
                    if claimed or popped is None or remaining <= 0.001:
                        return claimed
                    wait_s = self._until_due(task, remaining)
        except asyncio.CancelledError:
            conn.disconnect()  # a blocked command cannot be taken back: drop the connection
            raise

    def _until_due(self, task: str, limit_s: float) -> float:
        """How long to block: until the next delayed job is due, at most ``limit_s``."""
        due = self._next_due.get(task, 0)
        wait_s = limit_s if not due else min(limit_s, (due - self.now_ms()) / 1000)
        return round(max(wait_s, 0.001), 3)

    async def _pop_and_claim(
        self,
        conn: RespClient,
        keys: TaskKeys,
        timeout_s: float,
        claim: int,
        options: ClaimOptions,
        token_base: str,
        reserve: int = 0,
    ) -> tuple[Any, tuple[Claimed, ...], int]:
        call = self._finish_call(
            keys, (), claim, options, token_base, after_wait=True, reserve=reserve
        )
        popped, reply = await conn.pipeline(
            [("BZPOPMIN", keys.key("marker"), timeout_s), call.command(conn.functions)]
        )
        return await self._claimed_on_wake(_done(popped), _done(reply), call)

    async def _claimed_on_wake(
        self,
        popped_future: asyncio.Future[Any],
        reply_future: asyncio.Future[Any],
        call: FinishClaim,
    ) -> tuple[Any, tuple[Claimed, ...], int]:
        try:
            popped = await popped_future
        except BaseException:
            # the claim behind it fails with it (a lost connection): no asyncio warning
            reply_future.add_done_callback(_retrieved)
            raise
        reply: FinishClaimReply
        try:
            reply = call.decode(await reply_future)
        except ReplyError:  # NOSCRIPT, WRONGTYPE...: the careful path
            reply = await call.run(self.client)
        return popped, reply.claimed, reply.next_due

    async def extend_locks(
        self, task: str, held: Sequence[tuple[str, str]], lock_ttl_ms: int
    ) -> list[int]:
        call = ExtendLocks(self.keys(task), lock_ttl_ms, [HeldLock(*pair) for pair in held])
        with self.errors():
            return await call.run(self.client)

    async def stalled_check(self, task: str, max_count: int) -> StallReport:
        with self.errors():
            return await StalledCheck(self.keys(task), max_count).run(self.client)

    async def trim(self, task: str, retention: Retention) -> int:
        r = retention
        call = Trim(
            self.keys(task),
            batch=TRIM_BATCH,
            completed_age_ms=r.completed_age_ms,
            completed_max=r.completed_max,
            # cancelled and expired jobs are kept like failed ones
            failed_age_ms=r.failed_age_ms,
            failed_max=r.failed_max,
            cancelled_age_ms=r.failed_age_ms,
            cancelled_max=r.failed_max,
            expired_age_ms=r.failed_age_ms,
            expired_max=r.failed_max,
        )
        total = 0
        with self.errors():
            for _ in range(20):
                removed = await call.run(self.client)
                total += removed
                if removed < TRIM_BATCH:
                    break
        return total

    async def subscribe_cancel(self, task: str, listener: CancelListener) -> None:
        channel = self.keys(task).cancel_channel
        self._cancel_listeners[channel] = listener
        if self._subscriber is None:
            self._subscriber = self._new_subscriber("cancel", self._on_message)
        await self._subscriber.subscribe(channel)

    async def unsubscribe_cancel(self, task: str) -> None:
        channel = self.keys(task).cancel_channel
        self._cancel_listeners.pop(channel, None)
        if self._subscriber is not None:
            await self._subscriber.unsubscribe(channel)

    def _on_message(self, channel: str, data: bytes) -> None:
        listener = self._cancel_listeners.get(channel)
        if listener is not None:
            listener(data.decode())

    async def set_progress(self, task: str, job_id: str, value: str) -> None:
        keys = self.keys(task)
        with self.errors():
            await _all(
                self.client.pipeline(
                    [
                        ("HSET", keys.job(job_id), "progress", value),
                        (
                            "XADD",
                            keys.events,
                            "MAXLEN",
                            "~",
                            10000,
                            "*",
                            "event",
                            "progress",
                            "jobId",
                            job_id,
                            "value",
                            value,
                        ),
                    ]
                )
            )

    def open_events(
        self, deliver: Deliver, on_error: Callable[[BaseException], None]
    ) -> EventsReader | ClusterEvents:
        """The process's events reader (see events_reader.py); the App keeps one."""
        from .events_reader import EventsReader

        if self._topology is not None:
            return ClusterEvents(self, deliver, on_error)
        return EventsReader(self, deliver, on_error)

    async def add_logs(self, task: str, job_id: str, entries: Sequence[str]) -> None:
        key = self.keys(task).logs(job_id)
        with self.errors():
            await _all(self.client.pipeline([("RPUSH", key, *entries), ("LTRIM", key, -10000, -1)]))

    # -- results and inspection -------------------------------------------------------------
    async def get_snapshot(self, task: str, job_id: str) -> JobSnapshot:
        key = self.keys(task).job(job_id)
        with self.errors():
            kind, fields = await self.client.pipeline(
                [("TYPE", key), ("HMGET", key, "state", "progress")]
            )
        if kind != b"hash" or isinstance(fields, Exception):
            return JobSnapshot(None)
        return JobSnapshot(_str(fields[0]), _str(fields[1]))

    async def get_logs(self, task: str, job_id: str) -> list[str]:
        key = self.keys(task).logs(job_id)
        with self.errors():
            kind, raw = await self.client.pipeline([("TYPE", key), ("LRANGE", key, 0, -1)])
        if kind != b"list" or isinstance(raw, Exception):
            return []
        return [_str(r) or "" for r in raw]

    async def cancel(self, task: str, job_id: str, reason: str | None) -> str:
        with self.errors():
            return await Cancel(self.keys(task), job_id, reason or "").run(self.client)

    def wait_terminal(
        self, task: str, job_id: str, timeout_s: float | None, event_id: str | None
    ) -> Coroutine[Any, Any, Terminal | None]:
        return self.waiter.wait(task, job_id, timeout_s, event_id)  # no coroutine of its own

    async def counts(self, task: str) -> dict[str, int]:
        k = self.keys(task).key
        with self.errors():
            replies = await _all(
                self.client.pipeline(
                    [
                        ("LLEN", k("wait")),
                        ("ZCARD", k("prioritized")),
                        ("ZCARD", k("delayed")),
                        ("LLEN", k("active")),
                        ("ZCARD", k("completed")),
                        ("ZCARD", k("failed")),
                        ("ZCARD", k("cancelled")),
                        ("ZCARD", k("expired")),
                        ("GET", k("parked")),
                        ("ZCARD", k("reserved")),
                    ]
                )
            )
        wait, prio, delayed, active, completed, failed, cancelled, expired, parked, ahead = replies
        return {
            # parked: waiting for their key's slot; ahead: claimed ahead, not started yet
            "waiting": wait + prio + int(parked or 0) + ahead,
            "delayed": delayed,
            "active": active,
            "completed": completed,
            "failed": failed,
            "cancelled": cancelled,
            "expired": expired,
        }

    async def parked_versions(self, task: str) -> dict[int, int]:
        with self.errors():
            raw = await self.client.execute(
                "ZRANGE", self.keys(task).key("newer"), 0, -1, "WITHSCORES"
            )
        counts: dict[int, int] = {}
        for i in range(1, len(raw), 2):  # score = version * 10^9 + sequence (lib.lua)
            v = int(float(raw[i])) // 1_000_000_000
            counts[v] = counts.get(v, 0) + 1
        return counts

    async def list_jobs(
        self, task: str, state: str, offset: int, limit: int
    ) -> list[tuple[str, dict[str, str]]]:
        keys = self.keys(task)
        stop = offset + limit - 1
        run = self.client.execute
        with self.errors():
            if state in ("completed", "failed", "cancelled", "expired"):
                ids = await run("ZREVRANGE", keys.key(state), offset, stop)
            elif state == "delayed":
                ids = await run("ZRANGE", keys.key("delayed"), offset, stop)
            elif state == "active":  # a few per worker: read them all, order by ts below
                ids = await run("LRANGE", keys.key("active"), 0, -1)
            elif state == "waiting":
                ids = await self._waiting_ids(keys, offset, limit)
            else:
                raise ConfigError(f"unknown state {state!r}")
            rows = await self.client.pipeline([("HGETALL", keys.job(_str(i) or "")) for i in ids])
        out = []
        for job_id, row in zip(ids, rows, strict=True):
            if isinstance(row, list) and row:
                fields = {_str(row[i]) or "": _str(row[i + 1]) or "" for i in range(0, len(row), 2)}
                out.append((_str(job_id) or "", fields))
        if state == "active":
            out.sort(key=lambda row: _int_or(row[1].get("ts"), 0))
            return out[offset : offset + limit]
        return out

    async def _waiting_ids(self, keys: TaskKeys, offset: int, limit: int) -> list[Any]:
        """Claim order: claimed-ahead jobs (a few per worker) merge with the prioritized set
        by score (a plain job's score is its ts, after every prioritized one), then the list."""
        run = self.client.execute
        ahead_raw, prioritized_raw = await self.client.pipeline(
            [
                ("ZRANGE", keys.key("reserved"), 0, -1, "WITHSCORES"),
                ("ZRANGE", keys.key("prioritized"), 0, offset + limit - 1, "WITHSCORES"),
            ]
        )
        scored = [
            (float(raw[i + 1]), raw[i])
            for raw in (ahead_raw, prioritized_raw)
            for i in range(0, len(raw), 2)
        ]
        head = [job_id for _, job_id in sorted(scored, key=lambda pair: pair[0])]
        if len(head) >= offset + limit:
            return head[offset : offset + limit]
        total = len(ahead_raw) // 2 + await run("ZCARD", keys.key("prioritized"))
        picked = head[offset:]
        skip = max(0, offset - total)
        want = limit - len(picked)
        # the list is popped from its right end: claim order is right to left
        plain = await run("LRANGE", keys.key("wait"), -(skip + want), -(skip + 1))
        return picked + list(reversed(plain))

    async def expire_due(self, task: str, ids: Sequence[str]) -> list[str]:
        """End these jobs if their ttl passed before any worker claimed them."""
        with self.errors():
            return await ExpireDue(self.keys(task), ids).run(self.client)

    # -- workflows (redis/workflows.py) ---------------------------------------------------------
    async def workflow_create(self, wf_id: str, plan: WorkflowPlan) -> bool:
        from .workflows import workflow_create

        return await workflow_create(self, wf_id, plan)

    async def workflow_started(self, wf_id: str) -> None:
        from .workflows import workflow_started

        await workflow_started(self, wf_id)

    async def workflow_advance(
        self, wf_id: str, node: int, result: str, keep_ms: int
    ) -> WorkflowAdvance:
        from .workflows import workflow_advance

        return await workflow_advance(self, wf_id, node, result, keep_ms)

    async def workflow_end(
        self, wf_id: str, state: str, node: int, message: str, keep_ms: int
    ) -> list[tuple[int, str]]:
        from .workflows import workflow_end

        return await workflow_end(self, wf_id, state, node, message, keep_ms)

    async def workflow_read(self, wf_id: str) -> WorkflowInfo | None:
        from .workflows import workflow_read

        return await workflow_read(self, wf_id)

    async def workflow_wait(self, wf_id: str, timeout_s: float | None) -> Terminal | None:
        from .workflows import workflow_wait

        return await workflow_wait(self, wf_id, timeout_s)

    async def workflow_due(self, limit: int) -> list[str]:
        from .workflows import workflow_due

        return await workflow_due(self, limit)

    async def workflow_undue(self, wf_ids: Sequence[str]) -> None:
        from .workflows import workflow_undue

        await workflow_undue(self, wf_ids)

    async def workflow_ids(self, limit: int) -> list[str]:
        """SCAN (every master of a cluster; the records share the ``{:wf}`` slot, so one
        answers) with an escaped MATCH for ``<root>:{:wf}:*``, never KEYS. The shared
        ``deadlines`` zset there is not a record."""
        head = workflows_base(self.prefix)
        pattern = _glob_escape(head) + "*"
        found: list[str] = []
        with self.errors():
            for node in masters(self.client):
                cursor: Any = b"0"
                while len(found) < limit:
                    cursor, keys = await node.execute(
                        "SCAN", cursor, "MATCH", pattern, "COUNT", 1000
                    )
                    found += [(_str(k) or "")[len(head) :] for k in keys]
                    if cursor in (b"0", "0", 0):
                        break
        return [w for w in found if w and w != "deadlines" and ":" not in w][:limit]

    async def workflow_records(
        self, wf_ids: Sequence[str], nodes: bool = False
    ) -> list[WorkflowRecord | None]:
        from .workflows import workflow_records

        return await workflow_records(self, wf_ids, nodes)

    async def server_info(self) -> dict[str, Any]:
        """INFO from every master (one on a plain Redis): memory and clients are summed, so a
        cluster shows its totals; version and uptime are the first master's."""
        with self.errors():
            raws = await asyncio.gather(*(node.execute("INFO") for node in masters(self.client)))
        infos = [_info(raw) for raw in raws]
        first = infos[0]

        def total(name: str) -> int:
            return sum(_int_or(info.get(name), 0) for info in infos)

        used = total("used_memory")
        return {
            "backend": "redis",
            "version": first.get("redis_version") or first.get("valkey_version"),
            "masters": len(infos),
            "used_memory": used,
            "used_memory_human": first.get("used_memory_human") if len(infos) == 1 else _mib(used),
            "maxmemory": total("maxmemory"),
            "clients": total("connected_clients"),
            "blocked_clients": total("blocked_clients"),
            "uptime_s": _int_or(first.get("uptime_in_seconds"), 0),
        }

    # -- the worker registry (docs/design.md#workers) -----------------------------------------
    async def worker_beat(self, worker_id: str, record: str, ttl_ms: int) -> None:
        records, expiries = workers_keys(self.prefix)
        with self.errors():
            await WorkerBeat(records, expiries, worker_id, record, ttl_ms).run(self.client)

    async def worker_list(self) -> list[tuple[str, str, int]]:
        """One pipeline (both keys share a slot); entries past their time are left out by the
        server's clock (as estimated here) even before a beat removes them."""
        records, expiries = workers_keys(self.prefix)
        with self.errors():
            raw, alive = await _all(
                self.client.pipeline(
                    [
                        ("HGETALL", records),
                        ("ZRANGEBYSCORE", expiries, f"({self.now_ms()}", "+inf", "WITHSCORES"),
                    ]
                )
            )
        stored = {_str(raw[i]) or "": _str(raw[i + 1]) or "" for i in range(0, len(raw), 2)}
        out = []
        for i in range(0, len(alive), 2):
            worker_id = _str(alive[i]) or ""
            record = stored.get(worker_id)
            if record is not None:
                out.append((worker_id, record, int(float(alive[i + 1]))))
        return out

    # -- schedules (redis/schedules.py) -------------------------------------------------------
    async def schedule_lock(self, token: str, ttl_ms: int, release: bool = False) -> bool:
        from .schedules import schedule_lock

        return await schedule_lock(self, token, ttl_ms, release)

    async def schedule_due(
        self, token: str, limit: int
    ) -> tuple[int, list[tuple[str, int, str]]] | None:
        from .schedules import schedule_due

        return await schedule_due(self, token, limit)

    async def schedule_read(self, name: str | None) -> list[tuple[str, str, int | None]]:
        from .schedules import schedule_read

        return await schedule_read(self, name)

    async def schedule_write(
        self, name: str, expect: ScheduleExpect, record: str | None, next_ms: int | None
    ) -> bool:
        from .schedules import schedule_write

        return await schedule_write(self, name, expect, record, next_ms)

    async def retry_failed(self, task: str, ids: Sequence[str] | None, limit: int) -> list[str]:
        with self.errors():
            retried = await RetryFailed(self.keys(task), limit, ids or ()).run(self.client)
        for job_id in retried:
            self.waiter.forget(task, job_id)
        return retried

    # -- the inspector's reads (plain pipelined commands: nothing here is a hot path) --------
    async def task_names(self) -> list[str]:
        """Tasks with an events stream (every dispatch writes one entry, and the stream is
        capped, never deleted): found by SCAN with an escaped MATCH, never KEYS, so Redis
        never blocks on it and tasks written by any producer (a Node service too) show."""
        head = _glob_escape(root(self.prefix)) + ":{"
        pattern = head + "*}:events"
        names: set[str] = set()
        start = len(root(self.prefix)) + 2
        with self.errors():
            for node in masters(self.client):  # on a cluster, every master holds some
                cursor: Any = b"0"
                while True:
                    cursor, found = await node.execute(
                        "SCAN", cursor, "MATCH", pattern, "COUNT", 1000
                    )
                    for raw in found:
                        key = _str(raw) or ""
                        names.add(key[start : -len("}:events")])
                    if cursor in (b"0", "0", 0):
                        break
        return sorted(name for name in names if name)

    async def locate(self, tasks: Sequence[str], job_id: str) -> list[str]:
        if not tasks:
            return []
        with self.errors():
            kinds = await self.client.pipeline(
                [("TYPE", self.keys(task).job(job_id)) for task in tasks]
            )
        return [task for task, kind in zip(tasks, kinds, strict=True) if kind == b"hash"]

    async def job_detail(self, task: str, job_id: str) -> JobDetail | None:
        keys = self.keys(task)
        with self.errors():
            kind, raw, logs_kind, logs = await self.client.pipeline(
                [
                    ("TYPE", keys.job(job_id)),
                    ("HGETALL", keys.job(job_id)),
                    ("TYPE", keys.logs(job_id)),
                    ("LRANGE", keys.logs(job_id), 0, -1),
                ]
            )
            if kind != b"hash" or not isinstance(raw, list):
                return None
            fields = {_str(raw[i]) or "": _str(raw[i + 1]) or "" for i in range(0, len(raw), 2)}
            # the job's entries lie between its creation and its end: read only that range
            start = _int_or(fields.get("ts"), 0)
            end = _int_or(fields.get("finishedOn"), 0)
            stop = str(end + 1) if end else "+"
            entries = await self.client.execute(
                "XRANGE", keys.events, str(start), stop, "COUNT", 10_000
            )
        events = []
        for entry_id, pairs in entries or ():
            values = {_str(pairs[i]): _str(pairs[i + 1]) for i in range(0, len(pairs), 2)}
            if values.get("jobId") == job_id:
                ms = int((_str(entry_id) or "0").split("-")[0])
                events.append((ms, values.get("event") or ""))
        lines = [_str(r) or "" for r in logs] if logs_kind == b"list" else []
        return JobDetail(fields, lines, events)

    async def throughput(
        self, task: str, since_ms: int, minutes: int
    ) -> list[tuple[int, int, int]]:
        first = since_ms // 60_000 * 60_000
        starts = [first + i * 60_000 for i in range(minutes)]
        k = self.keys(task).key
        commands: list[tuple[Any, ...]] = []
        for minute in starts:
            commands += [
                ("GET", k(f"metrics:completed:{minute}")),
                ("GET", k(f"metrics:failed:{minute}")),
            ]
        with self.errors():
            replies = await self.client.pipeline(commands)
        return [
            (minute, _count(replies[2 * i]), _count(replies[2 * i + 1]))
            for i, minute in enumerate(starts)
        ]

    async def purge(self, task: str, state: str, older_than_ms: int) -> int:
        """Through ``trim.lua``: only ``state``'s age limit bites (the others never do)."""
        if state not in ("completed", "failed", "cancelled", "expired"):
            raise ConfigError(f"cannot purge jobs in state {state!r}")
        never, no_cap = 10**15, 2**62
        ages = {name: never for name in ("completed", "failed", "cancelled", "expired")}
        ages[state] = older_than_ms
        call = Trim(
            self.keys(task),
            batch=TRIM_BATCH,
            completed_age_ms=ages["completed"],
            completed_max=no_cap,
            failed_age_ms=ages["failed"],
            failed_max=no_cap,
            cancelled_age_ms=ages["cancelled"],
            cancelled_max=no_cap,
            expired_age_ms=ages["expired"],
            expired_max=no_cap,
        )
        total = 0
        with self.errors():
            while True:
                removed = await call.run(self.client)
                total += removed
                if removed < TRIM_BATCH:
                    return total

    async def job_fields(self, task: str, job_id: str) -> dict[str, str]:
        """Every stored field of a job (for tools and tests)."""
        with self.errors():
            raw = await self.client.execute("HGETALL", self.keys(task).job(job_id))
        return {_str(raw[i]) or "": _str(raw[i + 1]) or "" for i in range(0, len(raw), 2)}


_FAILURES = (ReplyError, ConnectionError, OSError, asyncio.TimeoutError)


async def _all(replies: Awaitable[list[Any]]) -> list[Any]:
    """Raise the first error reply of a pipeline."""
    out = await replies
    for reply in out:
        if isinstance(reply, Exception):
            raise reply
    return out


def _address_of(client: Any) -> Address:
    """Every connection setting of a redis-py client (sync or asyncio): address, database,
    credentials (a credential provider is asked once, now), TLS and connect timeout."""
    pool = client.connection_pool
    kw = pool.connection_kwargs
    username, password = kw.get("username"), kw.get("password")
    provider = kw.get("credential_provider")
    if provider is not None:
        credentials = tuple(provider.get_credentials())
        username, password = (None, *credentials) if len(credentials) == 1 else credentials[:2]
    timeout = kw.get("socket_connect_timeout") or kw.get("socket_timeout") or 5.0
    common: dict[str, Any] = {
        "db": int(kw.get("db") or 0),
        "username": username,
        "password": password,
        "connect_timeout": float(timeout),
    }
    if kw.get("path"):
        return Address(path=kw["path"], **common)
    tls_options = {k: v for k, v in kw.items() if k.startswith("ssl_") and v is not None}
    return Address(
        host=kw.get("host") or "127.0.0.1",
        port=int(kw.get("port") or 6379),
        tls="ssl" in pool.connection_class.__name__.lower(),
        tls_options=tls_options,
        **common,
    )


class _Wake:
    """A wait sent by ``finish_then_wait``: its result future, and the coroutine that took
    over from the reply callback, if one did."""

    __slots__ = ("conn", "inner", "waiter")

    def __init__(self, conn: RespClient, waiter: asyncio.Future[tuple[Claimed, ...]]) -> None:
        self.conn = conn
        self.waiter = waiter
        self.inner: asyncio.Future[tuple[Claimed, ...]] | None = None

    def dropped(self, waiter: asyncio.Future[tuple[Claimed, ...]]) -> None:
        """Cancelled by the worker: a blocked command cannot be taken back, so the
        connection goes (as ``_wait`` does when it is cancelled)."""
        if not waiter.cancelled():
            return
        if self.inner is not None:
            self.inner.cancel()
        else:
            self.conn.disconnect()


def _chain(source: asyncio.Future[T], target: asyncio.Future[T]) -> None:
    """``target`` ends as ``source`` does (unless it ended first)."""

    def copy(done: asyncio.Future[T]) -> None:
        if target.done():
            return
        if done.cancelled():
            target.cancel()
        elif done.exception() is not None:
            target.set_exception(done.exception())  # type: ignore[arg-type]
        else:
            target.set_result(done.result())

    source.add_done_callback(copy)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _done(value: Any) -> asyncio.Future[Any]:
    """A finished future holding a pipeline reply (an exception reply is raised on await)."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)
    return future


def _script_packer(call: EnqueueJobs, functions: bool) -> Packed | None:
    """The part of ``call``'s command before its ARGV, packed once; None if the command is
    not that part followed by the ARGV (then it is packed whole)."""
    command, argv = call.command(functions), call.argv()
    head = command[: len(command) - len(argv)]
    return Packed(head) if head and command[len(head) :] == tuple(argv) else None


def _converted(
    settle: Callable[[list[EnqueueResult] | BaseException], None], call: EnqueueJobs, raw: Any
) -> None:
    """The reply of ``enqueue_now``, decoded, to ``settle`` (an error as it is)."""
    if isinstance(raw, BaseException):
        settle(raw)
        return
    try:
        results = call.decode(raw)
    except Exception as exc:  # a reply of the wrong shape: the retrying path reports it
        settle(exc)
        return
    settle(results)


def _handshake(prefix: str | None) -> Handshake:
    return Handshake(meta_key(prefix), WIRE_VERSION, MIN_COMPAT, f"taskora-wire-{WIRE_VERSION}")


def _check_compat(stored: Meta) -> None:
    ours = {"wireVersion": WIRE_VERSION, "minCompat": MIN_COMPAT}
    raw = list(stored)
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


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _glob_escape(text: str) -> str:
    """A literal for SCAN's MATCH (docs/design.md#decisions, 10)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _info(raw: Any) -> dict[str, str]:
    """INFO's ``name:value`` lines (sections and blanks skipped)."""
    out: dict[str, str] = {}
    for line in (_str(raw) or "").splitlines():
        name, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            out[name] = value.strip()
    return out


def _mib(n: int) -> str:
    return f"{n / 1048576:.2f}M"


def _int_or(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw else default
    except ValueError:
        return default


def _count(raw: Any) -> int:
    try:
        return int(raw) if raw is not None and not isinstance(raw, Exception) else 0
    except (TypeError, ValueError):
        return 0
