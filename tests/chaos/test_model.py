"""Every backend against the memory backend as the model, driven by a Hypothesis state machine.

The machine enqueues, claims, settles (completed, failed with a retry due at
once, dead, handed back, or with a stale token), heartbeats, cancels, recovers
lapsed leases and retries dead jobs, through the ``Backend`` protocol, on the
store under test and on a ``MemoryBackend`` alike; after every step each job
must be in the same state, with the same attempts, the same errors (by kind)
and the same cancel request on both, and both must count the same.

Leases lapse two ways. Memory and SQLite take a clock: both sides share a fake
one that ``recover`` moves on. Redis and PostgreSQL use their own: there the
machine claims some jobs with a lease of a millisecond, and ``recover`` waits
for that millisecond to pass (on both sides, by the same real clock); the
other leases last a minute and never lapse during an example.

Hypothesis drives the machine from a thread; each step runs its coroutines on
an anyio event loop (asyncio: asyncpg and redis.asyncio need it) through a
blocking portal kept for the whole test.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from asyncq._records import new_job_id
from asyncq.backends.base import Backend, ErrorInfo, ErrorKind, JobRecord, JobState, Lease, Outcome
from asyncq.backends.memory import MemoryBackend
from asyncq.backends.sqlite import SQLiteBackend
from conftest import make_backend

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

T = TypeVar("T")
Cleanup = Callable[[], Coroutine[Any, Any, None]]
QUEUE = "q"
LONG = 60.0
SHORT = 0.001
SETTINGS = settings(
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


#: How an attempt may end: completed, failed (a retry due at once), dead, handed back.
OUTCOMES = (JobState.COMPLETED, JobState.FAILED, JobState.DEAD, JobState.QUEUED)


class FakeClock:
    """Epoch seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Target:
    """How to make the store under test, per example."""

    kind: str
    make: Callable[[FakeClock | None], tuple[Backend, Cleanup | None]]
    fake_clock: bool


class Machine(RuleBasedStateMachine):
    """The store under test (``real``) and the model, stepped together."""

    portal: BlockingPortal
    target: Target

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock() if self.target.fake_clock else None
        self.model = MemoryBackend(clock=self.clock or time.time)
        self.real, self._cleanup = self.target.make(self.clock)
        self.call(self.real.open)
        self.call(self.model.open)
        self.ids: list[str] = []
        self.held: dict[str, Lease] = {}  # job id -> the real side's lease
        self.model_held: dict[str, Lease] = {}
        self.stale: list[tuple[Lease, Lease]] = []
        self.short_until = 0.0  # when the last short lease lapses (real clock)
        self._priority = itertools.count()

    def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        return self.portal.call(functools.partial(fn, *args, **kwargs))

    def both(self, method: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        real = self.call(getattr(self.real, method), *args, **kwargs)
        model = self.call(getattr(self.model, method), *args, **kwargs)
        return real, model

    def now(self) -> float:
        return self.clock() if self.clock is not None else time.time()

    def teardown(self) -> None:
        self.call(self.real.close)
        if self._cleanup is not None:
            self.call(self._cleanup)

    # -- rules ---------------------------------------------------------------------

    @initialize(count=st.integers(2, 4), max_attempts=st.integers(1, 3), boost=st.integers(-2, 2))
    def start(self, count: int, max_attempts: int, boost: int) -> None:
        self.enqueue(count, max_attempts, boost)

    @precondition(lambda self: len(self.ids) < 12)
    @rule(count=st.integers(1, 3), max_attempts=st.integers(1, 3), boost=st.integers(-2, 2))
    def enqueue(self, count: int, max_attempts: int, boost: int) -> None:
        now = self.now()
        jobs = [
            JobRecord(
                id=new_job_id(),
                name="job",
                queue=QUEUE,
                payload=b"\x90",
                max_attempts=max_attempts,
                # Distinct priorities: both sides must claim the same jobs in
                # the same order, whatever their clocks make of scheduled_at.
                priority=boost * 1000 - next(self._priority),
                enqueued_at=now,
                scheduled_at=now,
            )
            for _ in range(count)
        ]
        real, model = self.both("enqueue", jobs)
        assert [j.id for j in real] == [j.id for j in model] == [j.id for j in jobs]
        self.ids += [j.id for j in jobs]

    @precondition(lambda self: bool(self.ids))
    @rule(
        limit=st.integers(1, 3),
        short=st.booleans(),
        then=st.none() | st.sampled_from(OUTCOMES),
    )
    def claim(self, limit: int, short: bool, then: JobState | None) -> None:
        """Claim up to ``limit`` jobs; with ``then``, settle them all so at once (one turn)."""
        lease_for = SHORT if short else LONG
        real, model = self.both("claim", [QUEUE], limit, worker="w", lease_for=lease_for)
        assert [lease.job.id for lease in real] == [lease.job.id for lease in model]
        for mine, theirs in zip(real, model, strict=True):
            assert mine.job.attempts == theirs.job.attempts
            self.held[mine.job.id] = mine
            self.model_held[theirs.job.id] = theirs
        if short and real:
            self.short_until = time.time() + SHORT
        if then is not None and real:
            mine = [self._outcome(self.held.pop(lease.job.id), then) for lease in real]
            theirs = [self._outcome(self.model_held.pop(lease.job.id), then) for lease in model]
            applied = self.call(self.real.settle, mine)
            assert applied == self.call(self.model.settle, theirs) == [True] * len(real)
            self.stale += zip(real, model, strict=True)

    @precondition(lambda self: bool(self.held or self.stale))
    @rule(data=st.data(), state=st.sampled_from(list(OUTCOMES)), stale=st.booleans())
    def settle(self, data: st.DataObject, state: JobState, stale: bool) -> None:
        """Settle a held lease, or (``stale``) one that no longer holds its job."""
        held = bool(self.held) and not (stale and self.stale)
        if not held:
            # A worker that lost its lease reports late: refused on both sides.
            lease, model_lease = data.draw(st.sampled_from(self.stale))
        else:
            job_id = data.draw(st.sampled_from(sorted(self.held)))
            lease, model_lease = self.held.pop(job_id), self.model_held.pop(job_id)
            self.stale.append((lease, model_lease))
        real = self.call(self.real.settle, [self._outcome(lease, state)])
        model = self.call(self.model.settle, [self._outcome(model_lease, state)])
        assert real == model == [held], (state, held, real, model)

    @precondition(lambda self: bool(self.held))
    @rule()
    def heartbeat(self) -> None:
        ids = sorted(self.held)
        real = self.call(self.real.heartbeat, [self.held[i] for i in ids], lease_for=LONG)
        model = self.call(self.model.heartbeat, [self.model_held[i] for i in ids], lease_for=LONG)
        assert real == model
        for job_id in real.lost:
            self.stale.append((self.held.pop(job_id), self.model_held.pop(job_id)))

    @precondition(lambda self: bool(self.held))
    @rule()
    def recover(self) -> None:
        if self.clock is not None:
            self.clock.now += 1.0  # past every short lease, far from the long ones
        else:
            # The real clock must pass the short leases' end, on both sides.
            while time.time() <= self.short_until:
                time.sleep(SHORT)
        real, model = self.both("recover")
        assert real == model
        for job_id in list(self.held):
            if self.held[job_id].job.id not in self._active():
                self.stale.append((self.held.pop(job_id), self.model_held.pop(job_id)))

    @precondition(lambda self: bool(self.ids))
    @rule(data=st.data(), retry=st.booleans())
    def operate(self, data: st.DataObject, retry: bool) -> None:
        """What an operator does: retry the dead jobs, or cancel a job."""
        if retry:
            real_ids, model_ids = self.both("retry_dead")
            assert sorted(real_ids) == sorted(model_ids)
            return
        job_id = data.draw(st.sampled_from(self.ids))
        real, model = self.both("cancel", job_id)
        assert (real is None) == (model is None)
        if real is not None:
            assert real.state == model.state
            assert real.cancel_requested == model.cancel_requested

    # -- checks --------------------------------------------------------------------

    @invariant()
    def same_jobs(self) -> None:
        for job_id in self.ids:
            real, model = self.both("get", job_id)
            assert _summary(real) == _summary(model), job_id
            if job_id in self.held:
                # A lease the machine holds holds its job.
                assert real is not None, job_id
                assert real.state is JobState.ACTIVE, job_id

    @invariant()
    def same_counts(self) -> None:
        real, model = self.both("stats", [QUEUE])
        assert [_counts(s.counts) for s in real] == [_counts(s.counts) for s in model]
        # Every job counted once, in one state.
        assert sum(n for s in real for n in s.counts.values()) == len(self.ids)

    # -- helpers -------------------------------------------------------------------

    def _active(self) -> set[str]:
        jobs = self.call(self.model.list_jobs, state=JobState.ACTIVE, limit=1000)
        return {job.id for job in jobs}

    def _outcome(self, lease: Lease, state: JobState) -> Outcome:
        if state is JobState.COMPLETED:
            return Outcome(lease.job.id, lease.token, state, result=b"\xc0")
        if state is JobState.QUEUED:
            return Outcome(lease.job.id, lease.token, state)
        error = ErrorInfo(ErrorKind.ERROR, "boom", lease.job.attempts, self.now(), "ValueError")
        # A retry due already (in the past on every clock): ready at once on both sides.
        retry_at = self.now() - 60 if state is JobState.FAILED else None
        return Outcome(lease.job.id, lease.token, state, error=error, retry_at=retry_at)


#: A due retry may be kept ``failed`` until claimed, or promoted to ``queued``
#: (see ``asyncq.backends.base``): every retry here is due at once, so both read "ready".
READY = {JobState.QUEUED: "ready", JobState.FAILED: "ready", JobState.SCHEDULED: "ready"}


def _counts(counts: dict[JobState, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for state, n in counts.items():
        name = READY.get(state, state.value)
        out[name] = out.get(name, 0) + n
    return out


def _summary(job: JobRecord | None) -> tuple[Any, ...] | None:
    """What must be equal on both sides: the state (due ones as "ready"), attempts, errors."""
    if job is None:
        return None
    return (
        READY.get(job.state, job.state.value),
        job.attempts,
        tuple(e.kind for e in job.errors),
        job.cancel_requested,
        job.result,
    )


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal(backend="asyncio") as portal:
        yield portal


@pytest.mark.parametrize(
    "kind",
    [
        "memory",
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
@pytest.mark.timeout(120)
def test_backend_matches_the_model(
    kind: str, portal: BlockingPortal, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    files = itertools.count()

    def make(clock: FakeClock | None) -> tuple[Backend, Any]:
        if kind == "memory":
            assert clock is not None
            return MemoryBackend(clock=clock), None
        if kind == "sqlite":
            assert clock is not None
            return SQLiteBackend(tmp_path / f"jobs{next(files)}.db", clock=clock), None
        backend, cleanup = make_backend(request, kind, tmp_path)
        return backend, cleanup

    class Run(Machine):
        pass

    Run.portal = portal
    Run.target = Target(kind, make, fake_clock=kind in ("memory", "sqlite"))
    run_state_machine_as_test(Run, settings=SETTINGS)
