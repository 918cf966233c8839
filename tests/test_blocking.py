"""Development mode: a worker warns when an async handler blocks its event loop."""

from __future__ import annotations

import logging
import time

import anyio
import msgspec
import pytest

from asyncq import App, ConfigurationError
from asyncq.backends.memory import MemoryBackend
from asyncq.testing import in_memory, run_until_idle

pytestmark = pytest.mark.anyio


class Nothing(msgspec.Struct):
    n: int = 0


def blocked_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if "event loop has been blocked" in r.getMessage()
    ]


async def test_a_blocking_async_handler_is_named_with_its_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App("blocking", backend=MemoryBackend())

    @app.job(schema=Nothing, name="sleeps_badly")
    async def sleeps_badly(payload: Nothing) -> None:
        time.sleep(0.4)  # noqa: ASYNC251 - the mistake under test

    caplog.set_level(logging.WARNING, "asyncq.worker")
    with anyio.fail_after(10):
        async with app, app.worker(warn_blocking=0.1):
            await sleeps_badly.enqueue_and_wait(Nothing(), timeout=5)
    (warning,) = blocked_warnings(caplog)
    assert "job 'sleeps_badly'" in warning
    assert "test_blocking.py:" in warning
    assert "sleeps_badly" in warning


async def test_an_async_handler_that_awaits_is_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App("blocking", backend=MemoryBackend())

    @app.job(schema=Nothing, name="sleeps_well")
    async def sleeps_well(payload: Nothing) -> None:
        await anyio.sleep(0.4)

    caplog.set_level(logging.WARNING, "asyncq.worker")
    with anyio.fail_after(10):
        async with in_memory(app):
            await sleeps_well.enqueue(Nothing())
            await run_until_idle(app, warn_blocking=0.2)  # on in the testing helper
    assert blocked_warnings(caplog) == []


def test_warn_blocking_must_be_positive() -> None:
    app = App("blocking", backend=MemoryBackend())
    with pytest.raises(ConfigurationError, match="warn_blocking"):
        app.make_worker(warn_blocking=0)
