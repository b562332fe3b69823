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
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .backends import backend_from_url
from .backends.base import Backend, EnqueueResult, Flow, NewJob
from .dispatch import Enqueuer
from .errors import ConfigError, TaskoraError
from .inspector import DeadLetters
from .task import Task
from .types import Retention, TaskDefaults, check_name

if TYPE_CHECKING:
    from .events import EventHub

__all__ = ["App"]

log = logging.getLogger("taskora")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024


class App:
    """A taskora application.

    ``App()`` uses ``TASKORA_URL`` when set, else the in-memory backend; ``App(url)`` takes
    ``redis://``, ``rediss://``, ``unix://`` or ``memory://``; ``App(backend)`` takes a
    backend object (for example ``RedisBackend(client=existing_client)``).
    """

    def __init__(
        self,
        backend: str | Backend | None = None,
        *,
        prefix: str | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        defaults: TaskDefaults | None = None,
        retention: Retention | None = None,
    ) -> None:
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
        if defaults is not None and not isinstance(defaults, TaskDefaults):
            raise ConfigError("defaults must be a taskora.TaskDefaults")
        self.prefix = prefix
        self.max_payload_bytes = max_payload_bytes
        self.defaults = defaults or TaskDefaults()
        self.retention = retention or Retention()
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
        self._started = False
        self._guard = threading.Lock()
        self._hub: EventHub | None = None

    # -- events -------------------------------------------------------------------------
    def on(self, event: str, fn: Callable[[Any], Any]) -> Callable[[], None]:
        """Listen to ``"task:<event>"`` of every task, or ``"worker:ready"``,
        ``"worker:closing"``, ``"worker:error"``; returns ``unsubscribe()``. See taskora.events."""
        return self._events().on(None, event, fn)

    def _events(self) -> EventHub:
        if self._hub is None:
            from .events import EventHub

            self._hub = EventHub(self)
        return self._hub

    # -- tasks ------------------------------------------------------------------------
    @overload
    def task(self, name: F) -> Task[Any, Any]: ...

    @overload
    def task(self, name: str | None = None, **options: Any) -> Callable[[F], Task[Any, Any]]: ...

    def task(self, name: Any = None, **options: Any) -> Any:
        """Register a handler: ``@app.task("send-email", retry=..., timeout="30s")``.

        The name defaults to the function's name. Invalid options raise ConfigError now.
        """
        if callable(name) and not isinstance(name, str):
            return self._register(None, name, options)

        def decorator(fn: F) -> Task[Any, Any]:
            return self._register(name, fn, options)

        return decorator

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
        task: Task[Any, Any] = Task(self, task_name, fn, **options)
        self._tasks[task_name] = task
        if self._hub is not None:
            self._hub._refresh()  # app-level task:* listeners hear every task
        return task

    @property
    def tasks(self) -> dict[str, Task[Any, Any]]:
        return dict(self._tasks)

    @property
    def dead_letters(self) -> DeadLetters:
        """Permanently failed jobs: ``list()``, ``retry(job_id)``, ``retry_all()``."""
        return DeadLetters(self)

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

    async def close(self, timeout: float | None = None) -> None:
        """Stop claiming, let active jobs finish (up to ``timeout`` s), release connections."""
        if self._home is not None and asyncio.get_running_loop() is not self._home:
            if self._home.is_running():
                await self._route(lambda: self.close(timeout))
                return
        workers, self._workers = self._workers, []
        self._started = False
        hub = self._hub
        if hub is not None and workers:
            hub.emit_worker("worker:closing", tuple(w.name for w in workers))
        if workers:
            await asyncio.gather(*(w.stop(timeout) for w in workers), return_exceptions=True)
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

    def run(self, tasks: Iterable[str] | None = None, concurrency: int | None = None) -> None:
        """Run workers until SIGINT/SIGTERM, then shut down gracefully and return."""
        self._select(tasks)  # unknown task names fail here, before any connection
        _install_uvloop()
        asyncio.run(self._serve(tasks, concurrency))

    async def _serve(self, tasks: Iterable[str] | None, concurrency: int | None) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await self.start(tasks, concurrency)
        log.info("taskora worker started: %s", ", ".join(w.name for w in self._workers))
        try:
            await stop.wait()
        finally:
            await self.close()

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

    def _submit(self, task: str, job: NewJob, flow: Flow | None) -> Any:
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
        if self._home_for(loop) is loop:
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


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
