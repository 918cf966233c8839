"""A module-level app on a real store, used by tests that each get a new event loop.

Run by tests/test_loops.py under pytest-asyncio (function-scoped loops):
every test below runs on a loop of its own, against one ``App`` made at import.
"""

from __future__ import annotations

import os

import anyio
import msgspec
import pytest

from asyncq import App

app = App("sample-loops", backend=os.environ["SAMPLE_URL"], telemetry=False)


class Add(msgspec.Struct):
    a: int
    b: int


@app.job(schema=Add, name="sample.add")
async def add(payload: Add) -> int:
    return payload.a + payload.b


@pytest.mark.asyncio
@pytest.mark.parametrize("n", range(3))
async def test_a_new_loop_each_time(n: int) -> None:
    with anyio.fail_after(20):
        async with app.worker(concurrency=2):
            assert await add.enqueue_and_wait(Add(n, 1), timeout=15) == n + 1
