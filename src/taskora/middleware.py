"""Middleware: ``async def mw(ctx, call_next)`` wrapped around a job's handler.

The chain is app middleware (in ``app.use`` order), then the task's ``middleware=[...]``,
then the handler, composed once per worker. It runs after input validation and before
output validation, inside the job's timeout, so a timeout or a cancel reaches middleware
as ``CancelledError`` like it reaches the handler (docs/design.md#schemas-and-middleware).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .context import Context
from .errors import ConfigError, TaskoraError

__all__ = ["Middleware", "MiddlewareContext", "check_middleware", "run_chain"]


class MiddlewareContext:
    """What a middleware sees: the job's ``Context`` (``ctx.id``, ``ctx.attempt``,
    ``ctx.task``, ``ctx.log``, ...) plus ``data``, replaceable before ``call_next()``, and
    ``result``, set by the handler and replaceable after it (what is stored)."""

    __slots__ = ("context", "data", "result")

    def __init__(self, context: Context, data: Any) -> None:
        self.context = context
        self.data = data
        self.result: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.context, name)

    def __repr__(self) -> str:
        return f"MiddlewareContext({self.context!r})"


Middleware = Callable[[MiddlewareContext, Callable[[], Awaitable[Any]]], Awaitable[Any]]


def check_middleware(items: Iterable[Any], where: str) -> tuple[Middleware, ...]:
    """Each item must be an async callable taking (ctx, call_next): checked at declaration."""
    if callable(items) or isinstance(items, str | bytes):
        raise ConfigError(f"{where}: middleware must be a list of async callables")
    checked = []
    for mw in items:
        if not callable(mw):
            raise ConfigError(f"{where}: middleware {mw!r} is not callable")
        call = getattr(mw, "__call__", None)  # noqa: B004 - async callable objects
        if not (inspect.iscoroutinefunction(mw) or inspect.iscoroutinefunction(call)):
            raise ConfigError(
                f"{where}: middleware {getattr(mw, '__name__', mw)!r} must be an async "
                "function: async def mw(ctx, call_next)"
            )
        checked.append(mw)
    return tuple(checked)


async def run_chain(
    chain: tuple[Middleware, ...],
    context: Context,
    data: Any,
    handler: Callable[[Any], Awaitable[Any]],
) -> Any:
    """Run ``chain`` around ``handler``; return the final ``ctx.result``."""
    ctx = MiddlewareContext(context, data)
    last = -1

    async def step(index: int) -> Any:
        nonlocal last
        if index <= last:
            name = getattr(chain[index - 1], "__name__", "middleware")
            raise TaskoraError(f"call_next() called more than once in {name}")
        last = index
        if index == len(chain):
            ctx.result = await handler(ctx.data)
        else:
            await chain[index](ctx, lambda: step(index + 1))
        return ctx.result

    await step(0)
    return ctx.result
