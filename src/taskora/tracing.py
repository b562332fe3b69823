"""OpenTelemetry spans for dispatch and processing (docs/design.md#tracing).

Imported only by an App made with ``tracing=``: with tracing off neither this module nor
opentelemetry is loaded, and no job carries a ``trace`` field. The producer's ``dispatch``
span is injected (the configured propagator, W3C trace context by default) into the job's
``trace`` field as a small JSON object; the worker's ``process`` span of each attempt is a
child of that context and links to it, so one job is one trace across processes.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from ._version import __version__
from .backends.base import Claimed, EnqueueResult, NewJob, Outcome
from .errors import ConfigError

__all__ = ["Tracing"]

_SYSTEM = "taskora"


class Tracing:
    """The spans of one App; ``provider`` None means OpenTelemetry's global provider."""

    def __init__(self, provider: Any = None) -> None:
        if provider is not None and not hasattr(provider, "get_tracer"):
            raise ConfigError(
                f"tracing must be True or an OpenTelemetry TracerProvider, got {provider!r}"
            )
        self._tracer = trace.get_tracer("taskora", __version__, tracer_provider=provider)

    # -- producer ---------------------------------------------------------------------
    def dispatch(self, task: str, job: NewJob) -> Span:
        """Start the dispatch span (child of the caller's current span) and put its context
        into the job; the span ends when the backend has answered (:meth:`enqueued`)."""
        span = self._tracer.start_span(
            f"dispatch {task}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": _SYSTEM,
                "messaging.operation.type": "send",
                "messaging.destination.name": task,
                "messaging.message.id": job.id,
            },
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        if carrier:
            job.trace = json.dumps(carrier, separators=(",", ":"))
        return span

    def enqueued(self, span: Span, future: Any) -> None:
        """End ``span`` when ``future`` (asyncio or concurrent) settles; a failed enqueue is an
        error on the span, a throttle/dedup rejection an attribute."""

        def done(f: Any) -> None:
            if f.cancelled():
                span.set_status(Status(StatusCode.ERROR, "dispatch cancelled"))
            elif (exc := f.exception()) is not None:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
            else:
                result = f.result()
                if isinstance(result, EnqueueResult):
                    span.set_attribute("taskora.enqueued", result.enqueued)
            span.end()

        future.add_done_callback(done)

    # -- worker -----------------------------------------------------------------------
    def process(self, task: str, job: Claimed) -> tuple[Span, object]:
        """Start the process span of one attempt and make it current in this asyncio task
        (middleware and async handlers see it); returns it and the token for :meth:`finish`."""
        parent = _extract(job.trace) if job.trace else None
        links = [Link(trace.get_current_span(parent).get_span_context())] if parent else []
        span = self._tracer.start_span(
            f"process {task}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": _SYSTEM,
                "messaging.operation.type": "process",
                "messaging.destination.name": task,
                "messaging.message.id": job.id,
                "taskora.attempt": job.attempt,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        return span, token

    @staticmethod
    def failure(exc: BaseException, retry_delay_ms: int | None) -> None:
        """Record a failed attempt on the current process span: an exception event that says
        whether the job will be retried."""
        span = trace.get_current_span()
        attributes: dict[str, Any] = {"taskora.will_retry": retry_delay_ms is not None}
        if retry_delay_ms is not None:
            attributes["taskora.retry_delay_ms"] = retry_delay_ms
        span.record_exception(exc, attributes=attributes)

    @staticmethod
    def finish(span: Span, token: object, outcome: Outcome) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]
        span.set_attribute("taskora.outcome", outcome.kind)
        if outcome.kind == "completed":
            span.set_status(Status(StatusCode.OK))
        elif outcome.kind in ("failed", "retry"):
            span.set_status(Status(StatusCode.ERROR, outcome.error or outcome.kind))
            if outcome.kind == "retry":
                span.set_attribute("taskora.retry_delay_ms", outcome.retry_delay_ms)
        span.end()


def _extract(field: str) -> otel_context.Context | None:
    """The producer's context from a job's ``trace`` field; None when it holds none. Whatever
    another producer wrote there never fails the job: it only starts a fresh trace."""
    try:
        carrier = json.loads(field)
        if not isinstance(carrier, dict):
            return None
        strings = {k: v for k, v in carrier.items() if isinstance(k, str) and isinstance(v, str)}
        parent = propagate.extract(strings)
    except Exception:
        return None
    return parent if trace.get_current_span(parent).get_span_context().is_valid else None
