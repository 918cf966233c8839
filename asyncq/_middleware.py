"""Middleware: plain async callables wrapped around every handler call.

A middleware is ``async def mw(ctx: JobContext, call_next) -> Any``: it may do
work before and after ``await call_next()``, observe or translate exceptions,
or return without calling on. Telemetry is built the same way, so whatever
asyncq itself observes, users can observe too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from ._context import JobContext

__all__ = ["CallNext", "Middleware", "compose"]

CallNext = Callable[[], Awaitable[Any]]
Middleware = Callable[[JobContext, CallNext], Awaitable[Any]]


def compose(middleware: Sequence[Middleware], ctx: JobContext, call: CallNext) -> CallNext:
    """Wrap ``call`` in ``middleware``, the first one outermost."""
    for mw in reversed(middleware):
        call = partial(mw, ctx, call)
    return call
