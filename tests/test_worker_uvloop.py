"""A worker on uvloop (``asyncq run --loop uvloop``, the ``uvloop`` extra), on every backend.

The suite's async tests run on asyncio's own loop; these run their body under
``anyio.run(..., backend_options={"use_uvloop": True})``, as the command does,
so the drivers (redis-py, asyncpg, the SQLite thread) are exercised on uvloop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec
import pytest

from asyncq import App, JobState
from asyncq.cli._run import loop_options
from conftest import make_backend

uvloop = pytest.importorskip("uvloop", reason="the uvloop extra is not installed")


class Square(msgspec.Struct):
    n: int


def test_loop_options() -> None:
    assert loop_options("asyncio") == {}
    assert loop_options("uvloop") == {"use_uvloop": True}


def test_a_worker_runs_jobs_on_uvloop(
    request: pytest.FixtureRequest, backend_kind: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        backend, cleanup = make_backend(request, backend_kind, tmp_path)
        app = App("uvloop", backend=backend)

        @app.job(schema=Square, name="square")
        async def square(payload: Square) -> int:
            await anyio.lowlevel.checkpoint()
            return payload.n * payload.n

        with anyio.fail_after(20):
            try:
                async with app:
                    handles = await square.enqueue_many([Square(n) for n in range(50)])
                    async with app.worker(concurrency=8, poll_interval=0.2, heartbeat=0.05):
                        assert await square.enqueue_and_wait(Square(12), timeout=10) == 144
                        results = [await handle.result(timeout=10) for handle in handles]
                    assert results == [n * n for n in range(50)]
                    (stats,) = await backend.stats(app.queues)
                    assert stats.counts[JobState.COMPLETED] == 51
            finally:
                if cleanup is not None:
                    await cleanup()

    anyio.run(scenario, backend_options=loop_options("uvloop"))
