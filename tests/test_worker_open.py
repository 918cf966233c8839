"""How a worker opens its store: wait out an outage (a burst one gives up), give up on a refusal."""

from __future__ import annotations

import anyio
import pytest

from asyncq import App, BackendError, BackendUnavailable
from asyncq._worker import OPEN_TRIES
from asyncq.backends.memory import MemoryBackend

pytestmark = pytest.mark.anyio


class Refusing(MemoryBackend):
    """A store whose ``open`` fails ``failures`` times with ``error``, then works."""

    def __init__(self, error: BackendError, failures: int) -> None:
        super().__init__()
        self.error = error
        self.failures = failures
        self.opens = 0

    async def open(self) -> None:
        self.opens += 1
        if self.opens <= self.failures:
            raise self.error
        await super().open()


async def test_a_store_that_refuses_is_tried_a_few_times_then_its_error_raised() -> None:
    backend = Refusing(BackendError("authentication failed"), failures=1_000)
    app = App("refused", backend=backend)
    with anyio.fail_after(10), pytest.raises(BackendError, match="authentication failed"):
        await app.make_worker(burst=True).run()
    assert backend.opens == OPEN_TRIES


async def test_an_unreachable_store_is_waited_for_beyond_the_tries() -> None:
    backend = Refusing(BackendUnavailable("connection refused"), failures=OPEN_TRIES + 1)
    app = App("outage", backend=backend)
    worker = app.make_worker()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            await group.start(worker.run)  # started: the store opened at last
            worker.stop()
    assert backend.opens == OPEN_TRIES + 2


async def test_a_burst_worker_gives_up_on_an_unreachable_store_after_the_tries() -> None:
    """Run to empty the queues and exit, it says the store is down rather than wait for ever."""
    backend = Refusing(BackendUnavailable("connection refused"), failures=OPEN_TRIES + 1)
    app = App("outage", backend=backend)
    with anyio.fail_after(10), pytest.raises(BackendUnavailable, match="connection refused"):
        await app.make_worker(burst=True).run()
    assert backend.opens == OPEN_TRIES
