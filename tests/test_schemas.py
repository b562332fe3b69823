"""Schemas: input/output validated by pydantic at dispatch, in the worker and on the result."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pydantic
import pytest
from typing_extensions import TypedDict

import taskora
from tests.conftest import AppFactory
from tests.stored import fields


class Email(pydantic.BaseModel):
    to: str
    subject: str = "hello"
    retries: int = 0


class Sent(pydantic.BaseModel):
    message_id: str
    length: int


class Point(TypedDict):
    x: int
    y: int


class NotPydantic:
    def __init__(self, anything: object) -> None: ...


@dataclass
class Box:
    width: int
    height: int


async def test_model_in_and_out(make_app: AppFactory) -> None:
    app = make_app()
    seen: list[Any] = []

    @app.task("send")
    async def send(data: Email) -> Sent:
        seen.append(data)
        return Sent(message_id=f"m-{data.to}", length=len(data.subject))

    async with app:
        handle = send.dispatch({"to": "a@x", "retries": "2"})  # plain data, coerced
        result = await handle.wait_for(20)
        assert isinstance(result, Sent) and result == Sent(message_id="m-a@x", length=5)
        assert isinstance(seen[0], Email) and seen[0].retries == 2
        # the validated value, defaults applied, is what was stored (as JSON)
        stored = await fields(app, "send", handle.id)
        assert stored["data"] == '{"to":"a@x","subject":"hello","retries":2}'
        # a model instance is accepted too
        second = await send.dispatch(Email(to="b@x", subject="hey")).wait_for(20)
        assert second == Sent(message_id="m-b@x", length=3)


async def test_invalid_dispatch_raises_on_await_and_writes_nothing(
    make_app: AppFactory,
) -> None:
    app = make_app()

    @app.task("send")
    async def send(data: Email) -> None:
        raise AssertionError("never runs")

    handle = send.dispatch({"subject": 5})
    with pytest.raises(taskora.ValidationError) as info:
        await handle
    paths = [issue["path"] for issue in info.value.issues]
    assert ["to"] in paths and ["subject"] in paths
    assert "to: Field required" in str(info.value)
    with pytest.raises(taskora.ValidationError):
        await handle.result
    assert set((await app.counts("send")).values()) == {0}
    # dispatch_many fails only the bad item's handle
    good, bad = send.dispatch_many([{"data": {"to": "a"}}, {"data": {"to": []}}])
    await good
    with pytest.raises(taskora.ValidationError):
        await bad


@pytest.mark.parametrize(
    ("schema", "good", "expected", "bad"),
    [
        (Point, {"x": 1, "y": "2"}, {"x": 1, "y": 2}, {"x": 1}),
        (Box, {"width": 2, "height": 3}, Box(2, 3), {"width": "wide", "height": 3}),
        (dict[str, int], {"a": "1"}, {"a": 1}, {"a": "one"}),
        (list[int], [1, "2"], [1, 2], ["x"]),
    ],
)
async def test_any_type_adapter_type(
    make_app: AppFactory, schema: Any, good: Any, expected: Any, bad: Any
) -> None:
    app = make_app()

    @app.task("typed", input=schema, output=schema)
    async def typed(data: Any) -> Any:
        assert data == expected  # the handler gets the validated value
        return data

    async with app:
        assert await typed.dispatch(good).wait_for(20) == expected
        with pytest.raises(taskora.ValidationError):
            await typed.dispatch(bad)


async def test_worker_validates_every_job_and_fails_without_retry(make_app: AppFactory) -> None:
    producer = make_app()
    worker_app = make_app()
    # the producer declares no schema: bad data reaches the queue
    loose = producer.task("strict")(lambda data: None)
    ran: list[Any] = []

    @worker_app.task("strict", retry=taskora.Retry(attempts=3, delay="10ms"))
    async def strict(data: Email) -> None:
        ran.append(data)

    async with worker_app:
        handle = loose.dispatch({"to": ["not", "a", "string"]})
        with pytest.raises(taskora.JobFailedError) as info:
            await handle.wait_for(20)
        assert "input failed validation" in info.value.error and "to:" in info.value.error
        assert ran == []
        assert (await handle.get_state()) == taskora.JobState.FAILED
        assert (await fields(worker_app, "strict", handle.id))["attempt"] == "1"  # no retry


async def test_validation_retried_when_the_policy_names_it(make_app: AppFactory) -> None:
    app = make_app()
    attempts: list[int] = []

    @app.task(
        "flaky-output",
        retry=taskora.Retry(attempts=3, delay="10ms", retry_on=(taskora.ValidationError,)),
    )
    async def flaky(data: None, ctx: taskora.Context) -> Sent:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            return {"message_id": 1}  # type: ignore[return-value]  # invalid on purpose
        return Sent(message_id="ok", length=1)

    async with app:
        assert await flaky.dispatch(None).wait_for(20) == Sent(message_id="ok", length=1)
    assert attempts == [1, 2, 3]


async def test_invalid_output_fails_the_job(make_app: AppFactory) -> None:
    app = make_app()

    @app.task("bad-output", retry=taskora.Retry(attempts=3, delay="10ms"))
    async def bad(data: None) -> Sent:
        return {"message_id": "x"}  # type: ignore[return-value]  # missing length

    async with app:
        with pytest.raises(taskora.JobFailedError) as info:
            await bad.dispatch(None).wait_for(20)
    assert "output failed validation" in info.value.error and "length" in info.value.error


async def test_sync_handler_and_scalar_annotations(make_app: AppFactory) -> None:
    app = make_app()

    @app.task("double")
    def double(data: int) -> int:
        assert isinstance(data, int)
        return data * 2

    async with app:
        assert await double.dispatch("21").wait_for(20) == 42  # type: ignore[arg-type]
        with pytest.raises(taskora.ValidationError):
            await double.dispatch("many")  # type: ignore[arg-type]


def test_schemaless_annotations_build_nothing() -> None:
    app = taskora.App("memory://")

    @app.task("a")
    async def a(data: dict, ctx: taskora.Context) -> dict:  # type: ignore[type-arg]
        return data

    @app.task("b")
    async def b(data: Any) -> Any:
        return data

    @app.task("c")
    def c(data, ctx):  # type: ignore[no-untyped-def]
        return data

    @app.task("d")
    async def d(data: dict[str, Any]) -> None:
        return None

    for task in (a, b, c, d):
        assert task.input is None and task.output is None


def test_untyped_tasks_never_import_pydantic() -> None:
    code = (
        "import sys, taskora\n"
        "app = taskora.App('memory://')\n"
        "@app.task('x')\n"
        "async def x(data: dict, ctx: taskora.Context) -> dict: return data\n"
        "x.dispatch({'a': 1})\n"
        "assert 'pydantic' not in sys.modules, 'pydantic imported'\n"
        "@app.task('y')\n"
        "async def y(data: int) -> int: return data\n"
        "assert 'pydantic' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_bad_schemas_fail_at_declaration() -> None:
    app = taskora.App("memory://")
    with pytest.raises(taskora.ConfigError, match="pydantic cannot build a schema"):
        app.task("a", input=NotPydantic)(lambda data: None)
    with pytest.raises(taskora.ConfigError, match="pydantic cannot build a schema"):

        @app.task("b")
        async def b(data: NotPydantic) -> None: ...

    with pytest.raises(taskora.ConfigError, match="cannot be resolved"):

        @app.task("c")
        async def c(data: Undefined) -> None: ...  # type: ignore[name-defined]  # noqa: F821

    assert "a" not in app.tasks and "b" not in app.tasks


async def test_direct_call_is_unvalidated_handler_call() -> None:
    app = taskora.App("memory://")

    @app.task("send")
    async def send(data: Email) -> str:
        return data.to

    assert await send(Email(to="z")) == "z"


async def test_schedule_data_is_checked_against_the_input_schema(make_app: AppFactory) -> None:
    app = make_app()

    @app.task("send")
    async def send(data: Email) -> None: ...

    with pytest.raises(taskora.ValidationError, match="schedule data"):
        app.schedule("bad", task=send, data={"subject": "no recipient"}, every="1h")
    with pytest.raises(taskora.ValidationError, match="schedule data"):

        @app.task("inline", schedule=taskora.Schedule(every="1h", data={"to": 5}))
        async def inline(data: Email) -> None: ...

    assert "inline" not in app.tasks
    app.schedule("good", task=send, data={"to": "ops@example.com"}, every="1h")
