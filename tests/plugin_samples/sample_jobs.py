"""A user's test module for asyncq's pytest plugin; run by tests/test_pytest_plugin.py.

``MARK`` is set by the runner: ``pytest.mark.asyncio`` (pytest-asyncio strict),
``pytest.mark.anyio`` (anyio's plugin), or nothing (pytest-asyncio auto mode).
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import msgspec
import pytest

from asyncq import App, ConfigurationError, JobState, RetryPolicy

MARK = os.environ["SAMPLE_MARK"]
pytestmark = [] if MARK == "auto" else [getattr(pytest.mark, MARK)]

app = App("sample", backend="memory://", telemetry=False)


class Email(msgspec.Struct):
    to: str


calls: list[str] = []


@app.job(schema=Email, name="sample.send")
async def send(payload: Email) -> str:
    return payload.to.upper()


@app.job(
    schema=Email,
    name="sample.flaky",
    max_attempts=4,
    retry=RetryPolicy(base=30.0, jitter=False),
)
async def flaky(payload: Email) -> str:
    calls.append(payload.to)
    if len(calls) < 3:
        raise ValueError("not yet")
    return "ok"


class Nightly(msgspec.Struct):
    report: str = "sales"


nightly_runs: list[str] = []


@app.cron("0 3 * * *")
@app.job(schema=Nightly, name="sample.nightly")
async def nightly(payload: Nightly) -> None:
    nightly_runs.append(payload.report)


@pytest.fixture
def asyncq_app() -> App:
    return app


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_assert_enqueued_and_run_until_idle(jobs) -> None:
    with anyio.fail_after(10):
        handle = await send.enqueue(Email("a@x"))
        await send.enqueue(Email("b@x"))
        jobs.assert_enqueued(send, payload=Email("a@x"), count=1)
        jobs.assert_enqueued(send, count=2)
        jobs.assert_not_enqueued(flaky)
        with pytest.raises(AssertionError, match=r"sample\.send.*3 time.*'b@x'"):
            jobs.assert_enqueued(send, count=3)
        assert await jobs.run_until_idle() == 2
        assert await handle.result(timeout=5) == "A@X"


async def test_each_test_has_a_fresh_store(jobs) -> None:
    assert jobs.enqueued() == []
    assert await jobs.backend.list_jobs() == []


async def test_a_delay_is_fast_forwarded(jobs) -> None:
    with anyio.fail_after(10):
        handle = await send.enqueue(Email("later"), delay=3600)
        assert await jobs.run_until_idle() == 0
        assert await jobs.state(handle.id) is JobState.SCHEDULED
        assert jobs.clock.advance(1800) == 0
        assert await jobs.run_until_idle() == 0
        assert jobs.clock.advance(1800) == 1
        assert await jobs.run_until_idle() == 1
        assert await handle.result(timeout=5) == "LATER"


async def test_retry_backoff_is_fast_forwarded(jobs) -> None:
    calls.clear()
    with anyio.fail_after(10):
        handle = await flaky.enqueue(Email("r"))
        assert await jobs.run_until_idle() == 1
        assert await jobs.state(handle.id) is JobState.FAILED  # waits 30 s for its retry
        # Runs what waits, in turn: the two retries (and the nightly cron job).
        assert await jobs.run_until_complete() >= 2
        assert await handle.result(timeout=5) == "ok"
        assert calls == ["r", "r", "r"]
        assert jobs.clock.advanced >= 30 + 60 - 1


async def test_cron_ticks_are_fast_forwarded(jobs) -> None:
    nightly_runs.clear()
    with anyio.fail_after(10):
        await jobs.run_until_idle()
        assert nightly_runs == []
        jobs.clock.advance(86_400)  # a day: one tick passed
        await jobs.run_until_idle()
        assert nightly_runs == ["sales"]
        await jobs.run_until_idle()
        assert nightly_runs == ["sales"]  # once per tick
        jobs.clock.advance(2 * 86_400)  # two more: caught up by one run, like a downtime
        await jobs.run_until_idle()
        assert nightly_runs == ["sales", "sales"]
        assert len(jobs.enqueued(nightly)) == 2


async def test_an_app_that_forgot_to_isolate_fails(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ASYNCQ_BACKEND", raising=False)
    bare = App("bare", telemetry=False)
    with pytest.raises(ConfigurationError, match="use the `jobs` fixture"):
        await bare.open()
    assert not (tmp_path / "asyncq.db").exists()
