"""Helpers for testing code that uses asyncq, with no server.

::

    from asyncq.testing import in_memory, run_until_idle

    async def test_charge_sends_receipt():
        async with in_memory(app):
            handle = await charge.enqueue(Charge("o-1", 500))
            await run_until_idle(app)
            assert (await handle.info()).state is JobState.COMPLETED
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio

from ._app import App
from ._worker import Worker
from .backends.memory import MemoryBackend

__all__ = ["in_memory", "run_until_idle"]


@asynccontextmanager
async def in_memory(app: App) -> AsyncIterator[MemoryBackend]:
    """Point ``app`` at a fresh in-memory backend for the block, then restore its backend."""
    previous = app.backend_spec
    backend = MemoryBackend()
    await app.close()
    app.use_backend(backend)
    try:
        async with app:
            yield backend
    finally:
        await app.close()
        app.use_backend(previous)


async def run_until_idle(
    app: App,
    *,
    timeout: float = 10.0,
    concurrency: int = 10,
    queues: Sequence[str] | None = None,
    warn_blocking: float | None = 0.1,
) -> Worker:
    """Run a worker until no job is ready or running, then return it (``worker.processed``).

    It warns when an async handler blocks the event loop for longer than
    ``warn_blocking`` seconds (``None``: off), naming the job and the line.

    Jobs scheduled for later are left alone; retries due later too.

    Raises:
        TimeoutError: the queues did not empty within ``timeout`` seconds.
    """
    worker = app.make_worker(
        concurrency=concurrency,
        queues=queues,
        burst=True,
        poll_interval=0.05,
        warn_blocking=warn_blocking,
    )
    with anyio.fail_after(timeout):
        await worker.run()
    return worker
