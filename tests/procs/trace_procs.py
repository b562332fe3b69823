"""Producer and worker processes for the cross-process tracing test (tests/test_tracing.py).

Usage: python -m tests.procs.trace_procs produce|work <url> <prefix>
Each process records its finished spans with the SDK's in-memory exporter and prints them
as one JSON list on the last line of stdout. ``produce`` dispatches one job inside a
``request`` span and prints its id first; ``work`` runs until that job's two attempts (the
first fails, the second succeeds) have ended.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import taskora


def span_json(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent": f"{span.parent.span_id:016x}" if span.parent else None,
        "links": [
            [f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}"] for link in span.links
        ],
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [event.name for event in span.events],
    }


def make(url: str, prefix: str) -> tuple[taskora.App, InMemorySpanExporter, TracerProvider]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = taskora.App(url, prefix=prefix, tracing=provider)

    @app.task("traced", retry=taskora.Retry(attempts=2, delay=0.01, jitter=False))
    async def traced(data: dict[str, Any], ctx: taskora.Context) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    return app, exporter, provider


async def produce(url: str, prefix: str) -> None:
    app, exporter, provider = make(url, prefix)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("request"):
        handle = app.tasks["traced"].dispatch({"n": 1})  # type: ignore[attr-defined]
    print(await handle)
    await app.close()
    print(json.dumps([span_json(s) for s in exporter.get_finished_spans()]))


async def work(url: str, prefix: str) -> None:
    app, exporter, _ = make(url, prefix)
    async with app:
        for _ in range(6000):  # bounded: at most 60 s
            if sum(s.name == "process traced" for s in exporter.get_finished_spans()) >= 2:
                break
            await asyncio.sleep(0.01)
    print(json.dumps([span_json(s) for s in exporter.get_finished_spans()]))


if __name__ == "__main__":
    mode, url, prefix = sys.argv[1:4]
    asyncio.run((produce if mode == "produce" else work)(url, prefix))
