"""A worker SIGKILLed while it runs a parent: the parent is recovered, runs again, and
its waiting child runs after it, on every store processes can share."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import pytest

from asyncq import JobState

from ._support import WORKER_ARGS, Fleet, Task, count_runs, producer

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.chaos]

BOUND = 90.0


async def test_child_runs_after_its_killed_parent_is_recovered(
    store_url: str, tmp_path: Path
) -> None:
    fleet = Fleet(tmp_path, store_url, WORKER_ARGS)
    app, work = producer(store_url)
    try:
        with anyio.fail_after(BOUND):
            async with app:
                parent = await work.enqueue(Task(1, seconds=2.0))
                child = await work.enqueue(Task(2), after=[parent])
                assert (await child.info()).state is JobState.WAITING
                await fleet.start(1)
                # Another process claims it: only the store shows when (polled, briefly).
                while (await parent.info()).state is not JobState.ACTIVE:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
                assert await fleet.replace(0, signal.SIGKILL) == -signal.SIGKILL
                assert (await child.info()).state is JobState.WAITING
                assert await child.result(timeout=BOUND / 2) == 2
                assert await parent.result(timeout=1) == 1
                info = await parent.info()
                assert info.last_error is not None  # the lost attempt
                assert info.attempts == 2
    finally:
        await fleet.stop()
    runs = count_runs(fleet.log)
    assert runs[parent.id] == 1  # the killed run never reached its write
    assert runs[child.id] == 1
    assert fleet.crashed() == []
