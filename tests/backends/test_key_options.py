"""Throttled and debounced keys on every store: ``key_ttl`` and ``debounce`` (``JobRecord``).

A job with a ``key_ttl`` holds its key for that long after it finished
(completed, dead or cancelled); a job enqueued with ``debounce`` replaces the
pending job holding its key, or else is stored delayed and takes the key over.
Times are short real delays, as in ``test_conformance``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import pytest
from msgspec.structs import replace

from asyncq._events import EventKind
from asyncq._records import JobRecord, JobState, Lease, Outcome
from asyncq.backends.base import EVENTS, Backend, stored_as_given

from . import _records as r
from .test_conformance import BOUND, TOL, claim, finished, get, near, sleep_until

pytestmark = pytest.mark.anyio

#: A key period the tests outlive.
PERIOD = 0.3


def throttled(key: str = "k", key_ttl: float = PERIOD, **options: object) -> JobRecord:
    """A job holding ``key`` for ``key_ttl`` seconds after it finishes."""
    job = r.job(key=key, **options)  # type: ignore[arg-type]
    return replace(job, key_ttl=key_ttl)


def debounced(key: str = "k", debounce: float = 5.0, payload: bytes = r.PAYLOAD) -> JobRecord:
    """A debounced enqueue of ``payload`` under ``key``, as ``Handler`` builds it."""
    job = r.job(key=key, delay=debounce, payload=payload)
    return replace(job, debounce=debounce, meta={"payload": payload.hex()})


ENDINGS: dict[str, Callable[[Lease], Outcome]] = {
    "completed": r.completed,
    "dead": r.dead,
    "cancelled": r.cancelled,
}


# -- key_ttl -------------------------------------------------------------------------


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_key_ttl_holds_the_key_after_the_job_finished_then_frees_it(
    backend: Backend, ending: str
) -> None:
    with anyio.fail_after(BOUND):
        done = await finished(backend, throttled(), ENDINGS[ending])
        assert done.state.value == ending
        assert done.key_ttl == PERIOD
        again = throttled()
        [held] = await backend.enqueue([again])
        assert held.id == done.id
        assert not stored_as_given(again, held)
        assert held.state.value == ending

        assert done.finished_at is not None
        await sleep_until(done.finished_at + PERIOD + 0.1)
        fresh = throttled()
        [stored] = await backend.enqueue([fresh])
        assert stored_as_given(fresh, stored)
        assert stored.state is JobState.QUEUED
        # The finished job is still there: only its key was let go.
        assert (await get(backend, done.id)).state.value == ending


async def test_key_ttl_of_a_job_cancelled_before_it_ran(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        [pending] = await backend.enqueue([throttled()])
        cancelled = await backend.cancel(pending.id)
        assert cancelled is not None
        assert cancelled.state is JobState.CANCELLED
        [held] = await backend.enqueue([throttled()])
        assert held.id == pending.id


async def test_without_key_ttl_a_dead_job_frees_its_key_at_once(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        await finished(backend, r.job(key="plain"), r.dead)
        fresh = r.job(key="plain")
        [stored] = await backend.enqueue([fresh])
        assert stored_as_given(fresh, stored)


async def test_removing_a_finished_job_frees_its_held_key(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        done = await finished(backend, throttled(key_ttl=60.0), r.completed)
        assert await backend.remove([done.id]) == [JobState.COMPLETED]
        fresh = throttled(key_ttl=60.0)
        [stored] = await backend.enqueue([fresh])
        assert stored_as_given(fresh, stored)


async def test_purging_a_finished_job_frees_its_held_key(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        done = await finished(backend, throttled(key_ttl=60.0), r.dead)
        purged = await backend.purge(states=[JobState.DEAD], older_than=time.time() + 60)
        assert purged == 1
        fresh = throttled(key_ttl=60.0)
        [stored] = await backend.enqueue([fresh])
        assert stored_as_given(fresh, stored)
        assert await backend.get(done.id) is None


async def test_a_dead_job_holding_its_key_can_be_retried(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        dead = await finished(backend, throttled(key_ttl=60.0), r.dead)
        assert await backend.retry_dead([dead.id]) == [dead.id]
        [held] = await backend.enqueue([throttled(key_ttl=60.0)])
        assert held.id == dead.id
        assert held.state is JobState.QUEUED


# -- debounce ------------------------------------------------------------------------


async def test_debounce_replaces_the_pending_job_and_pushes_its_run_time(
    backend: Backend,
) -> None:
    with anyio.fail_after(BOUND):
        first = debounced(payload=b"\x01", debounce=0.5)
        [stored] = await backend.enqueue([first])
        assert stored_as_given(first, stored)
        assert stored.state is JobState.SCHEDULED
        assert stored.debounce is None  # an instruction, never stored

        second = debounced(payload=b"\x02", debounce=5.0)
        [replaced] = await backend.enqueue([second])
        assert replaced.id == first.id
        assert not stored_as_given(second, replaced)
        assert replaced.payload == b"\x02"
        assert replaced.meta == {"payload": "02"}
        assert replaced.state is JobState.SCHEDULED
        assert replaced.key == "k"
        assert replaced.scheduled_at == pytest.approx(second.scheduled_at, abs=1e-3)

        kept = await get(backend, first.id)
        assert kept.payload == b"\x02"
        assert kept.meta == {"payload": "02"}
        assert kept.scheduled_at == pytest.approx(second.scheduled_at, abs=1e-3)
        assert await backend.get(second.id) is None
        # Not due before the newer run time: the first one's has passed.
        await sleep_until(first.scheduled_at + 0.1)
        assert await claim(backend) == {}
        [stats] = await backend.stats([r.QUEUE])
        assert stats.counts[JobState.SCHEDULED] == 1


async def test_a_burst_of_debounced_enqueues_runs_once_with_the_last_payload(
    backend: Backend,
) -> None:
    with anyio.fail_after(BOUND):
        burst = [debounced(payload=bytes([n]), debounce=0.3) for n in range(5)]
        ids = set()
        for job in burst:
            [stored] = await backend.enqueue([job])
            ids.add(stored.id)
        assert ids == {burst[0].id}
        await sleep_until(burst[-1].scheduled_at + 0.1)
        leases = await claim(backend)
        assert list(leases) == [burst[0].id]
        assert leases[burst[0].id].job.payload == bytes([4])


async def test_debounce_in_one_batch_behaves_as_in_order(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        one, two = debounced(payload=b"\x01"), debounced(payload=b"\x02")
        plain = r.job(key="k")
        stored = await backend.enqueue([one, two, plain])
        assert [s.id for s in stored] == [one.id, one.id, one.id]
        assert (await get(backend, one.id)).payload == b"\x02"


async def test_debounce_after_the_job_was_claimed_stores_a_new_job(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        [first] = await backend.enqueue([r.job(key="k")])
        leases = await claim(backend)
        assert list(leases) == [first.id]

        later = debounced(payload=b"\x02", debounce=0.3)
        [stored] = await backend.enqueue([later])
        assert stored_as_given(later, stored)
        assert stored.state is JobState.SCHEDULED
        # The new job holds the key now: a plain enqueue finds it, a debounced one replaces it.
        [held] = await backend.enqueue([r.job(key="k")])
        assert held.id == later.id
        newest = debounced(payload=b"\x03", debounce=0.3)
        [replaced] = await backend.enqueue([newest])
        assert replaced.id == later.id
        assert replaced.payload == b"\x03"

        # The running job ends; the key stays the new job's.
        assert await backend.settle([r.completed(leases[first.id])]) == [True]
        [held] = await backend.enqueue([r.job(key="k")])
        assert held.id == later.id
        await sleep_until(newest.scheduled_at + 0.1)
        assert list(await claim(backend)) == [later.id]


async def test_debounce_after_the_job_finished_stores_a_new_job(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        done = await finished(backend, r.job(key="k", result_ttl=60.0), r.completed)
        later = debounced(debounce=0.3)
        [stored] = await backend.enqueue([later])
        assert stored_as_given(later, stored)
        assert stored.id != done.id
        assert stored.state is JobState.SCHEDULED
        [held] = await backend.enqueue([r.job(key="k")])
        assert held.id == later.id


async def test_debounce_of_a_retrying_job_stores_a_new_job(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        [first] = await backend.enqueue([r.job(key="k", max_attempts=3)])
        lease = (await claim(backend))[first.id]
        assert await backend.settle([r.failed(lease, retry_at=time.time() + 60)]) == [True]
        later = debounced()
        [stored] = await backend.enqueue([later])
        assert stored_as_given(later, stored)


async def test_debounce_writes_an_event(backend: Backend) -> None:
    store = EVENTS.of(backend)
    assert store is not None
    with anyio.fail_after(BOUND):
        first = debounced(payload=b"\x01")
        await backend.enqueue([first])
        second = debounced(payload=b"\x02", debounce=7.0)
        await backend.enqueue([second])
        history = await store.job_events(first.id)
        assert [e.kind for e in history] == [EventKind.ENQUEUED, EventKind.DEBOUNCED]
        assert near(history[1].due, second.scheduled_at, TOL)
        assert await store.job_events(second.id) == []


async def test_debounce_of_a_pending_throttled_job_takes_the_newer_options(
    backend: Backend,
) -> None:
    with anyio.fail_after(BOUND):
        [first] = await backend.enqueue([throttled(key_ttl=60.0)])
        [replaced] = await backend.enqueue([debounced(debounce=0.2)])
        assert replaced.id == first.id
        assert replaced.key_ttl is None
        await sleep_until(replaced.scheduled_at + 0.1)
        done = await finished_claimed(backend, first.id, r.dead)
        assert done.key_ttl is None
        fresh = r.job(key="k")
        [stored] = await backend.enqueue([fresh])
        assert stored_as_given(fresh, stored)


async def finished_claimed(
    backend: Backend, job_id: str, outcome: Callable[[Lease], Outcome]
) -> JobRecord:
    leases = await claim(backend)
    assert list(leases) == [job_id]
    assert await backend.settle([outcome(leases[job_id])]) == [True]
    return await get(backend, job_id)
