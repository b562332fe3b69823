"""Contracts: define_task without an App, register (dispatch only), implement, precedence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pydantic
import pytest

import taskora
from tests.conftest import AppFactory
from tests.contract_procs.contracts import Resize, Resized, resize


class Other(pydantic.BaseModel):
    name: str


class ResizeMore(Resize):
    extra: int = 0


async def test_register_dispatches_and_implement_runs(make_app: AppFactory) -> None:
    producer = make_app()
    worker = make_app()
    bound = producer.register(resize)
    assert producer.register(resize) is bound  # idempotent
    assert bound.handler is None
    with pytest.raises(taskora.ConfigError, match="no handler in this process"):
        bound(Resize(url="x"))

    async def handler(data: Resize) -> Resized:
        return Resized(url=data.url, pixels=data.width, worker_pid=0)

    implemented = worker.implement(resize, handler)
    async with producer, worker:  # the producer starts no worker for a registered task
        assert [w.name for w in producer._workers] == []
        out = await bound.dispatch(Resize(url="a", width=3)).wait_for(20)
        assert out == Resized(url="a", pixels=3, worker_pid=0)
        with pytest.raises(taskora.ValidationError):
            await bound.dispatch({"url": 5})  # type: ignore[arg-type]
        assert await implemented.dispatch({"url": "b"}).wait_for(20) == Resized(  # type: ignore[arg-type]
            url="b", pixels=100, worker_pid=0
        )


async def test_register_then_implement_upgrades_in_place(make_app: AppFactory) -> None:
    app = make_app()
    bound = app.register(resize)
    handle_before = bound.handle("some-id")

    async def handler(data: Resize) -> Resized:
        return Resized(url=data.url, pixels=1, worker_pid=0)

    upgraded = app.implement(resize, handler, concurrency=3)
    assert upgraded is bound and bound.handler is handler
    assert bound.options.concurrency == 3
    assert handle_before.task == "resize"
    with pytest.raises(taskora.ConfigError, match="already implemented"):
        app.implement(resize, handler)
    async with app:
        assert (await bound.dispatch(Resize(url="u")).wait_for(20)).pixels == 1


def test_option_precedence_implement_over_contract_over_app_defaults() -> None:
    app = taskora.App(
        "memory://",
        defaults=taskora.TaskDefaults(timeout="9s", concurrency=7, retry=taskora.Retry(attempts=5)),
    )
    contract = taskora.define_task("c", retry=taskora.Retry(attempts=2), timeout="3s")
    task = app.implement(contract, lambda data: None, timeout="1s")
    assert task.options.timeout_ms == 1000  # implement
    assert task.options.retry == taskora.Retry(attempts=2)  # contract
    assert task.options.concurrency == 7  # app default
    registered = taskora.App("memory://").register(contract)
    assert registered.options.timeout_ms == 3000


def test_register_wraps_an_existing_task() -> None:
    app = taskora.App("memory://")

    @app.task("resize")
    async def inline(data: Resize) -> Resized:
        raise AssertionError

    assert app.register(resize) is inline
    with pytest.raises(taskora.ConfigError, match="already implemented"):
        app.implement(resize, inline.handler)  # type: ignore[arg-type]


def test_handler_annotations_that_contradict_the_contract_are_refused() -> None:
    app = taskora.App("memory://")

    async def wrong_input(data: Other) -> Resized:
        raise AssertionError

    async def wrong_output(data: Resize) -> Other:
        raise AssertionError

    async def narrower_input(data: ResizeMore) -> Resized:
        raise AssertionError

    for handler, part in (
        (wrong_input, "data parameter is annotated Other but the contract's input is Resize"),
        (wrong_output, "return type is annotated Other but the contract's output is Resized"),
        (narrower_input, "annotated ResizeMore"),
    ):
        with pytest.raises(taskora.ConfigError, match=part):
            app.implement(resize, handler)  # type: ignore[arg-type]
        assert "resize" not in app.tasks

    async def loose(data: Any, ctx: taskora.Context) -> dict:  # type: ignore[type-arg]
        raise AssertionError

    task = app.implement(resize, loose)  # unannotated / Any: the contract's schemas apply
    assert task.input is resize.input and task.output is resize.output


def test_define_task_needs_no_app_and_checks_its_input() -> None:
    code = (
        "import sys, taskora\n"
        "c = taskora.define_task('x', timeout='2s')\n"
        "assert c.name == 'x' and c.input is None and c.options == {'timeout': '2s'}\n"
        "assert 'taskora.backends.memory' not in sys.modules\n"
        "assert 'pydantic' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with pytest.raises(taskora.ConfigError):
        taskora.define_task("bad name*")
    with pytest.raises(taskora.ConfigError, match="retry must be"):
        taskora.define_task("x", retry=3)  # type: ignore[arg-type]
    with pytest.raises(taskora.ConfigError, match="timeout"):
        taskora.define_task("x", timeout="soon")
    with pytest.raises(taskora.ConfigError, match="version"):
        taskora.define_task("x", version=0)
    with pytest.raises(taskora.ConfigError, match="pydantic cannot build"):
        taskora.define_task("x", input=object())  # type: ignore[call-overload]
    with pytest.raises(taskora.ConfigError, match="define_task"):
        taskora.App("memory://").register("resize")  # type: ignore[arg-type]


@pytest.mark.redis_only
def test_producer_process_with_only_the_contract_and_a_worker_process(
    redis_url: str, prefix: str
) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.contract_procs.worker", redis_url, prefix],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        producer = subprocess.run(
            [sys.executable, "-m", "tests.contract_procs.producer", redis_url, prefix, "20"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert producer.returncode == 0, producer.stdout + producer.stderr
        lines = producer.stdout.splitlines()
        results = [line.split() for line in lines[:20]]
        assert [(u, int(p)) for u, p, _ in results] == [
            (f"img-{i}", (i + 1) ** 2) for i in range(20)
        ]
        assert {int(pid) for _, _, pid in results} == {worker.pid}
        assert lines[20] == "refused url,width"
        assert lines[21] == "completed 20 waiting 0"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            out, _ = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, _ = worker.communicate()
    assert worker.returncode == 0, out.decode()
