"""Dependencies between jobs (``enqueue(after=...)``), on every store.

A child is stored ``waiting`` and released in the same atomic step that
finishes its last parent; a parent ending dead or cancelled ends the child the
same way (error kind ``dependency``) unless ``after_failure`` is ``"run"``.
"""

from __future__ import annotations

import time

import anyio
import pytest
from msgspec.structs import replace

from asyncq._records import ErrorKind, JobRecord, JobState, Outcome
from asyncq.backends.base import Backend, Retention
from asyncq.backends.postgres import PostgresBackend
from asyncq.backends.postgres.admin import prune_steps
from asyncq.exceptions import UnknownParent

from . import _records as r
from ._records import QUEUE

pytestmark = pytest.mark.anyio

BOUND = 20.0
LONG = 60.0
SHORT = 0.2


def child(*parents: JobRecord | str, after_failure: str = "dead", **kw: object) -> JobRecord:
    ids = tuple(p if isinstance(p, str) else p.id for p in parents)
    return replace(r.job(**kw), parents=ids, after_failure=after_failure)  # type: ignore[arg-type]


async def run_all(backend: Backend, outcome: str = "completed") -> list[str]:
    """Claim every ready job of the queue and settle it; return the ids, in claim order."""
    leases = await backend.claim([QUEUE], 1000, worker="w", lease_for=LONG)
    outcomes = []
    for lease in leases:
        if outcome == "completed":
            outcomes.append(r.completed(lease, result=lease.job.id.encode()[:8]))
        else:
            outcomes.append(Outcome(lease.job.id, lease.token, JobState.DEAD, error=r.error(lease)))
    assert all(await backend.settle(outcomes))
    return [lease.job.id for lease in leases]


async def state(backend: Backend, job_id: str) -> JobState:
    job = await backend.get(job_id)
    assert job is not None
    return job.state


async def test_chain_of_three(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        a = r.job()
        b = child(a)
        c = child(b)
        stored = await backend.enqueue([a, b, c])
        assert [s.state for s in stored] == [JobState.QUEUED, JobState.WAITING, JobState.WAITING]
        got_a = await backend.get(a.id)
        assert got_a is not None
        assert got_a.children == (b.id,)
        got_b = await backend.get(b.id)
        assert got_b is not None
        assert got_b.parents == (a.id,)
        assert got_b.children == (c.id,)
        assert await run_all(backend) == [a.id]
        assert await state(backend, b.id) is JobState.QUEUED
        assert await state(backend, c.id) is JobState.WAITING
        assert await run_all(backend) == [b.id]
        assert await run_all(backend) == [c.id]
        assert await state(backend, c.id) is JobState.COMPLETED
        stats = await backend.stats([QUEUE])
        assert stats[0].counts[JobState.WAITING] == 0
        assert stats[0].counts[JobState.COMPLETED] == 3


async def test_fan_in_of_100(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        parents = [r.job() for _ in range(100)]
        await backend.enqueue(parents)
        fan_in = child(*parents)
        (stored,) = await backend.enqueue([fan_in])
        assert stored.state is JobState.WAITING
        (counts,) = await backend.stats([QUEUE])
        assert counts.counts[JobState.WAITING] == 1
        leases = await backend.claim([QUEUE], 1000, worker="w", lease_for=LONG)
        assert len(leases) == 100
        # All but the last: the child still waits.
        assert all(await backend.settle([r.completed(lease) for lease in leases[:-1]]))
        assert await state(backend, fan_in.id) is JobState.WAITING
        assert all(await backend.settle([r.completed(leases[-1])]))
        assert await state(backend, fan_in.id) is JobState.QUEUED
        assert await run_all(backend) == [fan_in.id]


async def test_dead_parent_kills_child(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        a, other = r.job(), r.job()
        b = child(a, other)
        c = child(b)
        await backend.enqueue([a, other, b, c])
        leases = await backend.claim([QUEUE], 10, worker="w", lease_for=LONG)
        by_id = {lease.job.id: lease for lease in leases}
        dead = Outcome(a.id, by_id[a.id].token, JobState.DEAD, error=r.error(by_id[a.id]))
        # The child ends at once, without waiting for its other parent.
        assert await backend.settle([dead]) == [True]
        got = await backend.get(b.id)
        assert got is not None
        assert got.state is JobState.DEAD
        assert got.last_error is not None
        assert got.last_error.kind is ErrorKind.DEPENDENCY
        assert a.id in got.last_error.message
        assert got.finished_at is not None
        # ... and so does its own child.
        grandchild = await backend.get(c.id)
        assert grandchild is not None
        assert grandchild.state is JobState.DEAD
        assert grandchild.last_error is not None
        assert b.id in grandchild.last_error.message
        assert await backend.settle([r.completed(by_id[other.id])]) == [True]
        assert await backend.wait_finished(b.id) is not None


async def test_after_failure_run(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        a, ok = r.job(), r.job()
        b = child(a, ok, after_failure="run")
        await backend.enqueue([a, ok, b])
        leases = {
            lease.job.id: lease
            for lease in await backend.claim([QUEUE], 10, worker="w", lease_for=LONG)
        }
        lease = leases[a.id]
        dead = Outcome(a.id, lease.token, JobState.DEAD, error=r.error(lease))
        assert await backend.settle([dead]) == [True]
        assert await state(backend, b.id) is JobState.WAITING
        assert await backend.settle([r.completed(leases[ok.id])]) == [True]
        assert await state(backend, b.id) is JobState.QUEUED
        got = await backend.get(b.id)
        assert got is not None
        assert got.after_failure == "run"
        assert await run_all(backend) == [b.id]


async def test_cancel_cascades(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        a = r.job(delay=60)
        b = child(a)
        c = child(b)
        runs = child(a, after_failure="run")
        await backend.enqueue([a, b, c, runs])
        cancelled = await backend.cancel(a.id)
        assert cancelled is not None
        assert cancelled.state is JobState.CANCELLED
        for job_id in (b.id, c.id):
            got = await backend.get(job_id)
            assert got is not None
            assert got.state is JobState.CANCELLED
            assert got.last_error is not None
            assert got.last_error.kind is ErrorKind.DEPENDENCY
        assert await state(backend, runs.id) is JobState.QUEUED


async def test_cancel_waiting_child(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        a = r.job()
        b = child(a)
        await backend.enqueue([a, b])
        got = await backend.cancel(b.id)
        assert got is not None
        assert got.state is JobState.CANCELLED
        assert await run_all(backend) == [a.id]
        assert await state(backend, b.id) is JobState.CANCELLED
        assert await backend.claim([QUEUE], 10, worker="w", lease_for=LONG) == []


async def test_unknown_parent_refused(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        plain = r.job()
        orphan = child("no-such-job")
        with pytest.raises(UnknownParent) as caught:
            await backend.enqueue([plain, orphan])
        assert caught.value.parent_id == "no-such-job"
        assert caught.value.queue == QUEUE
        assert "no-such-job" in str(caught.value)
        # Nothing of the batch was stored.
        assert await backend.get(plain.id) is None
        assert await backend.get(orphan.id) is None


async def test_parent_in_another_queue_refused(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        elsewhere = r.job(queue="other")
        await backend.enqueue([elsewhere])
        with pytest.raises(UnknownParent):
            await backend.enqueue([child(elsewhere)])


async def test_atomic_batch_with_invalid_node(backend: Backend) -> None:
    """A flow (one batch, parents first) with one bad node stores nothing."""
    with anyio.fail_after(BOUND):
        a = r.job()
        b = child(a)
        bad = child(b, "missing-parent")
        with pytest.raises(UnknownParent):
            await backend.enqueue([a, b, bad])
        for job in (a, b, bad):
            assert await backend.get(job.id) is None
        (stats,) = await backend.stats([QUEUE]) or [None]
        if stats is not None:
            assert sum(stats.counts.values()) == 0


async def test_finished_parent_counts_at_once(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        a = r.job()
        await backend.enqueue([a])
        assert await run_all(backend) == [a.id]
        (b,) = await backend.enqueue([child(a)])
        assert b.state is JobState.QUEUED
        got = await backend.get(a.id)
        assert got is not None
        assert got.children == (b.id,)
        assert await run_all(backend) == [b.id]
        # A dead parent, finished before: the child is dead at once.
        d = r.job()
        await backend.enqueue([d])
        assert await run_all(backend, "dead") == [d.id]
        (e,) = await backend.enqueue([child(d)])
        assert e.state is JobState.DEAD
        assert e.last_error is not None
        assert e.last_error.kind is ErrorKind.DEPENDENCY


async def test_delayed_child_is_scheduled_when_released(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        a = r.job()
        b = child(a, delay=60)
        await backend.enqueue([a, b])
        await run_all(backend)
        assert await state(backend, b.id) is JobState.SCHEDULED


async def test_recovered_parent_releases_child(backend: Backend) -> None:
    """A parent whose worker died runs again once recovered; then the child is released."""
    with anyio.fail_after(BOUND):
        a = replace(r.job(), max_attempts=2)
        b = child(a)
        await backend.enqueue([a, b])
        (lease,) = await backend.claim([QUEUE], 10, worker="w", lease_for=SHORT)
        await anyio.sleep(SHORT + 0.1)  # the lease must lapse: time is the point
        assert await backend.recover() == 1
        assert await state(backend, b.id) is JobState.WAITING
        assert await run_all(backend) == [a.id]
        assert await state(backend, b.id) is JobState.QUEUED
        del lease


async def test_recovered_dead_parent_kills_child(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        a = r.job()
        b = child(a)
        await backend.enqueue([a, b])
        await backend.claim([QUEUE], 10, worker="w", lease_for=SHORT)
        await anyio.sleep(SHORT + 0.1)
        assert await backend.recover() == 1
        got = await backend.get(b.id)
        assert got is not None
        assert got.state is JobState.DEAD
        assert got.last_error is not None
        assert got.last_error.kind is ErrorKind.DEPENDENCY


def old_at_once(backend: Backend) -> None:
    """Make every finished job old at once for ``backend.prune()`` (its ``Retention``).

    The stores take their retention when made; the test changes it afterwards,
    where each keeps it (PostgreSQL also keeps the statements it makes of it).
    """
    retention = Retention(completed=0.0, dead=0.0, cancelled=0.0)
    backend._retention = retention  # type: ignore[attr-defined]
    if isinstance(backend, PostgresBackend):
        backend._prune_steps = prune_steps(backend._sql, retention)


async def test_waiting_child_keeps_parent_from_prune(backend: Backend) -> None:
    old_at_once(backend)
    with anyio.fail_after(BOUND):
        a = r.job()
        other = r.job(delay=60)
        b = child(a, other)
        plain = r.job()
        await backend.enqueue([a, other, b, plain])
        assert sorted(await run_all(backend)) == sorted([a.id, plain.id])
        await anyio.sleep(0.05)  # finished strictly before the prune's now
        await backend.prune()
        assert await backend.get(plain.id) is None
        kept = await backend.get(a.id)
        assert kept is not None
        assert kept.result is not None
        await backend.cancel(other.id)
        assert await state(backend, b.id) is JobState.CANCELLED
        await anyio.sleep(0.05)
        await backend.prune()
        assert await backend.get(a.id) is None


async def test_plain_records_unchanged(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        plain = r.job()
        (stored,) = await backend.enqueue([plain])
        assert stored.parents == ()
        assert stored.children == ()
        assert stored.after_failure == "dead"
        assert time.time() >= stored.enqueued_at
