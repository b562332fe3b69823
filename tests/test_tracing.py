"""OpenTelemetry tracing (docs/design.md#tracing): a dispatch span in the producer, a process
span per attempt in the worker, one trace per job across processes; nothing when off."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import taskora
from taskora.backends.base import NewJob
from tests import stored
from tests.conftest import AppFactory, wait_until


@pytest.fixture
def exporter() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_dispatch_and_process_spans_share_one_trace(
    make_app: AppFactory, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    app = make_app(tracing=provider)

    @app.task("traced")
    async def traced(data: dict[str, Any]) -> int:
        return int(data["n"]) * 2

    async with app:
        with provider.get_tracer("test").start_as_current_span("request") as request:
            handle = traced.dispatch({"n": 21})
        assert await handle.wait_for(10) == 42
        await wait_until(lambda: len(_named(spans, "process traced")) == 1)
        await wait_until(lambda: len(_named(spans, "dispatch traced")) == 1)
        job_fields = await stored.fields(app, "traced", handle.id)
    (dispatch,) = _named(spans, "dispatch traced")
    (process,) = _named(spans, "process traced")
    trace_id = request.get_span_context().trace_id
    assert dispatch.kind == SpanKind.PRODUCER and process.kind == SpanKind.CONSUMER
    assert dispatch.context.trace_id == process.context.trace_id == trace_id
    assert dispatch.parent is not None
    assert dispatch.parent.span_id == request.get_span_context().span_id
    assert process.parent is not None and process.parent.span_id == dispatch.context.span_id
    assert [link.context.span_id for link in process.links] == [dispatch.context.span_id]
    assert process.attributes is not None and process.attributes["taskora.attempt"] == 1
    assert process.attributes["messaging.message.id"] == handle.id
    assert process.status.status_code == StatusCode.OK
    assert dispatch.attributes is not None and dispatch.attributes["taskora.enqueued"] is True
    carrier = json.loads(job_fields["trace"])
    assert carrier["traceparent"].split("-")[1] == f"{trace_id:032x}"


async def test_retries_and_failures_are_recorded_on_the_process_spans(
    make_app: AppFactory, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, spans = exporter
    app = make_app(tracing=provider)

    @app.task("flaky", retry=taskora.Retry(attempts=2, delay=0.01, jitter=False))
    async def flaky(data: None) -> None:
        raise ValueError("always broken")

    async with app:
        handle = flaky.dispatch()
        with pytest.raises(taskora.JobFailedError):
            await handle.wait_for(10)
        await wait_until(lambda: len(_named(spans, "process flaky")) == 2)
    (dispatch,) = _named(spans, "dispatch flaky")
    first, second = sorted(
        _named(spans, "process flaky"),
        key=lambda s: (s.attributes or {})["taskora.attempt"],
    )
    for span, attempt, outcome in ((first, 1, "retry"), (second, 2, "failed")):
        attributes = span.attributes or {}
        assert attributes["taskora.attempt"] == attempt
        assert attributes["taskora.outcome"] == outcome
        assert span.status.status_code == StatusCode.ERROR
        assert span.status.description is not None and "always broken" in span.status.description
        (event,) = span.events
        assert event.name == "exception"
        assert (event.attributes or {})["exception.type"] == "ValueError"
        assert (event.attributes or {})["taskora.will_retry"] is (attempt == 1)
        assert span.context.trace_id == dispatch.context.trace_id
        assert span.parent is not None and span.parent.span_id == dispatch.context.span_id
    assert (first.attributes or {})["taskora.retry_delay_ms"] == 10


async def test_tracing_off_writes_no_trace_field(make_app: AppFactory) -> None:
    app = make_app()

    @app.task("plain")
    async def plain(data: None) -> str:
        return "ok"

    async with app:
        handle = plain.dispatch()
        assert await handle.wait_for(10) == "ok"
        assert "trace" not in await stored.fields(app, "plain", handle.id)


async def test_a_garbled_trace_field_starts_a_fresh_trace(
    make_app: AppFactory, exporter: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """The worker reads what any producer wrote: a bad trace field never fails the job."""
    provider, spans = exporter
    app = make_app(tracing=provider)

    @app.task("odd")
    async def odd(data: None) -> str:
        return "ok"

    backend = await app._connected_backend()
    garbled = ["not json", '["a list"]', '{"traceparent":"00-zz"}', '{"traceparent":5}']
    for i, trace in enumerate(garbled):
        job = NewJob(id=f"job-{i}", data="null", trace=trace)
        await backend.enqueue("odd", [job])
    async with app:
        for i in range(4):
            assert await odd.handle(f"job-{i}").wait_for(10) == "ok"
        await wait_until(lambda: len(_named(spans, "process odd")) == 4)
    for span in _named(spans, "process odd"):
        assert span.parent is None and not span.links


def test_tracing_needs_a_tracer_provider() -> None:
    with pytest.raises(taskora.ConfigError, match="TracerProvider"):
        taskora.App("memory://", tracing="yes")


@pytest.mark.redis_only
def test_producer_and_worker_processes_export_one_trace(redis_url: str, prefix: str) -> None:
    def run(mode: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, "-m", "tests.procs.trace_procs", mode, redis_url, prefix],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.splitlines()

    *_, job_id, produced = run("produce")
    (worked,) = run("work")[-1:]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in json.loads(produced) + json.loads(worked):
        by_name.setdefault(span["name"], []).append(span)
    (request,) = by_name["request"]
    (dispatch,) = by_name["dispatch traced"]
    attempts = sorted(by_name["process traced"], key=lambda s: s["attributes"]["taskora.attempt"])
    assert [s["attributes"]["taskora.attempt"] for s in attempts] == [1, 2]
    assert dispatch["parent"] == request["span_id"]
    assert dispatch["attributes"]["messaging.message.id"] == job_id
    for span in attempts:
        assert span["trace_id"] == dispatch["trace_id"] == request["trace_id"]
        assert span["parent"] == dispatch["span_id"]
        assert span["links"] == [[dispatch["trace_id"], dispatch["span_id"]]]
        assert span["attributes"]["messaging.message.id"] == job_id
    assert [s["status"] for s in attempts] == ["ERROR", "OK"]
    assert attempts[0]["events"] == ["exception"]
