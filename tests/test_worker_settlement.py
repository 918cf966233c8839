"""How a worker acknowledges finished attempts: fused with its claims when the backend can.

A backend that implements ``SettlesOnClaim`` gets the outcomes waiting when
the fetch loop claims in the same call; the settle loop sends them whenever
the fetch loop is not about to claim. These tests watch the calls through
recording subclasses of the memory and SQLite backends.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from asyncq import App, JobState
from asyncq._records import Lease, Outcome
from asyncq.backends._verbs import ClaimQuery
from asyncq.backends.base import Backend, SettlesOnClaim
from asyncq.backends.memory import MemoryBackend
from asyncq.backends.sqlite import SQLiteBackend
from asyncq.exceptions import BackendUnavailable

pytestmark = pytest.mark.anyio


class Item(msgspec.Struct):
    n: int


class Calls:
    """What a recording backend was asked: calls by name, outcomes sent by each path."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.fused: list[str] = []
        self.settled: list[str] = []
        #: how many fused calls with outcomes still fail (then succeed)
        self.fail_fused = 0

    def settle(self, outcomes: Sequence[Outcome]) -> None:
        """Record a plain settle."""
        self.count["settle"] += 1
        self.settled += [outcome.job_id for outcome in outcomes]

    def settle_and_claim(self, outcomes: Sequence[Outcome]) -> None:
        """Record a fused call, or fail it while ``fail_fused`` says so."""
        self.count["settle_and_claim"] += 1
        if outcomes and self.fail_fused:
            self.fail_fused -= 1
            msg = "the store went away"
            raise BackendUnavailable(msg)
        self.fused += [outcome.job_id for outcome in outcomes]


class RecordingMemory(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.calls = Calls()

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        self.calls.settle(outcomes)
        return await super().settle(outcomes)

    async def _settle_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimQuery
    ) -> tuple[list[bool], list[Lease]]:
        self.calls.settle_and_claim(outcomes)
        return await super()._settle_and_claim(outcomes, claim)


class RecordingSQLite(SQLiteBackend):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls = Calls()

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        self.calls.settle(outcomes)
        return await super().settle(outcomes)

    async def _settle_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimQuery
    ) -> tuple[list[bool], list[Lease]]:
        self.calls.settle_and_claim(outcomes)
        return await super()._settle_and_claim(outcomes, claim)


class WithoutFusion(MemoryBackend):
    """A memory backend that does not offer the capability."""

    settle_and_claim = None


@pytest.fixture(params=["memory", "sqlite"])
async def recording(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    backend: RecordingMemory | RecordingSQLite
    if request.param == "memory":
        backend = RecordingMemory()
    else:
        backend = RecordingSQLite(tmp_path / "jobs.db")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


class Runs:
    """The handler's runs by payload; payloads below 0 wait for ``gate``."""

    def __init__(self) -> None:
        self.count: Counter[int] = Counter()
        self.gate = anyio.Event()
        self.started = anyio.Event()
        self.expected = 0

    async def work(self, payload: Item) -> int:
        self.count[payload.n] += 1
        if self.expected and sum(self.count.values()) >= self.expected:
            self.started.set()
        if payload.n < 0:
            await self.gate.wait()
        return payload.n


def make_app(backend: Backend, runs: Runs) -> App:
    app = App("settlement", backend=backend)

    @app.job(schema=Item, name="item", max_attempts=3)
    async def item(payload: Item) -> int:
        return await runs.work(payload)

    return app


async def states(backend: Backend, ids: Sequence[str]) -> Counter[JobState]:
    found: Counter[JobState] = Counter()
    for job_id in ids:
        job = await backend.get(job_id)
        assert job is not None
        found[job.state] += 1
    return found


async def test_a_busy_worker_settles_with_its_claims(recording: Any) -> None:
    calls: Calls = recording.calls
    runs = Runs()
    app = make_app(recording, runs)
    handler = app.handlers["item"]
    with anyio.fail_after(20):
        handles = await handler.enqueue_many([Item(n) for n in range(300)])
        await app.make_worker(concurrency=10, burst=True, poll_interval=0.05).run()
    ids = [h.id for h in handles]
    assert await states(recording, ids) == Counter({JobState.COMPLETED: 300})
    assert runs.count == Counter(range(300))
    # Every outcome went exactly once, and most rode along with a claim.
    assert sorted(calls.fused + calls.settled) == sorted(ids)
    assert len(calls.fused) > len(calls.settled)


async def test_without_the_capability_the_worker_settles_apart() -> None:
    backend = WithoutFusion()
    assert not isinstance(backend, SettlesOnClaim)
    runs = Runs()
    app = make_app(backend, runs)
    with anyio.fail_after(10):
        handles = await app.handlers["item"].enqueue_many([Item(n) for n in range(50)])
        await app.make_worker(concurrency=5, burst=True).run()
        assert await states(backend, [h.id for h in handles]) == Counter({JobState.COMPLETED: 50})


async def test_an_idle_worker_settles_at_once(recording: Any) -> None:
    """The fetch loop waits for work with a long poll: the settle loop must not wait for it."""
    runs = Runs()
    app = make_app(recording, runs)
    handler = app.handlers["item"]
    with anyio.fail_after(10):
        async with app.worker(concurrency=2, poll_interval=60):
            assert await handler.enqueue_and_wait(Item(1), timeout=5) == 1
            # Both slots full, one of them held: a result still comes back.
            held = await handler.enqueue(Item(-1))
            assert await handler.enqueue_and_wait(Item(2), timeout=5) == 2
            runs.gate.set()
            assert await held.result(timeout=5) == -1


async def test_a_failed_fused_call_keeps_its_outcomes(
    recording: Any, caplog: pytest.LogCaptureFixture
) -> None:
    calls: Calls = recording.calls
    caplog.set_level(logging.WARNING, "asyncq.worker")
    calls.fail_fused = 2
    runs = Runs()
    app = make_app(recording, runs)
    with anyio.fail_after(20):
        handles = await app.handlers["item"].enqueue_many([Item(n) for n in range(100)])
        await app.make_worker(concurrency=10, burst=True, poll_interval=0.05).run()
    ids = [h.id for h in handles]
    assert calls.fail_fused == 0, "the fused call was never tried"
    assert await states(recording, ids) == Counter({JobState.COMPLETED: 100})
    assert runs.count == Counter(range(100)), "a kept outcome must not make a job run again"
    assert sorted(calls.fused + calls.settled) == sorted(ids)
    failed = [
        r.getMessage() for r in caplog.records if "job(s) failed: the store went away" in r.message
    ]
    assert len(failed) == 2, failed


async def test_shutdown_flushes_what_finished_last(recording: Any) -> None:
    runs = Runs()
    app = make_app(recording, runs)
    with anyio.fail_after(10):
        async with app.worker(concurrency=10, poll_interval=60, shutdown_timeout=5) as worker:
            runs.expected = 10
            handles = await app.handlers["item"].enqueue_many([Item(-n - 1) for n in range(10)])
            await runs.started.wait()
            # They finish while the worker stops: their outcomes must still be stored.
            worker.stop()
            runs.gate.set()
    assert await states(recording, [h.id for h in handles]) == Counter({JobState.COMPLETED: 10})
