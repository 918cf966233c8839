"""Rolling deploys: a job whose name a worker does not know waits for a worker that does."""

from __future__ import annotations

import anyio
import msgspec
import pytest

import asyncq._execution
from asyncq import App, ConfigurationError, ErrorKind, JobFailed, JobState, RetryPolicy
from asyncq.backends.base import Backend
from asyncq.testing import run_until_idle

pytestmark = pytest.mark.anyio


class Nothing(msgspec.Struct):
    n: int = 0


@pytest.fixture
def quick_hand_backs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hand unknown jobs back after 20 ms instead of 5 s, so a test sees several."""
    monkeypatch.setattr(asyncq._execution, "UNKNOWN_JOB_RETRY", RetryPolicy.fixed(0.02))


def old_and_new(backend: Backend, **options: object) -> tuple[App, App]:
    """The app of a worker deployed before the job ``resize`` existed, and one after."""
    old = App("images", backend=backend, **options)  # type: ignore[arg-type]

    @old.job(schema=Nothing, name="thumbnail")
    async def thumbnail(payload: Nothing) -> None: ...

    new = App("images", backend=backend)
    new.include(thumbnail)
    return old, new


async def test_an_unknown_job_is_handed_back_with_backoff(backend: Backend) -> None:
    old, _ = old_and_new(backend)
    ghost = App("producer", backend=backend).handle("resize", schema=Nothing, queue="resize-q")
    handle = await ghost.enqueue(Nothing(), max_attempts=1)
    await run_until_idle(old, queues=["resize-q"])
    info = await handle.info()
    # Handed back, not dead, though max_attempts is 1; the next try in 5 s.
    assert info.state is JobState.FAILED
    error = info.errors[-1]
    assert error.kind is ErrorKind.UNKNOWN_JOB
    assert info.scheduled_at - error.at == pytest.approx(5.0, abs=0.01)
    assert "'resize'" in error.message
    assert "queue 'resize-q'" in error.message
    assert "known: thumbnail" in error.message


async def test_a_newer_worker_runs_a_job_an_older_one_handed_back(
    backend: Backend, quick_hand_backs: None
) -> None:
    old, new = old_and_new(backend)

    @new.job(schema=Nothing, name="resize", max_attempts=1)
    async def resize(payload: Nothing) -> str:
        return "resized"

    handle = await resize.enqueue(Nothing())
    await run_until_idle(old)
    assert (await handle.info()).state is JobState.FAILED
    with anyio.fail_after(15):
        async with new.worker(poll_interval=0.05):
            assert await handle.result(timeout=10) == "resized"
    info = await handle.info()
    assert info.errors  # a burst worker may have handed it back more than once
    assert {e.kind for e in info.errors} == {ErrorKind.UNKNOWN_JOB}


async def test_hand_backs_do_not_count_against_max_attempts(
    backend: Backend, quick_hand_backs: None
) -> None:
    old, new = old_and_new(backend)
    calls: list[int] = []

    @new.job(schema=Nothing, name="resize", max_attempts=2, retry=RetryPolicy.fixed(0.01))
    async def resize(payload: Nothing) -> None:
        calls.append(1)
        raise ValueError("corrupt image")

    handle = await resize.enqueue(Nothing())
    with anyio.fail_after(15):
        for expected in (1, 2, 3):  # three hand-backs by the old worker
            while (await handle.info()).attempts < expected:
                await run_until_idle(old)
                await anyio.sleep(0.02)  # the next hand-back is due 20 ms later
        async with new.worker(poll_interval=0.05):
            with pytest.raises(JobFailed, match="corrupt image"):
                await handle.result(timeout=10)
    info = await handle.info()
    assert len(calls) == 2  # both of its attempts ran
    assert info.state is JobState.DEAD
    kinds = [e.kind for e in info.errors]
    # A burst worker may hand it back more than once per run.
    assert kinds[-2:] == [ErrorKind.ERROR] * 2
    assert len(kinds) >= 5
    assert set(kinds[:-2]) == {ErrorKind.UNKNOWN_JOB}


async def test_an_unknown_job_is_dead_after_the_grace_period(
    backend: Backend, quick_hand_backs: None
) -> None:
    old, _ = old_and_new(backend, unknown_job_grace=0.2)
    ghost = App("producer", backend=backend).handle("resize", schema=Nothing, queue="default")
    handle = await ghost.enqueue(Nothing())
    with anyio.fail_after(15):
        async with old.worker(poll_interval=0.05):
            with pytest.raises(JobFailed, match=r"grace period of 0\.2s"):
                await handle.result(timeout=10)
    info = await handle.info()
    assert info.state is JobState.DEAD
    assert len(info.errors) >= 2  # handed back at least once before
    assert {e.kind for e in info.errors} == {ErrorKind.UNKNOWN_JOB}
    assert info.errors[-1].at - info.errors[0].at >= 0.2
    assert "no job named 'resize'" in info.errors[-1].message
    assert "known: thumbnail" in info.errors[-1].message


async def test_no_grace_is_dead_at_once(backend: Backend) -> None:
    old, _ = old_and_new(backend, unknown_job_grace=0)
    ghost = App("producer", backend=backend).handle("resize", schema=Nothing)
    handle = await ghost.enqueue(Nothing())
    await run_until_idle(old)
    info = await handle.info()
    assert info.state is JobState.DEAD
    assert [e.kind for e in info.errors] == [ErrorKind.UNKNOWN_JOB]


async def test_an_operators_retry_gives_a_new_grace_period(
    backend: Backend, quick_hand_backs: None
) -> None:
    old, _ = old_and_new(backend, unknown_job_grace=0.1)
    ghost = App("producer", backend=backend).handle("resize", schema=Nothing)
    handle = await ghost.enqueue(Nothing())
    with anyio.fail_after(15):
        async with old.worker(poll_interval=0.05):
            with pytest.raises(JobFailed):
                await handle.result(timeout=10)
        await old.admin.retry([handle.id])
        await run_until_idle(old)
    info = await handle.info()
    # Handed back again rather than dead at once on the old errors' clock.
    assert info.state is JobState.FAILED
    assert info.errors[-1].kind is ErrorKind.UNKNOWN_JOB


@pytest.mark.parametrize("grace", [-1.0, float("inf"), float("nan")])
def test_the_grace_period_must_be_finite_seconds(grace: float) -> None:
    with pytest.raises(ConfigurationError, match="unknown_job_grace"):
        App("bad", unknown_job_grace=grace)
