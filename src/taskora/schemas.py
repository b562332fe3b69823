"""Schemas: a task's input and output types, validated by pydantic v2.

A schema is anything pydantic's ``TypeAdapter`` accepts. Without ``input=``/``output=`` the
handler's annotated data parameter and return type are the schemas; no annotation, ``Any``,
``object``, ``None`` or a plain ``dict`` mean no schema, and a task without one never
imports pydantic nor pays for validation (docs/design.md#schemas-and-middleware).
Adapters are built once, when the task is defined, so a type pydantic cannot handle is
reported there and not on the first job.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConfigError, ValidationError

__all__ = ["Schema", "handler_types", "schema_for"]

_NO_SCHEMA: tuple[Any, ...] = (
    inspect.Parameter.empty,
    Any,
    object,
    None,
    type(None),
    dict,
    typing.Dict,  # noqa: UP006 - the bare typing alias means a plain dict too
    dict[str, Any],
    dict[Any, Any],
    Mapping,
    Mapping[str, Any],
)


def is_schemaless(tp: Any) -> bool:
    """True for the annotations that mean "no validation"."""
    try:
        return any(tp is t or tp == t for t in _NO_SCHEMA)
    except Exception:  # an exotic annotation whose __eq__ misbehaves is a schema
        return False


class Schema:
    """A built ``TypeAdapter`` for one type, with errors mapped to taskora's."""

    __slots__ = ("_adapter", "_dump", "_validate", "type", "where")

    def __init__(self, tp: Any, where: str) -> None:
        try:
            import pydantic
        except ImportError:  # pragma: no cover - pydantic is a dependency; a broken install
            raise ConfigError(
                f"{where} has a schema ({tp!r}) but pydantic v2 is not installed"
            ) from None
        self.type = tp
        self.where = where
        try:
            self._adapter: Any = pydantic.TypeAdapter(tp)
            if not getattr(self._adapter, "pydantic_complete", True):  # an unresolved name
                self._adapter.rebuild(raise_errors=True)
        except Exception as exc:  # PydanticSchemaGenerationError, PydanticUserError, TypeError
            raise ConfigError(
                f"{where}: pydantic cannot build a schema for {tp!r}: {exc}"
            ) from None
        self._validate = self._adapter.validate_python
        self._dump = self._adapter.dump_python

    def validate(self, value: Any, what: str = "data") -> Any:
        """The value validated into the type (defaults applied, a model for a model)."""
        try:
            return self._validate(value)
        except Exception as exc:
            raise _validation_error(exc, f"{self.where}: {what}") from None

    def to_json(self, value: Any, what: str = "data") -> Any:
        """Validate, then the JSON form that is stored (``model_dump(mode="json")``)."""
        try:
            return self._dump(self._validate(value), mode="json")
        except ValidationError:
            raise
        except Exception as exc:
            raise _validation_error(exc, f"{self.where}: {what}") from None

    def __repr__(self) -> str:
        return f"Schema({self.type!r})"


def _validation_error(exc: Exception, what: str) -> Exception:
    errors = getattr(exc, "errors", None)
    if errors is None or not callable(errors):
        if isinstance(exc, ValidationError):
            return exc
        return ValidationError(f"{what} is invalid: {exc}", [{"path": [], "message": str(exc)}])
    issues = [
        {"path": list(item.get("loc", ())), "message": str(item.get("msg", ""))}
        for item in errors(include_url=False)
    ]
    detail = "; ".join(
        f"{'.'.join(str(p) for p in issue['path']) or '(root)'}: {issue['message']}"
        for issue in issues
    )
    return ValidationError(f"{what} failed validation: {detail}", issues)


def schema_for(tp: Any, where: str) -> Schema | None:
    """The schema for ``tp``, or None when ``tp`` means "no validation"."""
    if isinstance(tp, Schema):
        return tp
    if is_schemaless(tp):
        return None
    return Schema(tp, where)


def handler_types(fn: Callable[..., Any], where: str) -> tuple[Any, Any]:
    """The annotations of the handler's data parameter and of its return value.

    String annotations (``from __future__ import annotations``) are resolved in the
    handler's module; a name that cannot be resolved there is a ConfigError that says to
    define it at module level or to pass ``input=``/``output=``.
    """
    target = fn
    if not inspect.isfunction(fn) and not inspect.ismethod(fn):
        call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects
        if call is not None and (inspect.isfunction(call) or inspect.ismethod(call)):
            target = call
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return inspect.Parameter.empty, inspect.Parameter.empty
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    data = positional[0].annotation if positional else inspect.Parameter.empty
    result = signature.return_annotation
    scope = getattr(inspect.unwrap(target), "__globals__", {})
    return (
        _resolve(data, scope, f"{where}: the data parameter's annotation"),
        _resolve(result, scope, f"{where}: the return annotation"),
    )


def _resolve(annotation: Any, scope: dict[str, Any], what: str) -> Any:
    if not isinstance(annotation, str):
        return annotation
    try:
        value = eval(annotation, scope)  # the annotation as the module would evaluate it
        return eval(value, scope) if isinstance(value, str) else value  # a quoted one
    except Exception as exc:
        raise ConfigError(
            f"{what} {annotation!r} cannot be resolved ({exc}); define the type at module "
            "level or pass input=/output="
        ) from None
