"""App: the task registry, the backend connection and the worker lifecycle.

An App belongs to one event loop at a time (its *home* loop), because its connections do.
Calls from elsewhere are routed there: from a thread without a loop (a sync script, a Flask
view) through a background *portal* loop the App starts on demand, and from another running
loop through ``run_coroutine_threadsafe``. A closed home loop is simply replaced, so a script
may call ``asyncio.run`` several times with the same App.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from .backends import backend_from_url
from .backends.base import Backend, EnqueueResult, Flow, NewJob
from .context import Context
from .contracts import TaskContract, check_handler_against
from .dispatch import Enqueuer
from .durations import Duration, optional_ms, to_ms
from .errors import ConfigError, TaskoraError
from .inspector import DeadLetters, Inspector
from .middleware import Middleware, check_middleware
from .presence import Presence
from .schedule import ScheduleSpec, coerce_schedule
from .scheduler import ScheduleManager, Scheduler
from .task import Task, new_id
from .types import Retention, TaskDefaults, check_name

if TYPE_CHECKING:
    from .events import EventHub
    from .runtime import JobObserver
    from .tracing import Tracing

__all__ = ["App"]

log = logging.getLogger("taskora")

T = TypeVar("T")
In = TypeVar("In")
Out = TypeVar("Out")


class TaskDecorator(Protocol):
    """``@app.task(...)``: infers ``Task[In, Out]`` from the handler for type checkers."""

    @overload
    def __call__(self, fn: Callable[[In, Context], Coroutine[Any, Any, Out]]) -> Task[In, Out]: ...

    @overload
    def __call__(self, fn: Callable[[In], Coroutine[Any, Any, Out]]) -> Task[In, Out]: ...

    @overload
    def __call__(self, fn: Callable[[In, Context], Out]) -> Task[In, Out]: ...

    @overload
    def __call__(self, fn: Callable[[In], Out]) -> Task[In, Out]: ...

    @overload
    def __call__(self, fn: Callable[..., Any]) -> Task[Any, Any]: ...


DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024
DEFAULT_SHUTDOWN_TIMEOUT = 30


class App:
    """A taskora application.

    ``App()`` uses ``TASKORA_URL`` when set, else the in-memory backend; ``App(url)`` takes
    ``redis://``, ``rediss://`` (TLS), ``redis+sentinel://`` (``rediss+sentinel://`` over
    TLS), ``unix://`` or ``memory://``; ``App(backend)`` takes a backend object (for
    example ``RedisBackend(client=existing_client)``).
    ``tracing=True`` (or an OpenTelemetry ``TracerProvider``) traces dispatch and
    processing; it needs the ``taskora[otel]`` extra (docs/design.md#tracing).
    ``heartbeat=`` (default 10 s): how often a started App refreshes its entry in the worker
    registry (``inspect().workers()``); it drops out 3 heartbeats after its process dies.
    """

    def __init__(
        self,
        backend: str | Backend | None = None,
        *,
        prefix: str | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        defaults: TaskDefaults | None = None,
        retention: Retention | None = None,
        shutdown_timeout: Duration = DEFAULT_SHUTDOWN_TIMEOUT,
        scheduler: dict[str, Any] | bool | None = None,
        prefetch: int = 32,
        tracing: Any = False,
        heartbeat: Duration = 10,
    ) -> None:
        self.shutdown_timeout_ms = to_ms(shutdown_timeout, "shutdown_timeout")
        # how often a started App refreshes its entry in the worker registry; it counts as
        # gone after 3 missed ones (docs/design.md#workers)
        self.heartbeat_ms = to_ms(heartbeat, "heartbeat", allow_zero=False)
        if prefix is not None:
            check_name(prefix, "prefix", allow_colon=False)
        if (
            isinstance(max_payload_bytes, bool)
            or not isinstance(max_payload_bytes, int)
            or max_payload_bytes < 1
        ):
            raise ConfigError(
                f"max_payload_bytes must be a positive integer, got {max_payload_bytes!r}"
            )
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ConfigError(f"prefetch must be an integer >= 0, got {prefetch!r}")
        if defaults is not None and not isinstance(defaults, TaskDefaults):
            raise ConfigError("defaults must be a taskora.TaskDefaults")
        self.prefix = prefix
        self.max_payload_bytes = max_payload_bytes
        self._new_id: Callable[[], str] = new_id  # job ids; taskora.testing counts instead
        self.defaults = defaults or TaskDefaults()
        self.retention = retention or Retention()
        # quick jobs a worker claims ahead of its free slots (reserved, still waiting to
        # everyone else; docs/design.md#claim-ahead); 0: none, a worker holds only the jobs
        # it runs
        self.prefetch = prefetch
        if backend is None:
            backend = os.environ.get("TASKORA_URL") or "memory://"
        if isinstance(backend, str):
            self.backend: Backend = backend_from_url(backend, prefix=prefix)
        else:
            configure = getattr(backend, "configure", None)
            if prefix is not None and configure is not None:
                configure(prefix=prefix)
            self.backend = backend
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._home: asyncio.AbstractEventLoop | None = None
        self._portal: _Portal | None = None
        self._enqueuer: Enqueuer | None = None
        self._connect_lock: asyncio.Lock | None = None
        self._connected = False
        self._workers: list[Any] = []
        self._presence: Presence | None = None
        self._started = False
        self._guard = threading.Lock()
        self._schedule_options = _scheduler_options(scheduler)
        self._declared: dict[str, ScheduleSpec] = {}
        self._scheduler: Scheduler | None = None
        self._middleware: tuple[Middleware, ...] = ()
        self._hub: EventHub | None = None
        self._tracing: Tracing | None = None
        # set by taskora.metrics.install() before start(): docs/design.md#metrics
        self._metrics: JobObserver | None = None
        if tracing is not False and tracing is not None:
            # only now: opentelemetry stays unloaded while tracing is off (docs/design.md#tracing)
            from .tracing import Tracing

            self._tracing = Tracing(None if tracing is True else tracing)

    # -- events -------------------------------------------------------------------------
    def on(self, event: str, fn: Callable[[Any], Any]) -> Callable[[], None]:
        """Listen to ``"task:<event>"`` of every task, or ``"worker:ready"``,
        ``"worker:closing"``, ``"worker:error"``; returns ``unsubscribe()``. See taskora.events."""
        return self._listen(None, event, fn)

    def _listen(self, task: str | None, event: str, fn: Callable[[Any], Any]) -> Callable[[], None]:
        return self._events().on(task, event, fn)

    def _events(self) -> EventHub:
        if self._hub is None:
            from .events import EventHub

            self._hub = EventHub(self)
        return self._hub

    # -- tasks ------------------------------------------------------------------------
    @overload
    def task(self, name: Callable[[In, Context], Coroutine[Any, Any, Out]]) -> Task[In, Out]: ...

    @overload
    def task(self, name: Callable[[In], Coroutine[Any, Any, Out]]) -> Task[In, Out]: ...

    @overload
    def task(self, name: Callable[[In, Context], Out]) -> Task[In, Out]: ...

    @overload
    def task(self, name: Callable[[In], Out]) -> Task[In, Out]: ...

    @overload
    def task(self, name: str | None = None, **options: Any) -> TaskDecorator: ...

    def task(self, name: Any = None, **options: Any) -> Any:
        """Register a handler: ``@app.task("send-email", retry=..., timeout="30s")``.

        The name defaults to the function's name. Invalid options raise ConfigError now.
        The handler's annotated data parameter and return type are its schemas unless
        ``input=``/``output=`` say otherwise (docs/design.md#schemas-and-middleware).
        """
        if callable(name) and not isinstance(name, str):
            return self._register(None, name, options)

        def decorator(fn: Callable[..., Any]) -> Task[Any, Any]:
            return self._register(name, fn, options)

        return decorator

    # -- middleware and contracts -----------------------------------------------------------
    def use(self, middleware: Middleware) -> None:
        """Add app middleware (``async def mw(ctx, call_next)``): it wraps every task's
        handler, outside the task's own ``middleware=[...]``, in the order added."""
        if self._started:
            raise ConfigError("app.use() must be called before the app starts its workers")
        self._middleware = (*self._middleware, *check_middleware([middleware], "app.use"))

    @property
    def middleware(self) -> tuple[Middleware, ...]:
        return self._middleware

    def register(self, contract: TaskContract[In, Out]) -> Task[In, Out]:
        """A dispatch-only task for ``contract`` (no handler here, so no worker for it).

        Registering again, or a name that already has a task, returns that task.
        """
        _check_contract(contract)
        existing = self._tasks.get(contract.name)
        if existing is not None:
            return existing
        task: Task[In, Out] = Task(
            self,
            contract.name,
            None,
            input=contract.input,
            output=contract.output,
            version=contract.version,
            **contract.options,
        )
        self._tasks[contract.name] = task
        return task

    def implement(
        self,
        contract: TaskContract[In, Out],
        handler: Callable[..., Awaitable[Out]] | Callable[..., Out],
        **options: Any,
    ) -> Task[In, Out]:
        """Run ``contract`` here with ``handler``. Options: these, else the contract's, else
        the app defaults. A task registered from the contract earlier is upgraded in place
        (tasks and handles already made keep working); implementing twice raises."""
        _check_contract(contract)
        if not callable(handler):
            raise ConfigError(f"task {contract.name!r}: handler must be callable, got {handler!r}")
        existing = self._tasks.get(contract.name)
        if existing is not None and existing.handler is not None:
            raise ConfigError(f"task {contract.name!r} is already implemented in this app")
        where = f"task {contract.name!r}"
        for key in ("input", "output", "schedule"):
            if key in options:
                raise ConfigError(f"{where}: {key} comes from the contract, not implement()")
        check_handler_against(contract, handler, where)
        merged = {**contract.options, **options}
        if contract.input is not None:  # else the handler's annotation, as for app.task
            merged["input"] = contract.input
        if contract.output is not None:
            merged["output"] = contract.output
        if contract.version is not None:
            merged.setdefault("version", contract.version)
        task: Task[In, Out] = Task(self, contract.name, handler, **merged)
        if existing is not None:  # register() came first: the same object gets the handler
            existing.__dict__.update(task.__dict__)
            return existing
        self._tasks[contract.name] = task
        return task

    def _register(
        self, name: str | None, fn: Callable[..., Any], options: dict[str, Any]
    ) -> Task[Any, Any]:
        if not callable(fn):
            raise ConfigError(f"task handler must be callable, got {fn!r}")
        task_name = check_name(
            name if name is not None else getattr(fn, "__name__", ""), "task name"
        )
        if task_name in self._tasks:
            raise ConfigError(f"task {task_name!r} is already registered")
        schedule = options.pop("schedule", None)
        inline = None if schedule is None else coerce_schedule(schedule, task_name)
        task: Task[Any, Any] = Task(self, task_name, fn, **options)
        if inline is not None:  # validated before the task is registered: nothing half done
            _check_schedule_data(task, inline.data)
            spec = ScheduleSpec.build(
                task_name,
                task_name,
                data=inline.data,
                every=inline.every,
                cron=inline.cron,
                timezone=inline.timezone,
                on_missed=inline.on_missed,
                overlap=inline.overlap,
            )
            if task_name in self._declared:
                raise ConfigError(f"schedule {task_name!r} is already declared")
            self._declared[task_name] = spec
        self._tasks[task_name] = task
        if self._hub is not None:
            self._hub._refresh()  # app-level task:* listeners hear every task
        return task

    # -- schedules ------------------------------------------------------------------------
    def schedule(
        self,
        name: str,
        *,
        task: Task[Any, Any] | str,
        data: Any = None,
        every: Any = None,
        cron: str | None = None,
        timezone: str | None = None,
        on_missed: str = "skip",
        overlap: bool = False,
    ) -> None:
        """Declare a schedule; stored when the app starts (keeping the history of one stored
        before). Bad input raises ValueError (ConfigError) here, with nothing written."""
        check_name(name, "schedule name")
        task_name = task.name if isinstance(task, Task) else task
        if not isinstance(task_name, str) or task_name not in self._tasks:
            raise ConfigError(f"schedule {name!r}: unknown task {task_name!r}")
        if name in self._declared:
            raise ConfigError(f"schedule {name!r} is already declared")
        _check_schedule_data(self._tasks[task_name], data)
        self._declared[name] = ScheduleSpec.build(
            name,
            task_name,
            data=data,
            every=every,
            cron=cron,
            timezone=timezone,
            on_missed=on_missed,
            overlap=overlap,
        )

    @property
    def schedules(self) -> ScheduleManager:
        """Stored schedules: ``list()``, ``pause``, ``resume``, ``update``, ``remove``,
        ``trigger``."""
        return ScheduleManager(self)

    @property
    def scheduler(self) -> Scheduler | None:
        """This process's scheduler while the app runs one (it has schedules, or
        ``scheduler=`` asked for one)."""
        return self._scheduler

    @property
    def tasks(self) -> dict[str, Task[Any, Any]]:
        return dict(self._tasks)

    @property
    def dead_letters(self) -> DeadLetters:
        """Permanently failed jobs: ``list()``, ``retry(job_id)``, ``retry_all()``."""
        return DeadLetters(self)

    def inspect(self) -> Inspector:
        """Read-only views for operators: lists per state, ``stats``, ``find``,
        ``throughput``, ``migrations`` (docs/design.md#inspector)."""
        return Inspector(self)

    async def counts(self, task: str) -> dict[str, int]:
        """How many jobs of ``task`` are in each state."""
        if task not in self._tasks:
            raise ConfigError(f"unknown task {task!r}")
        return await self._route(lambda: self._counts(task))

    async def _counts(self, task: str) -> dict[str, int]:
        backend = await self._connected_backend()
        return await backend.counts(task)

    # -- lifecycle ----------------------------------------------------------------------
    async def start(
        self, tasks: Iterable[str] | None = None, concurrency: int | None = None
    ) -> None:
        """Connect and start a worker for each task with a handler (or those named)."""
        from .worker import Worker

        if self._started:
            return
        self._bind(asyncio.get_running_loop(), take_over=True)
        backend = await self._connected_backend()
        chosen = self._select(tasks)
        self._workers = [Worker(self, task, backend, concurrency) for task in chosen]
        self._started = True
        try:
            for worker in self._workers:
                await worker.start()
            options = self._schedule_options
            if options is not None and (self._declared or options["explicit"]):
                self._scheduler = Scheduler(
                    self, self._declared, options["poll_ms"], options["lock_ttl_ms"]
                )
                await self._scheduler.start()
            self._presence = Presence(backend, self._workers, self.heartbeat_ms)
            await self._presence.start()
        except BaseException:
            await self.close(timeout=0)
            raise
        if self._hub is not None:
            self._hub.emit_worker("worker:ready", tuple(w.name for w in self._workers))

    def _select(self, names: Iterable[str] | None) -> list[Task[Any, Any]]:
        if names is None:
            return [t for t in self._tasks.values() if t.handler is not None]
        chosen = []
        for name in names:
            if name not in self._tasks:
                raise ConfigError(f"unknown task {name!r}; registered: {sorted(self._tasks)}")
            chosen.append(self._tasks[name])
        return chosen

    async def close(self, timeout: Duration | None = None) -> None:
        """Stop claiming, let active jobs finish (up to ``timeout``: seconds, a timedelta or
        "5s"; None waits for them), give the rest back to the queue, release connections."""
        timeout_ms = optional_ms(timeout, "close(timeout)")  # bad values raise before any stop
        await self._close(timeout_ms)

    async def _close(self, timeout_ms: int | None) -> None:
        if self._home is not None and asyncio.get_running_loop() is not self._home:
            if self._home.is_running():
                await self._route(lambda: self._close(timeout_ms))
                return
        workers, self._workers = self._workers, []
        self._started = False
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            await scheduler.stop()
        hub = self._hub
        if hub is not None and workers:
            hub.emit_worker("worker:closing", tuple(w.name for w in workers))
        if workers:
            seconds = None if timeout_ms is None else timeout_ms / 1000
            outcomes = await asyncio.gather(
                *(w.stop(seconds) for w in workers), return_exceptions=True
            )
            for worker, outcome in zip(workers, outcomes, strict=True):
                if isinstance(outcome, BaseException):  # visible, but the others still close
                    log.error(
                        "worker %s did not stop cleanly: %r",
                        worker.name,
                        outcome,
                        exc_info=outcome,
                    )
        presence, self._presence = self._presence, None
        if presence is not None:  # after the workers: listed while they finish their jobs
            await presence.stop()
        if self._enqueuer is not None:
            await self._enqueuer.drain()
        if hub is not None:
            await hub.close()
        if self._connected:
            self._connected = False
            await self.backend.close()
        portal, self._portal = self._portal, None
        if portal is not None and portal.loop is not asyncio.get_running_loop():
            self._home = None
            portal.stop()

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def run(
        self,
        tasks: Iterable[str] | None = None,
        concurrency: int | None = None,
        shutdown_timeout: Duration | None = None,
    ) -> None:
        """Run workers until SIGINT/SIGTERM, then stop and return.

        The first signal stops claiming and gives running jobs ``shutdown_timeout`` (default:
        the App's, 30 s) to finish; a second signal, or the deadline, gives the unfinished
        ones back to the front of their queue at once. Either way this returns.
        """
        self._select(tasks)  # unknown task names fail here, before any connection
        grace_ms = (
            self.shutdown_timeout_ms
            if shutdown_timeout is None
            else to_ms(shutdown_timeout, "shutdown_timeout")
        )
        _install_uvloop()
        asyncio.run(self._serve(tasks, concurrency, grace_ms))

    async def _serve(
        self, tasks: Iterable[str] | None, concurrency: int | None, grace_ms: int
    ) -> None:
        signals = 0
        stop = asyncio.Event()
        workers: list[Any] = []

        def on_signal(sig: signal.Signals) -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                log.info(
                    "%s: stopping; running jobs get %s s to finish (send it again to stop now)",
                    sig.name,
                    f"{grace_ms / 1000:g}",
                )
                stop.set()
            elif signals == 2:
                log.warning("%s again: stopping now; running jobs go back to the queue", sig.name)
                for worker in workers:
                    worker.hurry()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal, sig)
        try:
            await self.start(tasks, concurrency)
            workers.extend(self._workers)
            self._log_banner(workers)
            await stop.wait()
        finally:
            await self._close(grace_ms)
            log.info("taskora worker stopped")

    def _log_banner(self, workers: list[Any]) -> None:
        log.info(
            "taskora worker started: %s on %s, prefix %s, prefetch %d",
            ", ".join(f"{w.name} (concurrency {w.concurrency})" for w in workers) or "no tasks",
            getattr(self.backend, "url", type(self.backend).__name__),  # never has a password
            self.prefix or "(none)",
            self.prefetch,
        )

    def _retarget(self, url: str | None, prefix: str | None) -> None:
        """Point an App that has not connected yet elsewhere (the CLI's --url/--prefix)."""
        if url is None and prefix is None:
            return
        if self._started or self._connected:
            raise ConfigError("cannot change the backend of an App that is connected")
        if prefix is not None:
            self.prefix = check_name(prefix, "prefix", allow_colon=False)
        if url is not None:
            self.backend = backend_from_url(url, prefix=self.prefix)
        else:
            configure = getattr(self.backend, "configure", None)
            if configure is not None:
                configure(prefix=prefix)

    # -- plumbing used by Task and ResultHandle ----------------------------------------------
    async def _connected_backend(self) -> Backend:
        if self._connected:
            return self.backend
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            if not self._connected:
                await self.backend.connect()
                self._connected = True
                if self._hub is not None:
                    self._hub.connected(self.backend)
        return self.backend

    def _ready_backend(self) -> Backend | None:
        return self.backend if self._connected else None

    def _submit(self, task: str, job: NewJob, flow: Flow | None) -> Any:
        tracing = self._tracing
        enqueuer = self._enqueuer
        if tracing is None and enqueuer is not None:  # the usual case: at home, untraced
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            # the enqueuer belongs to the home loop (a new home drops it)
            if loop is not None and loop is self._home:
                return enqueuer.submit(task, job, flow, loop)
        if tracing is not None:
            span = tracing.dispatch(task, job)
            future = self._submit_plain(task, job, flow)
            tracing.enqueued(span, future)
            return future
        return self._submit_plain(task, job, flow)

    def _submit_plain(self, task: str, job: NewJob, flow: Flow | None) -> Any:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        home = self._home_for(loop)
        if home is loop:
            return self._get_enqueuer().submit(task, job, flow)
        return asyncio.run_coroutine_threadsafe(self._submit_async(task, job, flow), home)

    def _submitter(self) -> Callable[[str, NewJob, Flow | None], Any]:
        """``_submit`` for a run of dispatches from one context (resolves the loop once)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._submit
        if self._home_for(loop) is loop and self._tracing is None:
            return self._get_enqueuer().submit
        return self._submit

    async def _submit_async(self, task: str, job: NewJob, flow: Flow | None) -> EnqueueResult:
        return await self._get_enqueuer().submit(task, job, flow)

    def _get_enqueuer(self) -> Enqueuer:
        if self._enqueuer is None:
            self._enqueuer = Enqueuer(
                self._connected_backend, lambda: self.backend if self._connected else None
            )
        return self._enqueuer

    def _failed_future(self, exc: BaseException) -> concurrent.futures.Future[EnqueueResult]:
        future: concurrent.futures.Future[EnqueueResult] = concurrent.futures.Future()
        future.set_exception(exc)
        return future

    async def _route(self, factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
        loop = asyncio.get_running_loop()
        home = self._home_for(loop)
        if home is loop:
            return await factory()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(factory(), home))

    def _route_sync(
        self, factory: Callable[[], Coroutine[Any, Any, T]], timeout: float | None = None
    ) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise TaskoraError("blocking handle methods cannot run inside an event loop; use await")
        home = self._home_for(None)
        return asyncio.run_coroutine_threadsafe(factory(), home).result(timeout)

    def _home_for(self, loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
        if loop is not None and loop is self._home:  # the common case: already at home
            return loop
        with self._guard:
            home = self._home
            if home is not None and (home.is_closed() or not home.is_running()):
                self._bind_locked(None)
                home = None
            if home is None:
                if loop is None:
                    self._portal = _Portal()
                    loop = self._portal.loop
                    atexit.register(self._close_portal_at_exit, self._portal)
                self._bind_locked(loop)
                return loop
            return home

    def _close_portal_at_exit(self, portal: _Portal) -> None:
        """A sync script may simply end: send what it dispatched before the process exits."""
        if self._portal is portal and portal.loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.close(), portal.loop).result(timeout=30)

    def _bind(self, loop: asyncio.AbstractEventLoop, take_over: bool = False) -> None:
        portal = self._portal
        if take_over and portal is not None and self._home is portal.loop:
            self._drain_portal(portal)  # outside the guard: the drain routes through it
        with self._guard:
            if self._home is loop:
                return
            home = self._home
            alive = home is not None and not home.is_closed() and home.is_running()
            if alive and not (take_over and self._portal is not None and home is self._portal.loop):
                raise TaskoraError("this App is already running in another event loop")
            if self._portal is not None and home is self._portal.loop:
                self._portal.stop()
                self._portal = None
            self._bind_locked(loop)

    def _drain_portal(self, portal: _Portal) -> None:
        """Sync code dispatched through the portal, and now a loop takes the App over: send
        what is still pending there first (stopping the portal would drop it)."""
        if not portal.loop.is_running():
            return

        async def drain() -> None:
            if self._enqueuer is not None:
                await self._enqueuer.drain()

        try:
            asyncio.run_coroutine_threadsafe(drain(), portal.loop).result(timeout=30)
        except Exception as exc:  # each handle reports its own enqueue error
            log.warning("taskora: sending dispatches made from sync code failed: %r", exc)

    def _bind_locked(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if self._home is not None and loop is not self._home:
            reset = getattr(self.backend, "reset", None)
            if reset is not None:
                reset()
            self._connected = False
            if self._hub is not None:
                self._hub.reset()
        self._home = loop
        self._enqueuer = None
        self._connect_lock = None

    def __repr__(self) -> str:
        return f"App({self.backend!r}, tasks={sorted(self._tasks)})"


class _Portal:
    """A private event loop in a daemon thread, serving callers that have no loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, name="taskora-portal", daemon=True)
        self.thread.start()
        ready.wait()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def _check_schedule_data(task: Task[Any, Any], data: Any) -> None:
    """A schedule's data must fit the task's input schema: checked once, at declaration."""
    if task.input is not None:
        task.input.to_json(data, "schedule data")


def _check_contract(contract: object) -> None:
    if not isinstance(contract, TaskContract):
        raise ConfigError(f"expected a contract from taskora.define_task(), got {contract!r}")


def _scheduler_options(value: dict[str, Any] | bool | None) -> dict[str, Any] | None:
    """``scheduler=dict(poll_interval=1, lock_ttl=30)`` (seconds or durations); False: this
    process never runs the scheduler; None: run it when the app declares schedules."""
    if value is False:
        return None
    given: dict[str, Any] = {} if value is None or value is True else dict(value)
    if not isinstance(value, dict | bool | type(None)):
        raise ConfigError("scheduler must be a dict (poll_interval=, lock_ttl=) or a bool")
    unknown = set(given) - {"poll_interval", "lock_ttl"}
    if unknown:
        raise ConfigError(f"scheduler: unknown options {sorted(unknown)}")
    poll = to_ms(given.get("poll_interval", 1), "scheduler poll_interval", allow_zero=False)
    ttl = to_ms(given.get("lock_ttl", 30), "scheduler lock_ttl", allow_zero=False)
    if ttl <= poll:
        raise ConfigError("scheduler lock_ttl must be longer than poll_interval")
    return {"poll_ms": poll, "lock_ttl_ms": ttl, "explicit": value is not None}


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
