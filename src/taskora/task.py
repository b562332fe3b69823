"""Task: a named handler plus its options; ``dispatch()`` turns data into a job."""

from __future__ import annotations

import inspect
import os
import time
import typing
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from . import serializer
from .backends.base import EnqueueResult, Flow, NewJob
from .collect import Collect, CollectInfo, check_key, collect_flow, collect_key
from .context import Context, LocalIO
from .durations import Duration, to_ms
from .errors import (
    ConfigError,
    DuplicateJobError,
    SerializationError,
    ThrottledError,
    ValidationError,
)
from .handle import ResultHandle
from .middleware import Middleware, check_middleware
from .runtime import Runtime
from .schemas import Schema, handler_types, schema_for
from .types import Debounce, Deduplicate, Retry, Stall, Throttle, coerce_flow
from .versions import Migration, Versioning
from .versions import resolve as resolve_versions
from .workflow import Chunk, Group, Signature, chunk_items, map_items

__all__ = ["MAX_PRIORITY", "Task", "TaskOptions"]

In = TypeVar("In")
Out = TypeVar("Out")

# Priority is encoded in a sorted-set score as -priority * 1e13 + ts (wire format v6); past
# ~900 the score loses millisecond precision, so ordering inside a band gets coarser.
MAX_PRIORITY = 1000

_UNSET: Any = object()


_NO_DATA: Any = object()


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """A task's resolved options (task value, else app default, else built-in default)."""

    retry: Retry | None
    timeout_ms: int  # 0 = no timeout
    concurrency: int
    ttl_ms: int  # 0 = none
    singleton: bool
    concurrency_limit: int  # 0 = unset (1 when a concurrency_key is given)
    stall: Stall


class Task(Generic[In, Out]):
    """A registered handler. Call it directly to run the handler in-process (no queue)."""

    def __init__(
        self,
        app: Runtime,
        name: str,
        handler: Callable[..., Any] | None,
        *,
        retry: Retry | None = _UNSET,
        timeout: Duration | None = _UNSET,
        concurrency: int = _UNSET,
        ttl: Duration | None = None,
        singleton: bool = False,
        concurrency_limit: int | None = None,
        stall: Stall = _UNSET,
        on_cancel: Callable[..., Any] | None = None,
        input: Any = _UNSET,
        output: Any = _UNSET,
        middleware: Iterable[Middleware] = (),
        collect: Collect | None = None,
        version: int | None = None,
        since: int | None = None,
        migrate: Sequence[Migration] | Mapping[int, Migration] | None = None,
    ) -> None:
        self.app = app
        self.versioning: Versioning = resolve_versions(f"task {name!r}", version, since, migrate)
        self.name = name
        self.handler = handler
        self.on_cancel = on_cancel
        if retry is not _UNSET and retry is not None and not isinstance(retry, Retry):
            raise ConfigError(f"task {name!r}: retry must be a taskora.Retry, got {retry!r}")
        if stall is not _UNSET and not isinstance(stall, Stall):
            raise ConfigError(f"task {name!r}: stall must be a taskora.Stall, got {stall!r}")
        if concurrency is not _UNSET:
            _int_at_least(concurrency, f"task {name!r}: concurrency", 1)
        if timeout is not _UNSET and timeout is not None:
            to_ms(timeout, f"task {name!r}: timeout")
        if concurrency_limit is not None:
            _int_at_least(concurrency_limit, f"task {name!r}: concurrency_limit", 1)
        if on_cancel is not None and not callable(on_cancel):
            raise ConfigError(f"task {name!r}: on_cancel must be callable")
        if collect is not None and not isinstance(collect, Collect):
            raise ConfigError(f"task {name!r}: collect must be a taskora.Collect, got {collect!r}")
        self.collect = collect
        self._retry = retry
        self._timeout = timeout
        self._concurrency = concurrency
        self._ttl_ms = 0 if ttl is None else to_ms(ttl, f"task {name!r}: ttl", allow_zero=False)
        self._singleton = bool(singleton)
        self._concurrency_limit = concurrency_limit or 0
        self._stall = stall
        self._options: TaskOptions | None = None
        self._arity = _arity(handler) if handler is not None else 1
        self.is_async = handler is not None and _is_async(handler)
        self.middleware: tuple[Middleware, ...] = check_middleware(middleware, f"task {name!r}")
        # Schemas are built now (never per job); None means no validation and no cost.
        hinted_in, hinted_out = (
            handler_types(handler, f"task {name!r}") if handler is not None else (None, None)
        )
        self.input: Schema | None = schema_for(
            hinted_in if input is _UNSET else input, f"task {name!r} input"
        )
        self.output: Schema | None = schema_for(
            hinted_out if output is _UNSET else output, f"task {name!r} output"
        )
        # A collect task's input is the batch; a list[X] schema checks each item at dispatch.
        self._item: Schema | None = None
        if collect is not None and self.input is not None:
            if typing.get_origin(self.input.type) is list and typing.get_args(self.input.type):
                item_type = typing.get_args(self.input.type)[0]
                self._item = schema_for(item_type, f"task {name!r} collect item")

    # -- options --------------------------------------------------------------------
    @property
    def options(self) -> TaskOptions:
        """Resolved once: task options and app defaults are fixed after definition."""
        if self._options is None:
            self._options = self._resolve()
        return self._options

    def _resolve(self) -> TaskOptions:
        defaults = self.app.defaults
        timeout = defaults.timeout if self._timeout is _UNSET else self._timeout
        return TaskOptions(
            retry=defaults.retry if self._retry is _UNSET else self._retry,
            timeout_ms=0 if timeout is None else to_ms(timeout, f"task {self.name!r}: timeout"),
            concurrency=defaults.concurrency if self._concurrency is _UNSET else self._concurrency,
            ttl_ms=self._ttl_ms,
            singleton=self._singleton,
            concurrency_limit=self._concurrency_limit,
            stall=defaults.stall if self._stall is _UNSET else self._stall,
        )

    # -- direct call ----------------------------------------------------------------
    def __call__(self, data: In = None, ctx: Context | None = None) -> Any:  # type: ignore[assignment]
        """Run the handler in-process, returning its result (a coroutine for async handlers)."""
        if self.handler is None:
            raise ConfigError(
                f"task {self.name!r} has no handler in this process (registered from a "
                "contract: app.implement(contract, handler) runs it here)"
            )
        if ctx is None and self._arity >= 2:
            ctx = Context(str(uuid.uuid4()), self.name, 1, int(time.time() * 1000), LocalIO())
        return self.invoke(data, ctx)

    def invoke(self, data: Any, ctx: Context | None) -> Any:
        assert self.handler is not None
        if self._arity == 0:
            return self.handler()
        if self._arity == 1:
            return self.handler(data)
        return self.handler(data, ctx)

    # -- dispatch -------------------------------------------------------------------
    def s(self, data: Any = _NO_DATA) -> Signature:
        """A workflow step of this task (docs/design.md#workflows): with ``data`` for a first
        step, without it to take the previous step's output."""
        return Signature(self) if data is _NO_DATA else Signature(self, data)

    def map(self, items: Iterable[Any]) -> Group:
        """A group of one step per item (docs/design.md#workflows): its output is the list
        of the items' outputs, in order."""
        return map_items(self, items)

    def chunk(self, items: Iterable[Any], *, size: int) -> Chunk:
        """The items ``size`` at a time (each chunk starts when the previous one completed);
        the output is every item's output, in order (docs/design.md#workflows)."""
        return chunk_items(self, items, size)

    def dispatch(
        self,
        data: In = None,  # type: ignore[assignment]
        *,
        delay: Duration | None = None,
        priority: int | None = None,
        ttl: Duration | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
        debounce: Debounce | Mapping[str, Any] | None = None,
        throttle: Throttle | Mapping[str, Any] | None = None,
        deduplicate: Deduplicate | Mapping[str, Any] | None = None,
        throw_on_reject: bool = False,
    ) -> ResultHandle[Out]:
        """Enqueue a job in the background and return its handle at once.

        Bad options and data that is not JSON raise here; data the input schema rejects makes
        the handle's await raise ValidationError. Either way nothing is written.
        """
        if (  # a plain dispatch (the usual one): no option to check, the task's defaults
            delay is None
            and priority is None
            and ttl is None
            and concurrency_key is None
            and concurrency_limit is None
            and debounce is None
            and throttle is None
            and deduplicate is None
            and self.collect is None
        ):
            app = self.app
            try:
                job = self._plain_job(data)
            except ValidationError as exc:
                return self._failed_handle(exc)
            future = app._submit(self.name, job, None)
            return ResultHandle(app, self.name, job.id, future, None, self.output)
        try:
            job, flow = self._build(
                data,
                delay,
                priority,
                ttl,
                concurrency_key,
                concurrency_limit,
                debounce,
                throttle,
                deduplicate,
            )
        except ValidationError as exc:
            return self._failed_handle(exc)
        reject = _rejecter(job.id, flow) if throw_on_reject and flow is not None else None
        future = self.app._submit(self.name, job, flow)
        return ResultHandle(self.app, self.name, job.id, future, reject, self.output)

    def dispatch_many(self, items: Iterable[Mapping[str, Any]]) -> list[ResultHandle[Out]]:
        """Dispatch several jobs; plain ones reach the backend together in one round trip.

        Each item is ``{"data": ..., "options": {...}}``. An item with bad data or options
        fails only its own handle (``await handle`` raises); the others are enqueued.
        """
        app, name = self.app, self.name
        submit = app._submitter()
        plain = self.collect is None  # an item without options: _build's defaults, unchecked
        handles: list[ResultHandle[Out]] = []
        for index, item in enumerate(items):
            try:
                if type(item) is not dict and not isinstance(item, Mapping):
                    raise ConfigError(f"dispatch_many item {index} must be a dict")
                options = item.get("options")
                throw = False
                if options:
                    options = dict(options)
                    throw = bool(options.pop("throw_on_reject", False))
                    job, flow = self._build(item.get("data"), **options)
                elif plain:
                    job, flow = self._plain_job(item.get("data")), None
                else:
                    job, flow = self._build(item.get("data"))
            except (ConfigError, SerializationError, ValidationError, TypeError) as exc:
                handles.append(self._failed_handle(exc))
                continue
            reject = _rejecter(job.id, flow) if throw and flow is not None else None
            handles.append(
                ResultHandle(app, name, job.id, submit(name, job, flow), reject, self.output)
            )
        return handles

    def on(self, event: str, fn: Callable[[Any], Any]) -> Callable[[], None]:
        """Listen to this task's ``event`` (completed, failed, retrying, progress, active,
        stalled, cancelled, waiting, delayed) from every process; returns ``unsubscribe()``."""
        return self.app._listen(self.name, event, fn)

    def handle(self, job_id: str) -> ResultHandle[Out]:
        """A handle for a job dispatched earlier, possibly by another process."""
        if not isinstance(job_id, str) or not job_id:
            raise ConfigError(f"job id must be a non-empty string, got {job_id!r}")
        return ResultHandle(self.app, self.name, job_id, output=self.output)

    def _failed_handle(self, exc: BaseException) -> ResultHandle[Out]:
        future = self.app._failed_future(exc)
        return ResultHandle(self.app, self.name, str(uuid.uuid4()), future)

    def _build(
        self,
        data: Any,
        delay: Duration | None = None,
        priority: int | None = None,
        ttl: Duration | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
        debounce: Any = None,
        throttle: Any = None,
        deduplicate: Any = None,
    ) -> tuple[NewJob, Flow | None]:
        name = self.name
        if self.collect is not None:
            given = [
                k
                for k, v in (
                    ("delay", delay),
                    ("priority", priority),
                    ("ttl", ttl),
                    ("concurrency_key", concurrency_key),
                    ("concurrency_limit", concurrency_limit),
                    ("debounce", debounce),
                    ("throttle", throttle),
                    ("deduplicate", deduplicate),
                )
                if v is not None
            ]
            if given:  # the reference ignores them silently; a batch has no per-item options
                raise ConfigError(
                    f"task {name!r} collects its dispatches: {given[0]} is not "
                    "available (docs/design.md#collect)"
                )
            return self._build_item(data)
        delay_ms = 0 if delay is None else to_ms(delay, "delay")
        if priority is None:
            priority = 0
        elif isinstance(priority, bool) or not isinstance(priority, int):
            raise ConfigError(f"priority must be an integer, got {priority!r}")
        elif not 0 <= priority <= MAX_PRIORITY:
            raise ConfigError(f"priority must be between 0 and {MAX_PRIORITY}, got {priority}")
        ttl_ms = self._ttl_ms if ttl is None else to_ms(ttl, "ttl", allow_zero=False)
        limit = 0
        if concurrency_key is not None:
            if not isinstance(concurrency_key, str) or not concurrency_key:
                raise ConfigError(
                    f"concurrency_key must be a non-empty string, got {concurrency_key!r}"
                )
            if concurrency_limit is not None:
                limit = _int_at_least(concurrency_limit, "concurrency_limit", 1)
            else:
                limit = self._concurrency_limit or 1
        elif concurrency_limit is not None:
            raise ConfigError("concurrency_limit needs a concurrency_key")
        flow = _flow(debounce, throttle, deduplicate)
        if self.input is not None:  # the validated value (defaults applied) is what is stored
            data = self.input.to_json(data, "input")
        job = self._new_job(
            data,
            priority=priority,
            delay_ms=delay_ms,
            ttl_ms=ttl_ms,
            concurrency_key=concurrency_key or "",
            concurrency_limit=limit,
        )
        return job, flow

    def _plain_job(self, data: Any) -> NewJob:
        """The job of a dispatch without options: what ``_build`` makes of it, unchecked."""
        if self.input is not None:  # the validated value (defaults applied) is what is stored
            data = self.input.to_json(data, "input")
        return self._new_job(data, ttl_ms=self._ttl_ms)

    def _new_job(self, data: Any, **fields: Any) -> NewJob:
        """Serialize ``data`` (bounded by max_payload_bytes) into a job of this task."""
        encoded = serializer.dumps(data, self._data_name)
        limit_bytes = self.app.max_payload_bytes
        if len(encoded) * 4 > limit_bytes and len(encoded.encode()) > limit_bytes:
            raise SerializationError(
                f"data for task {self.name!r} is larger than max_payload_bytes ({limit_bytes})"
            )
        retry = self.options.retry
        return NewJob(
            self.app._new_id(),
            encoded,
            self.versioning.version,
            retry.attempts if retry else 1,
            **fields,
        )

    def _data_name(self) -> str:
        return f"data for task {self.name!r}"

    def _build_item(self, data: Any) -> tuple[NewJob, Flow]:
        """One collect item: the key is checked before anything is sent, so a bad key writes
        nothing. The input schema applies to the batch (what the handler receives); when it
        is ``list[X]`` each item is checked against ``X`` here, as a plain task's data is."""
        assert self.collect is not None
        key = collect_key(self.collect, data)
        if self._item is not None:
            data = self._item.to_json(data, "input")
        job = self._new_job(data)
        return job, collect_flow(self.collect, key)

    # -- collect ------------------------------------------------------------------------
    async def peek_collect(self, key: str) -> list[Any]:
        """The items buffered under ``key`` (a resolved key string), in dispatch order;
        ``[]`` when none. Items that are not valid JSON are skipped."""
        self._collect_key(key)
        raw = await self.app._route(lambda: self._peek(key))
        items = []
        for item in raw:
            try:
                items.append(serializer.loads(item, "collect item"))
            except SerializationError:
                continue
        return items

    async def inspect_collect(self, key: str) -> CollectInfo | None:
        """Count and first/last append times (epoch ms) of the buffer of ``key``, or None."""
        self._collect_key(key)
        info = await self.app._route(lambda: self._info(key))
        return None if info is None else CollectInfo(*info)

    def _collect_key(self, key: object) -> None:
        if self.collect is None:
            raise ConfigError(f"task {self.name!r} is not a collect task")
        check_key(key)

    async def _peek(self, key: str) -> list[str]:
        backend = await self.app._connected_backend()
        return await backend.collect_peek(self.name, key)

    async def _info(self, key: str) -> tuple[int, int, int] | None:
        backend = await self.app._connected_backend()
        return await backend.collect_info(self.name, key)

    def __repr__(self) -> str:
        return f"Task({self.name!r})"


def new_id() -> str:
    """A random (version 4) UUID string, made without building a uuid.UUID object.

    Ids are made 128 at a time from one ``os.urandom`` read (one syscall, not one per job).
    ``next`` on the list iterator is atomic, so threads never share an id; a forked child
    drops the ones its parent had ready (``_fresh_ids``), or both would hand them out."""
    global _ids
    job_id = next(_ids, None)
    if job_id is None:
        _ids = batch = iter(_make_ids(_ID_BATCH))
        job_id = next(batch)
    return job_id


_ID_BATCH = 128
_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))  # byte 6: version 4
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))  # byte 8: the RFC 4122 variant
_ids: Iterator[str] = iter(())


def _make_ids(n: int) -> list[str]:
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_VERSION)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


def _fresh_ids() -> None:
    global _ids
    _ids = iter(())


os.register_at_fork(after_in_child=_fresh_ids)


def _flow(debounce: Any, throttle: Any, deduplicate: Any) -> Flow | None:
    if debounce is None and throttle is None and deduplicate is None:
        return None
    given = [
        name
        for name, value in (
            ("debounce", debounce),
            ("throttle", throttle),
            ("deduplicate", deduplicate),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ConfigError(
            f"use at most one of debounce, throttle, deduplicate (got {', '.join(given)})"
        )
    if debounce is not None:
        d: Debounce = coerce_flow(debounce, Debounce, "debounce")
        return Flow("debounce", d.key, delay_ms=d.delay_ms)
    if throttle is not None:
        t: Throttle = coerce_flow(throttle, Throttle, "throttle")
        return Flow("throttle", t.key, max=t.max, window_ms=t.window_ms)
    if deduplicate is not None:
        q: Deduplicate = coerce_flow(deduplicate, Deduplicate, "deduplicate")
        return Flow("dedup", q.key, states=tuple(str(s) for s in q.states))
    return None


def _rejecter(job_id: str, flow: Flow) -> Callable[[EnqueueResult], BaseException | None]:
    def reject(outcome: EnqueueResult) -> BaseException | None:
        if flow.kind == "throttle":
            return ThrottledError(job_id, flow.key)
        if flow.kind == "dedup":
            return DuplicateJobError(job_id, flow.key, outcome.existing_id or "")
        return None

    return reject


def _int_at_least(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _arity(fn: Callable[..., Any]) -> int:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return 2
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind == p.VAR_POSITIONAL for p in signature.parameters.values()):
        return 2
    if len(positional) > 2 and all(p.default is p.empty for p in positional[2:]):
        raise ConfigError(
            f"handler {getattr(fn, '__name__', fn)!r} must take (data) or (data, ctx)"
        )
    return min(len(positional), 2)
