"""An app for the operations tests, and the plumbing to run ``asyncq`` verbs on it in-process.

``asyncq <verb> ops_app:app`` loads this module. The tests point ``app`` at the
parametrized ``backend`` fixture (through ``Borrowed``, so commands cannot
close it) and run each command in a worker thread whose coroutine is handed
back to the test's own event loop, where that backend lives.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import msgspec
import pytest
from click.testing import CliRunner, Result

from asyncq import App, JobContext
from asyncq.backends.base import Backend
from asyncq.cli import _base, main

app = App("ops")


class Resize(msgspec.Struct):
    image: str
    width: int


class Resized(msgspec.Struct):
    image: str
    size: int


class Note(msgspec.Struct):
    text: str = ""


@app.job(schema=Resize, name="resize", queue="images", max_attempts=1)
async def resize(payload: Resize, ctx: JobContext) -> Resized:
    await ctx.progress(0.5)
    if payload.width <= 0:
        raise ValueError(f"width must be > 0, got {payload.width}")
    return Resized(payload.image, payload.width * 2)


#: set while a ``note`` job with the text "hold" runs; such a job runs until cancelled
holding = anyio.Event()


@app.job(schema=Note, name="note")
async def note(payload: Note) -> str:
    if payload.text == "hold":
        global holding
        holding.set()
        try:
            await anyio.sleep_forever()
        finally:
            holding = anyio.Event()
    return payload.text


class Borrowed:
    """A backend lent to the app: commands may open and close the app, not the backend."""

    def __init__(self, inner: Backend) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass


def lend(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point ``app`` at ``backend`` and make commands run on the calling test's event loop."""
    monkeypatch.delenv("ASYNCQ_BACKEND", raising=False)
    monkeypatch.setattr(_base, "runner", anyio.from_thread.run)
    app.use_backend(Borrowed(backend))  # type: ignore[arg-type]


async def give_back() -> None:
    await app.close()
    app.use_backend(None)


@contextlib.asynccontextmanager
async def lent(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Backend]:
    """``backend`` behind ``app`` (for its worker and the CLI) for the block, then given back."""
    lend(backend, monkeypatch)
    try:
        yield backend
    finally:
        await give_back()


async def asyncq(*args: str, stdin: str | None = None) -> Result:
    """Run ``asyncq ARGS`` in a worker thread; its coroutine runs on this event loop."""
    invoke = functools.partial(
        CliRunner().invoke, main, list(args), input=stdin, prog_name="asyncq"
    )
    with anyio.fail_after(30):
        return await anyio.to_thread.run_sync(invoke)
