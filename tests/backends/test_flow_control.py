"""Flow control in the store (``asyncq.backends._limits``): every backend, through ``backend``.

A job with limits is claimed only while its limits let it start; a job held
back stays pending without using an attempt, and the jobs behind it flow.
"""

from __future__ import annotations

import itertools
import time

import anyio
import pytest
from msgspec.structs import replace

from asyncq._records import Breaker, ErrorKind, Gate, JobRecord, JobState, Lease, Outcome
from asyncq.backends.base import Backend

from . import _records as r

pytestmark = pytest.mark.anyio

BOUND = 20.0
LONG = 60.0


def limited(*gates: Gate, priority: int = 0) -> JobRecord:
    return replace(r.job(max_attempts=3, priority=priority), limits=gates)


def conc(n: int, key: str | None = None) -> Gate:
    return Gate(name="smtp" if key is None else "tenant", key=key, concurrency=n)


async def claim(backend: Backend, n: int = 10) -> list[Lease]:
    return await backend.claim([r.QUEUE], n, worker="w", lease_for=LONG)


async def test_concurrency_holds_jobs_back_while_others_flow(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        held = [limited(conc(2)) for _ in range(5)]
        plain = [r.job() for _ in range(3)]
        await backend.enqueue([*held, *plain])
        leases = await claim(backend)
        got = {lease.job.id for lease in leases}
        # two of the limited ones, and every plain one behind the three held back
        assert len(got & {j.id for j in held}) == 2
        assert {j.id for j in plain} <= got
        assert await claim(backend) == []
        waiting = [await backend.get(j.id) for j in held if j.id not in got]
        assert all(w is not None and w.state is JobState.QUEUED for w in waiting)
        assert all(w is not None and w.attempts == 0 and w.held_by == "smtp" for w in waiting)
        (state,) = await backend.limit_states()
        assert (state.slot, state.running, state.held, state.concurrency) == ("smtp", 2, 3, 2)
        # each end of a running limited job lets exactly one held job in
        first = next(lease for lease in leases if lease.job.id in {j.id for j in held})
        assert await backend.settle([r.completed(first)]) == [True]
        again = await claim(backend)
        assert len(again) == 1
        assert again[0].job.attempts == 1
        assert again[0].job.held_by is None
        assert await claim(backend) == []


async def test_a_batch_of_ends_lets_as_many_jobs_in(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        await backend.enqueue([limited(conc(3)) for _ in range(8)])
        leases = await claim(backend)
        assert len(leases) == 3
        assert await backend.settle([r.completed(lease) for lease in leases[:2]]) == [True] * 2
        assert len(await claim(backend)) == 2
        (state,) = await backend.limit_states()
        assert (state.running, state.held) == (3, 3)


async def test_a_claim_applies_each_jobs_numbers_in_claim_order(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        # the limit's numbers changed between enqueues: each job brings its own
        older = [limited(conc(1), priority=1) for _ in range(2)]
        newer = [limited(conc(3)) for _ in range(3)]
        await backend.enqueue([*older, *newer])
        got = {lease.job.id for lease in await claim(backend)}
        # the first older one starts (1 of 1), the second waits; then 3 at most run
        assert got == {older[0].id, newer[0].id, newer[1].id}
        (state,) = await backend.limit_states()
        assert (state.running, state.concurrency, state.held) == (3, 3, 2)


async def test_every_way_out_of_active_frees_the_slot(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        jobs = [limited(conc(1)) for _ in range(5)]
        await backend.enqueue(jobs)
        ends = [
            r.completed,
            lambda lease: r.failed(lease, retry_at=time.time() + LONG),
            r.dead,
            r.handed_back,
        ]
        for end in ends:
            (lease,) = await claim(backend)
            assert await claim(backend) == []
            assert await backend.settle([end(lease)]) == [True]
        (state,) = await backend.limit_states()
        assert state.running == 0


async def test_a_lapsed_lease_frees_the_slot(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        await backend.enqueue([limited(conc(1)) for _ in range(2)])
        (lease,) = await backend.claim([r.QUEUE], 5, worker="w", lease_for=0.2)
        assert await claim(backend) == []
        await anyio.sleep(0.4)  # the lease must lapse: time is the point here
        assert await backend.recover() == 1
        leases = await claim(backend)
        assert len(leases) == 1
        assert leases[0].job.id != lease.job.id or leases[0].job.attempts == 2


async def test_keyed_concurrency_holds_per_key(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        a = [limited(conc(2, "a")) for _ in range(4)]
        b = [limited(conc(2, "b")) for _ in range(4)]
        await backend.enqueue([*a, *b])
        leases = await claim(backend)
        keys = sorted(lease.job.limits[0].key or "" for lease in leases)
        assert keys == ["a", "a", "b", "b"]
        states = {s.slot: s for s in await backend.limit_states()}
        assert states["tenant[a]"].running == 2
        assert states["tenant[b]"].held == 2


async def test_a_job_held_on_one_slot_passes_room_on_another(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        smtp = Gate(name="smtp", concurrency=1)
        tenant = Gate(name="tenant", key="a", concurrency=1)
        first = limited(smtp, tenant)
        await backend.enqueue([first])
        (running,) = await claim(backend)
        blocked = limited(smtp, tenant)
        other_smtp = limited(smtp)
        await backend.enqueue([blocked, other_smtp])
        assert await claim(backend) == []
        assert await backend.settle([r.completed(running)]) == [True]
        # either may go next, but one does, and then the smtp slot is full again
        leases = await claim(backend)
        assert len(leases) == 1


async def test_rate_limit_books_starts_ahead(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        gate = Gate(name="api", rate=10.0, per=1.0)
        jobs = [limited(gate) for _ in range(5)]
        await backend.enqueue(jobs)
        leases = await claim(backend)
        assert len(leases) == 1
        rest = [await backend.get(j.id) for j in jobs if j.id != leases[0].job.id]
        assert all(j is not None and j.attempts == 0 and j.rate_paid for j in rest)
        times = sorted(j.scheduled_at for j in rest if j is not None)
        # one token every 0.1 s, booked in claim order
        for before, after in itertools.pairwise(times):
            assert after - before == pytest.approx(0.1, abs=0.02)


async def held_everywhere(backend: Backend, held: list[str]) -> None:
    """The jobs ``held`` read as queued wherever a store shows a state, never as scheduled."""
    for job_id in held:
        job = await backend.get(job_id)
        assert job is not None
        assert job.state is JobState.QUEUED, job
    queued = {j.id for j in await backend.list_jobs(state=JobState.QUEUED, queue=r.QUEUE)}
    assert set(held) <= queued
    scheduled = await backend.list_jobs(state=JobState.SCHEDULED, queue=r.QUEUE)
    assert not set(held) & {j.id for j in scheduled}
    (stats,) = await backend.stats([r.QUEUE])
    assert stats.counts[JobState.QUEUED] >= len(held)
    assert stats.counts[JobState.SCHEDULED] == len(scheduled)


async def test_a_job_held_by_a_rate_stays_queued_and_says_until_when(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        gate = Gate(name="api", rate=2.0, per=1.0)
        jobs = [limited(gate) for _ in range(3)]
        await backend.enqueue(jobs)
        before = time.time()
        (lease,) = await claim(backend)
        rest = [j.id for j in jobs if j.id != lease.job.id]
        await held_everywhere(backend, rest)
        (stats,) = await backend.stats([r.QUEUE])
        assert (stats.counts[JobState.QUEUED], stats.counts[JobState.SCHEDULED]) == (2, 0)
        found = [await backend.get(job_id) for job_id in rest]
        held = sorted((j for j in found if j is not None), key=lambda j: j.scheduled_at)
        assert [j.hold for j in held] == ["rate:api", "rate:api"]
        assert [j.held_until for j in held] == [j.scheduled_at for j in held]
        assert held[0].held_until == pytest.approx(before + 0.5, abs=0.3)
        assert all(j.attempts == 0 and j.held_by is None for j in held)
        # once due, it is claimed as it was booked, and holds no more
        await anyio.sleep(max(0.0, (held[0].held_until or 0.0) - time.time()) + 0.05)
        (next_one,) = await claim(backend)
        assert next_one.job.id == held[0].id
        assert (next_one.job.held_until, next_one.job.hold) == (None, None)
        await held_everywhere(backend, [held[1].id])


async def test_a_job_held_by_an_open_circuit_stays_queued(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        api = Breaker(name="payments", failures=1, within=60.0, reset_after=30.0)
        first, second = behind(api), behind(api)
        await backend.enqueue([first])
        (lease,) = await claim(backend)
        await backend.settle([failed_now(lease, ErrorKind.CIRCUIT_OPEN)])
        (circuit,) = await backend.circuit_states()
        assert circuit.state == "open"
        await backend.enqueue([second])
        assert await claim(backend) == []
        await held_everywhere(backend, [first.id, second.id])
        for job_id in (first.id, second.id):
            job = await backend.get(job_id)
            assert job is not None
            assert job.hold == "circuit:payments"
            assert circuit.opened_at is not None
            assert job.held_until == pytest.approx(circuit.opened_at + 30.0)
        (stats,) = await backend.stats([r.QUEUE])
        assert (stats.counts[JobState.QUEUED], stats.counts[JobState.SCHEDULED]) == (2, 0)
        # a cancel of a held job ends it, as of any queued one
        cancelled = await backend.cancel(second.id)
        assert cancelled is not None
        assert cancelled.state is JobState.CANCELLED
        ended = await backend.get(second.id)
        assert ended is not None
        assert (ended.held_until, ended.hold) == (None, None)
        (stats,) = await backend.stats([r.QUEUE])
        assert stats.counts[JobState.QUEUED] == 1


async def test_rate_limit_measured_over_a_short_window(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        gate = Gate(name="api", rate=20.0, per=1.0)
        await backend.enqueue([limited(gate) for _ in range(60)])
        started: list[float] = []
        begin = time.monotonic()
        while time.monotonic() - begin < 1.5:
            leases = await claim(backend)
            now = time.monotonic()
            started.extend(now for _ in leases)
            if leases:
                await backend.settle([r.completed(lease) for lease in leases])
            await backend.wait_for_work([r.QUEUE], 0.05)
        # 1 at once, then 20 a second: about 31 in 1.5 s
        assert 25 <= len(started) <= 33


async def test_prune_forgets_the_counters_of_keys_gone_idle(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        done, busy, waits = limited(conc(1, "a")), limited(conc(1, "b")), limited(conc(1, "b"))
        unkeyed = limited(conc(5))
        rated = limited(Gate(name="api", key="x", rate=20.0))
        await backend.enqueue([done, busy, waits, unkeyed, rated])
        leases = {lease.job.id: lease for lease in await claim(backend)}
        assert set(leases) == {done.id, busy.id, unkeyed.id, rated.id}
        ends = [r.completed(leases[job.id]) for job in (done, unkeyed, rated)]
        assert await backend.settle(ends) == [True] * 3
        await anyio.sleep(0.1)  # the rate's bucket is full again (a token each 0.05 s)
        await backend.prune()
        states = {state.slot: state for state in await backend.limit_states()}
        # idle and full: gone; running or with a job set aside: kept; unkeyed: kept
        assert set(states) == {"tenant[b]", "smtp"}
        assert (states["tenant[b]"].running, states["tenant[b]"].held) == (1, 1)
        # the next job of a forgotten key makes its counter again, fresh
        again = limited(conc(1, "a"))
        await backend.enqueue([again])
        assert [lease.job.id for lease in await claim(backend)] == [again.id]
        states = {state.slot: state for state in await backend.limit_states()}
        assert states["tenant[a]"].running == 1


# -- circuit breakers -------------------------------------------------------------------


def behind(breaker: Breaker) -> JobRecord:
    return replace(r.job(max_attempts=5), circuit=breaker)


def failed_now(lease: Lease, kind: ErrorKind = ErrorKind.ERROR) -> Outcome:
    return Outcome(
        job_id=lease.job.id,
        token=lease.token,
        state=JobState.FAILED,
        error=r.error(lease, kind),
        retry_at=time.time(),
    )


async def states(backend: Backend) -> dict[str, str]:
    return {c.name: c.state for c in await backend.circuit_states()}


async def test_a_circuit_opens_holds_probes_and_closes(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        api = Breaker(name="payments", failures=2, within=60.0, reset_after=0.5)
        await backend.enqueue([behind(api) for _ in range(2)])
        leases = await claim(backend)
        assert len(leases) == 2
        assert await backend.settle([failed_now(leases[0])]) == [True]
        assert await states(backend) == {"payments": "closed"}
        assert await backend.settle([failed_now(leases[1])]) == [True]
        assert await states(backend) == {"payments": "open"}
        # held: not claimed, no attempt used, waiting for the half-open time
        assert await claim(backend) == []
        for lease in leases:
            job = await backend.get(lease.job.id)
            assert job is not None
            assert job.attempts == 1
            assert job.state is not JobState.ACTIVE
        await anyio.sleep(0.6)  # the circuit's reset_after: time is the point here
        probes = await claim(backend)
        assert len(probes) == 1
        assert await states(backend) == {"payments": "half_open"}
        assert await claim(backend) == []  # one probe at a time
        assert await backend.settle([r.completed(probes[0])]) == [True]
        assert await states(backend) == {"payments": "closed"}


async def test_a_failed_probe_opens_the_circuit_again(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        api = Breaker(name="payments", failures=1, within=60.0, reset_after=0.3)
        await backend.enqueue([behind(api)])
        (lease,) = await claim(backend)
        await backend.settle([failed_now(lease)])
        assert await states(backend) == {"payments": "open"}
        await anyio.sleep(0.4)  # the circuit's reset_after
        (probe,) = await claim(backend)
        assert probe.job.attempts == 2
        await backend.settle([failed_now(probe)])
        assert await states(backend) == {"payments": "open"}
        assert await claim(backend) == []


async def test_circuit_open_raised_opens_at_once(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        api = Breaker(name="payments", failures=50, within=60.0, reset_after=60.0)
        await backend.enqueue([behind(api) for _ in range(3)])
        (lease,) = await claim(backend, 1)
        await backend.settle([failed_now(lease, ErrorKind.CIRCUIT_OPEN)])
        (state,) = await backend.circuit_states()
        assert state.state == "open"
        assert state.opened_at is not None
        assert await claim(backend) == []
        # an operator closes it; the jobs held run when they were scheduled for
        (closed,) = await backend.set_circuit("payments", open_=False)
        assert closed.state == "closed"
        (opened,) = await backend.set_circuit("payments", open_=True)
        assert opened.state == "open"
