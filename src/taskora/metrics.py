"""Prometheus metrics for a taskora App (docs/design.md#metrics); needs ``taskora[metrics]``.

``serve(app, port)`` (or ``taskora worker --metrics-port N``) exposes two kinds of series:

- **queue gauges, read from the store**: ``taskora_jobs{task, state}``, the counts of
  ``app.inspect().stats(task)`` for every task the App registers or the store holds. Every
  process reads the same shared numbers, so they carry no process label: aggregate them
  across scrape targets with ``max``, never ``sum``.
- **job series, observed in this process**: ``taskora_jobs_completed_total``,
  ``taskora_jobs_failed_total``, ``taskora_jobs_retried_total``,
  ``taskora_job_duration_seconds`` and ``taskora_job_queue_wait_seconds``, labelled
  ``{task, pid}``. Only the process that ran a job knows how long it ran, so each worker
  process counts its own jobs; ``sum by (task)`` gives the whole fleet.

Nothing here is imported by ``import taskora`` or by an App that does not ask for metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .backends.base import Claimed, Outcome
from .errors import ConfigError
from .inspector import STATES

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .app import App

__all__ = ["Metrics", "install", "serve"]

log = logging.getLogger("taskora.metrics")

# Seconds; jobs range from milliseconds to minutes, waits from nothing to hours.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600)


@dataclass(slots=True)
class _Series:
    """One task's bound children: ``labels()`` is a dict lookup under a lock, too slow to
    repeat per job."""

    completed: Any
    failed: Any
    retried: Any
    duration: Any
    wait: Any


class Metrics:
    """The App's metrics: per-process job series fed by the worker, queue gauges read on
    scrape. Build it with :func:`install` before the App starts its workers."""

    def __init__(
        self,
        app: App,
        registry: CollectorRegistry | None = None,
        cache_seconds: float = 1.0,
        names_seconds: float = 60.0,
        read_timeout: float = 10.0,
    ) -> None:
        # A registry of its own by default: two Apps in one process (tests) do not clash
        # over metric names, and the user's default registry stays theirs.
        self.registry = registry if registry is not None else CollectorRegistry()
        self._app = app
        self._pid = str(os.getpid())
        self.cache_seconds = cache_seconds  # gauges: one store read per window, per process
        self.names_seconds = names_seconds  # task discovery walks the keyspace: rarer
        self.read_timeout = read_timeout
        labels = ("task", "pid")
        self._completed = Counter(
            "taskora_jobs_completed",
            "Jobs this process completed",
            labels,
            registry=self.registry,
        )
        self._failed = Counter(
            "taskora_jobs_failed",
            "Jobs this process failed for good (no retry left)",
            labels,
            registry=self.registry,
        )
        self._retried = Counter(
            "taskora_jobs_retried",
            "Attempts in this process that failed and were scheduled for a retry",
            labels,
            registry=self.registry,
        )
        self._duration = Histogram(
            "taskora_job_duration_seconds",
            "How long an attempt ran in this process (completed, failed or retried)",
            labels,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._wait = Histogram(
            "taskora_job_queue_wait_seconds",
            "From dispatch (the job's ts) to the start of its first attempt, including any "
            "dispatch delay",
            labels,
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()  # one store read at a time: a scrape storm waits
        self._counts: dict[str, dict[str, int]] | None = None
        self._counts_at = 0.0
        self._names: list[str] = []
        self._names_at: float | None = None
        self._server: Any = None
        self.registry.register(_QueueCollector(self))

    @property
    def port(self) -> int | None:
        """The port :func:`serve` listens on (useful after ``port=0``), None if not serving."""
        return None if self._server is None else int(self._server.server_address[1])

    def close(self) -> None:
        """Stop the HTTP server :func:`serve` started (the series stay installed)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    # -- fed by the worker (Executor._report), on its loop -------------------------------
    def job_done(self, task: str, job: Claimed, outcome: Outcome, took: float) -> None:
        kind = outcome.kind
        if kind != "completed" and kind != "failed" and kind != "retry":
            return  # start, release, cancelled: not an attempt that ran to an end
        series = self._series.get(task)
        if series is None:
            series = self._bind(task)
        if kind == "completed":
            series.completed.inc()
        elif kind == "failed":
            series.failed.inc()
        else:
            series.retried.inc()
        series.duration.observe(took)
        if job.attempt <= 1:
            # ts is the store's clock, time.time() ours: clamp a small skew at zero
            wait = time.time() - took - job.ts / 1000
            series.wait.observe(wait if wait > 0 else 0.0)

    def _bind(self, task: str) -> _Series:
        labels = (task, self._pid)
        series = _Series(
            self._completed.labels(*labels),
            self._failed.labels(*labels),
            self._retried.labels(*labels),
            self._duration.labels(*labels),
            self._wait.labels(*labels),
        )
        self._series[task] = series
        return series

    # -- read on scrape, in prometheus_client's thread ---------------------------------
    def queue_counts(self) -> dict[str, dict[str, int]]:
        """Counts per task and state, at most ``cache_seconds`` old; raises if the store
        cannot be read."""
        with self._lock:
            now = time.monotonic()
            if self._counts is not None and now - self._counts_at < self.cache_seconds:
                return self._counts
            counts = self._app._route_sync(self._read, timeout=self.read_timeout)
            self._counts, self._counts_at = counts, time.monotonic()
            return counts

    async def _read(self) -> dict[str, dict[str, int]]:
        inspector = self._app.inspect()
        now = time.monotonic()
        if self._names_at is None or now - self._names_at >= self.names_seconds:
            self._names, self._names_at = await inspector.tasks(), now
        names = self._names
        rows = await asyncio.gather(*(inspector.stats(name) for name in names))
        return dict(zip(names, rows, strict=True))


class _QueueCollector(Collector):
    """``taskora_jobs{task,state}`` and ``taskora_store_up``, computed when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self._metrics.queue_counts()
        except Exception as exc:  # a scrape must still answer: say the store was not read
            log.warning("metrics: cannot read the queue counts: %r", exc)
            counts = None
        jobs, up = self._families()
        if counts is not None:
            for task in sorted(counts):
                for state in STATES:
                    jobs.add_metric([task, state], counts[task].get(state, 0))
        up.add_metric([], 0 if counts is None else 1)
        yield jobs
        yield up

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "taskora_jobs",
                "Jobs per task and state, read from the store (shared: the same in every process)",
                labels=["task", "state"],
            ),
            GaugeMetricFamily(
                "taskora_store_up", "1 if the last scrape read the queue counts from the store"
            ),
        )


def install(app: App, registry: CollectorRegistry | None = None, **options: Any) -> Metrics:
    """Turn metrics on for ``app``: call before ``app.start()``/``app.run()`` (workers
    read the hook when they start). Returns the App's Metrics (the same one if called
    again)."""
    existing = app._metrics
    if isinstance(existing, Metrics):
        return existing
    if app._workers:
        raise ConfigError("install metrics before the App starts its workers")
    metrics = Metrics(app, registry, **options)
    app._metrics = metrics
    return metrics


def serve(app: App, port: int, host: str = "127.0.0.1", **options: Any) -> Metrics:
    """``install(app)`` and serve its registry at ``http://host:port/metrics`` from
    prometheus_client's HTTP server (daemon threads). Loopback by default: the numbers
    name tasks and volumes, expose them wider on purpose."""
    metrics = install(app, **options)
    if metrics._server is not None:
        raise ConfigError("this App already serves its metrics")
    metrics._server, _ = start_http_server(port, addr=host, registry=metrics.registry)
    log.info("metrics on http://%s:%s/metrics", host, metrics.port)
    return metrics
