"""Jobs claimed ahead of free slots (``prefetch``), on every backend.

A worker holds at most ``concurrency + prefetch`` jobs; those waiting for a
slot keep their leases through heartbeats, are settled ``cancelled`` at once
when an operator cancels them, and are handed back untouched on shutdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import msgspec
import pytest

from asyncq import App, JobCancelled, JobState
from asyncq._records import Lease, Outcome
from asyncq._worker import Worker
from asyncq.backends.base import Backend, SettlesOnClaim
from asyncq.exceptions import ConfigurationError

pytestmark = pytest.mark.anyio


class Step(msgspec.Struct):
    n: int


class Gate:
    """The handler: records its runs and how many overlap; waits for ``open``."""

    def __init__(self) -> None:
        self.ran: list[int] = []
        self.open = anyio.Event()
        self.running = 0
        self.most = 0
        self._started: list[tuple[int, anyio.Event]] = []

    def started(self, count: int) -> anyio.Event:
        """Set once ``count`` runs have started."""
        event = anyio.Event()
        self._started.append((count, event))
        self._check()
        return event

    def _check(self) -> None:
        for count, event in self._started:
            if len(self.ran) >= count:
                event.set()

    async def run(self, payload: Step) -> int:
        self.ran.append(payload.n)
        self.running += 1
        self.most = max(self.most, self.running)
        self._check()
        try:
            await self.open.wait()
        finally:
            self.running -= 1
        return payload.n


def make_app(backend: Backend, gate: Gate) -> App:
    app = App("prefetch", backend=backend)

    @app.job(schema=Step, name="step", max_attempts=3)
    async def step(payload: Step) -> int:
        return await gate.run(payload)

    return app


def options(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "heartbeat": 0.05,
        "poll_interval": 0.2,
        "recover_interval": 0.1,
        "shutdown_timeout": 5.0,
    }
    base.update(overrides)
    return base


async def active(backend: Backend) -> int:
    return sum(stats.counts[JobState.ACTIVE] for stats in await backend.stats())


def applied_ids(outcomes: Sequence[Outcome], applied: list[bool]) -> list[str]:
    return [outcome.job_id for outcome, ok in zip(outcomes, applied, strict=True) if ok]


class Watch:
    """Events for jobs claimed and settled through a backend, by wrapping its methods."""

    def __init__(self, backend: Backend) -> None:
        self._claimed: dict[str, anyio.Event] = {}
        self._settled: dict[str, anyio.Event] = {}
        claim, settle = backend.claim, backend.settle

        async def watched_claim(*args: Any, **kwargs: Any) -> list[Lease]:
            leases = await claim(*args, **kwargs)
            self._saw(self._claimed, [lease.job.id for lease in leases])
            return leases

        async def watched_settle(outcomes: Sequence[Outcome]) -> list[bool]:
            applied = await settle(outcomes)
            self._saw(self._settled, applied_ids(outcomes, applied))
            return applied

        backend.claim = watched_claim  # type: ignore[method-assign]
        backend.settle = watched_settle  # type: ignore[method-assign]
        if isinstance(backend, SettlesOnClaim):
            fused = backend.settle_and_claim

            async def watched_fused(
                outcomes: Sequence[Outcome], *args: Any, **kwargs: Any
            ) -> tuple[list[bool], list[Lease]]:
                applied, leases = await fused(outcomes, *args, **kwargs)
                self._saw(self._settled, applied_ids(outcomes, applied))
                self._saw(self._claimed, [lease.job.id for lease in leases])
                return applied, leases

            backend.settle_and_claim = watched_fused  # type: ignore[method-assign]

    @staticmethod
    def _saw(events: dict[str, anyio.Event], job_ids: list[str]) -> None:
        for job_id in job_ids:
            events.setdefault(job_id, anyio.Event()).set()

    async def claimed(self, job_id: str) -> None:
        await self._claimed.setdefault(job_id, anyio.Event()).wait()

    async def settled(self, job_id: str) -> None:
        await self._settled.setdefault(job_id, anyio.Event()).wait()


def test_prefetch_defaults_to_a_quarter_of_concurrency() -> None:
    app = App("defaults", backend="memory://")
    assert Worker(app, concurrency=10).prefetch == 3
    assert Worker(app, concurrency=100).prefetch == 25
    assert Worker(app, concurrency=1).prefetch == 1
    assert Worker(app, concurrency=10, prefetch=0).prefetch == 0
    with pytest.raises(ConfigurationError, match="prefetch"):
        Worker(app, prefetch=-1)


@pytest.mark.parametrize("prefetch", [0, 3])
async def test_holds_at_most_concurrency_plus_prefetch(backend: Backend, prefetch: int) -> None:
    gate = Gate()
    app = make_app(backend, gate)
    step = app.handlers["step"]
    with anyio.fail_after(15):
        handles = await step.enqueue_many([Step(n) for n in range(10)])
        async with app.worker(**options(concurrency=2, prefetch=prefetch)):
            await gate.started(2).wait()
            # The claim that filled both slots also took the jobs claimed ahead.
            assert await active(backend) == 2 + prefetch
            gate.open.set()
            results = [await handle.result(timeout=10) for handle in handles]
    assert sorted(results) == list(range(10))
    assert gate.most == 2
    assert sorted(gate.ran) == list(range(10))


async def test_shutdown_hands_jobs_claimed_ahead_back_untouched(backend: Backend) -> None:
    gate = Gate()
    watch = Watch(backend)
    app = make_app(backend, gate)
    step = app.handlers["step"]
    with anyio.fail_after(15):
        first = await step.enqueue(Step(0))
        async with app.worker(**options(concurrency=1, prefetch=2)) as worker:
            await gate.started(1).wait()
            ahead = await step.enqueue_many([Step(1), Step(2)])
            for handle in ahead:
                await watch.claimed(handle.id)
            worker.stop()
            # Handed back at once, while the running job still holds its slot.
            for handle in ahead:
                await watch.settled(handle.id)
            assert gate.running == 1
            gate.open.set()
        assert await first.result(timeout=5) == 0
        for handle in ahead:
            info = await handle.info()
            assert info.state is JobState.QUEUED
            assert info.attempts == 0
            assert info.errors == ()
    assert gate.ran == [0]


async def test_jobs_claimed_ahead_keep_their_leases(backend: Backend) -> None:
    gate = Gate()
    watch = Watch(backend)
    app = make_app(backend, gate)
    step = app.handlers["step"]
    with anyio.fail_after(15):
        async with app.worker(**options(concurrency=1, prefetch=1, lease=0.4)):
            first = await step.enqueue(Step(0))
            await gate.started(1).wait()
            waiting = await step.enqueue(Step(1))
            await watch.claimed(waiting.id)
            # Time must pass here: well over the lease, with recoveries every 0.1 s.
            await anyio.sleep(1.2)
            gate.open.set()
            assert await first.result(timeout=5) == 0
            assert await waiting.result(timeout=5) == 1
        info = await waiting.info()
    assert info.attempts == 1
    assert info.errors == ()
    assert gate.ran == [0, 1]


async def test_cancelling_a_job_claimed_ahead_settles_it_without_a_slot(
    backend: Backend,
) -> None:
    gate = Gate()
    watch = Watch(backend)
    app = make_app(backend, gate)
    step = app.handlers["step"]
    with anyio.fail_after(15):
        async with app.worker(**options(concurrency=1, prefetch=1)):
            first = await step.enqueue(Step(0))
            await gate.started(1).wait()
            doomed = await step.enqueue(Step(1))
            await watch.claimed(doomed.id)
            requested = await doomed.cancel()
            assert requested.cancel_requested
            # The first job still holds the only slot.
            with pytest.raises(JobCancelled):
                await doomed.result(timeout=5)
            assert gate.running == 1
            gate.open.set()
            assert await first.result(timeout=5) == 0
        info = await doomed.info()
    assert info.state is JobState.CANCELLED
    assert [error.message for error in info.errors] == ["cancelled by request before it started"]
    assert gate.ran == [0]
