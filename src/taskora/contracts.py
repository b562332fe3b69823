"""Contracts: a task's name, schemas and options, declared without an App.

A module of contracts is what a producer and a worker share: the producer process
``app.register(contract)`` (dispatch only; no handler, no worker) and the worker process
``app.implement(contract, handler, **options)``. Schemas are built here, so a type pydantic
cannot handle fails at import of the contract module.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from .durations import Duration, to_ms
from .errors import ConfigError
from .schemas import Schema, handler_types, is_schemaless, schema_for
from .types import Retry, Stall, check_name

__all__ = ["TaskContract", "check_handler_against", "define_task"]

In = TypeVar("In")
Out = TypeVar("Out")

UNSET: Any = object()


@dataclass(frozen=True, eq=False)
class TaskContract(Generic[In, Out]):
    """What ``define_task`` returns; pass it to ``app.register`` or ``app.implement``."""

    name: str
    input: Schema | None
    output: Schema | None
    options: dict[str, Any]  # only the options the contract sets
    version: int | None = None

    def __repr__(self) -> str:
        return f"TaskContract({self.name!r})"


@overload
def define_task(
    name: str,
    *,
    input: type[In],
    output: type[Out],
    retry: Retry | None = ...,
    timeout: Duration | None = ...,
    stall: Stall = ...,
    version: int | None = ...,
) -> TaskContract[In, Out]: ...


@overload
def define_task(
    name: str,
    *,
    input: type[In],
    output: None = None,
    retry: Retry | None = ...,
    timeout: Duration | None = ...,
    stall: Stall = ...,
    version: int | None = ...,
) -> TaskContract[In, Any]: ...


@overload
def define_task(
    name: str,
    *,
    input: None = None,
    output: type[Out],
    retry: Retry | None = ...,
    timeout: Duration | None = ...,
    stall: Stall = ...,
    version: int | None = ...,
) -> TaskContract[Any, Out]: ...


@overload
def define_task(
    name: str,
    *,
    input: Any = None,
    output: Any = None,
    retry: Retry | None = ...,
    timeout: Duration | None = ...,
    stall: Stall = ...,
    version: int | None = ...,
) -> TaskContract[Any, Any]: ...


def define_task(
    name: str,
    *,
    input: Any = None,
    output: Any = None,
    retry: Any = UNSET,
    timeout: Any = UNSET,
    stall: Any = UNSET,
    version: int | None = None,
) -> TaskContract[Any, Any]:
    """Declare a task for producers and workers that share no code but this.

    ``input``/``output`` take any type pydantic's TypeAdapter accepts; ``retry``, ``timeout``
    and ``stall`` are defaults an ``implement(..., **options)`` may override.
    """
    check_name(name, "task name")
    where = f"contract {name!r}"
    options: dict[str, Any] = {}
    if retry is not UNSET:
        if retry is not None and not isinstance(retry, Retry):
            raise ConfigError(f"{where}: retry must be a taskora.Retry, got {retry!r}")
        options["retry"] = retry
    if timeout is not UNSET:
        if timeout is not None:
            to_ms(timeout, f"{where}: timeout")
        options["timeout"] = timeout
    if stall is not UNSET:
        if not isinstance(stall, Stall):
            raise ConfigError(f"{where}: stall must be a taskora.Stall, got {stall!r}")
        options["stall"] = stall
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise ConfigError(f"{where}: version must be an integer >= 1, got {version!r}")
    return TaskContract(
        name=name,
        input=schema_for(input, f"{where} input"),
        output=schema_for(output, f"{where} output"),
        options=options,
        version=version,
    )


def check_handler_against(
    contract: TaskContract[Any, Any], handler: Callable[..., Any], where: str
) -> None:
    """A handler annotated with other types than the contract's schemas is a mistake that
    would only show on the first job: refuse it at ``implement()``.

    The handler may take a base class of the contract's input and return a subclass of
    its output; unannotated (or ``Any``/``dict``) parameters accept anything.
    """
    hinted_in, hinted_out = handler_types(handler, where)
    pairs = (
        ("input", "data parameter", contract.input, hinted_in, False),
        ("output", "return type", contract.output, hinted_out, True),
    )
    for what, part, schema, hinted, covariant in pairs:
        if schema is None or is_schemaless(hinted) or hinted is inspect.Parameter.empty:
            continue
        declared = schema.type
        if hinted == declared:
            continue
        if isinstance(hinted, type) and isinstance(declared, type):
            sub, sup = (hinted, declared) if covariant else (declared, hinted)
            if issubclass(sub, sup):
                continue
        raise ConfigError(
            f"{where}: the handler's {part} is annotated {_name(hinted)} but the contract's "
            f"{what} is {_name(declared)}"
        )


def _name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else repr(tp)
