"""The executable form of the ``Backend`` protocol (``asyncq/backends/base.py``).

Every backend runs this module unchanged through the ``backend`` fixture, each
in a namespace of its own, so queue names are plain constants. Behaviour that
depends on time uses short real delays; timestamps the backend sets come from
its own clock (a server's, on some stores), so they are compared with ``TOL``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

import anyio
import anyio.lowlevel
import pytest
from msgspec.structs import replace

from asyncq._records import ErrorKind, JobRecord, JobState, Lease, Outcome
from asyncq.backends.base import ENQUEUE_WAITED, Backend, stored_as_given
from asyncq.exceptions import BackendError

from . import _records as r
from ._records import QUEUE

pytestmark = pytest.mark.anyio

#: How far a timestamp set by the backend's clock may be from the test's own.
TOL = 0.25
#: The bound on every test; the slowest takes well under a second on memory.
BOUND = 10.0
#: A short lease (seconds) that tests let lapse.
SHORT = 0.2
#: A lease no test outlives.
LONG = 60.0
#: Well under every wait's timeout, and well over any push latency.
PROMPT = 1.0


# -- helpers ------------------------------------------------------------------------


async def claim(
    backend: Backend,
    queues: Sequence[str] = (QUEUE,),
    limit: int = 100,
    *,
    worker: str = "w1",
    lease_for: float = LONG,
) -> dict[str, Lease]:
    """Claim from ``queues``; the leases by job id."""
    leases = await backend.claim(list(queues), limit, worker=worker, lease_for=lease_for)
    by_id = {lease.job.id: lease for lease in leases}
    assert len(by_id) == len(leases), "one claim handed out a job twice"
    return by_id


async def claim_one(backend: Backend, record: JobRecord, *, lease_for: float = LONG) -> Lease:
    """Enqueue ``record`` alone in its queue's ready set and claim it."""
    [stored] = await backend.enqueue([record])
    assert stored.id == record.id
    leases = await claim(backend, [record.queue], 1, lease_for=lease_for)
    assert list(leases) == [record.id]
    return leases[record.id]


async def settle_one(backend: Backend, outcome: Outcome) -> JobRecord:
    assert await backend.settle([outcome]) == [True]
    stored = await backend.get(outcome.job_id)
    assert stored is not None
    return stored


async def finished(
    backend: Backend, record: JobRecord, outcome: Callable[[Lease], Outcome]
) -> JobRecord:
    """Run ``record`` through one attempt that ends with ``outcome``; the job as stored."""
    lease = await claim_one(backend, record)
    return await settle_one(backend, outcome(lease))


async def get(backend: Backend, job_id: str) -> JobRecord:
    stored = await backend.get(job_id)
    assert stored is not None, f"job {job_id} vanished"
    return stored


async def sleep_until(when: float) -> None:
    await anyio.sleep(max(0.0, when - time.time()))


def near(value: float | None, expected: float, tol: float = TOL) -> bool:
    return value is not None and abs(value - expected) <= tol


def assert_stored_as(stored: JobRecord, submitted: JobRecord, state: JobState) -> None:
    """``stored`` is ``submitted`` as the backend keeps it, untouched by any attempt."""
    assert stored.state is state
    expected = replace(submitted, state=state)
    # Times may pass through a store's own number type; everything else is exact.
    assert stored.enqueued_at == pytest.approx(submitted.enqueued_at, abs=1e-3)
    assert stored.scheduled_at == pytest.approx(submitted.scheduled_at, abs=1e-3)
    timeless = replace(stored, enqueued_at=expected.enqueued_at, scheduled_at=expected.scheduled_at)
    assert timeless == expected


async def counts(backend: Backend, queue: str = QUEUE) -> dict[JobState, int]:
    [stats] = await backend.stats([queue])
    return stats.counts


# -- enqueue ------------------------------------------------------------------------


async def test_a_job_asked_for_now_is_ready_even_if_the_producer_clock_is_ahead(
    backend: Backend,
) -> None:
    with anyio.fail_after(BOUND):
        ahead = time.time() + 30  # a producer whose clock runs 30 s fast
        now_job = replace(r.job(), enqueued_at=ahead, scheduled_at=ahead)
        later = r.job(delay=30)
        stored = await backend.enqueue([now_job, later])
        assert [s.state for s in stored] == [JobState.QUEUED, JobState.SCHEDULED]
        leases = await backend.claim([r.QUEUE], 10, worker="w", lease_for=LONG)
        assert [lease.job.id for lease in leases] == [now_job.id]
        assert leases[0].job.scheduled_at <= time.time() + 1


async def test_enqueue_returns_stored_records_in_order(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        jobs = [
            r.job(priority=3, max_attempts=4, timeout=2.5, headers={"traceparent": "00-ab-cd-01"}),
            r.job(name="tests.other", payload=b"", key="k1", result_ttl=30.0),
            r.job(priority=-2),
        ]
        stored = await backend.enqueue(jobs)
        assert [s.id for s in stored] == [j.id for j in jobs]
        for submitted, returned in zip(jobs, stored, strict=True):
            assert_stored_as(returned, submitted, JobState.QUEUED)
            assert_stored_as(await get(backend, submitted.id), submitted, JobState.QUEUED)


async def test_enqueue_state_follows_scheduled_at(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        now_job = r.job()
        past_job = r.job(delay=-30.0)
        later_job = r.job(delay=LONG)
        stored = await backend.enqueue([now_job, later_job, past_job])
        assert [s.state for s in stored] == [JobState.QUEUED, JobState.SCHEDULED, JobState.QUEUED]
        assert (await get(backend, later_job.id)).state is JobState.SCHEDULED
        assert (await counts(backend))[JobState.SCHEDULED] == 1
        assert (await counts(backend))[JobState.QUEUED] == 2


async def test_enqueue_batch_of_a_thousand(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        jobs = [r.job(payload=i.to_bytes(2, "big")) for i in range(1000)]
        stored = await backend.enqueue(jobs)
        assert [s.id for s in stored] == [j.id for j in jobs]
        assert [s.payload for s in stored] == [j.payload for j in jobs]
        assert (await counts(backend))[JobState.QUEUED] == 1000
        leases = await claim(backend, limit=600)
        assert len(leases) == 600


async def test_enqueue_key_returns_the_existing_job(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        first = r.job(key="order-1")
        [stored] = await backend.enqueue([first])
        assert stored.id == first.id
        second = r.job(key="order-1", payload=b"other")
        [again] = await backend.enqueue([second])
        assert again.id == first.id != second.id
        assert again.payload == first.payload
        assert await backend.get(second.id) is None
        assert [j.id for j in await backend.list_jobs()] == [first.id]


async def test_enqueue_key_is_per_queue(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        a = r.job(queue="a", key="k")
        b = r.job(queue="b", key="k")
        stored = await backend.enqueue([a, b])
        assert [s.id for s in stored] == [a.id, b.id]
        assert {j.id for j in await backend.list_jobs()} == {a.id, b.id}


async def test_enqueue_same_key_twice_in_one_batch(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        first, second, other = r.job(key="k"), r.job(key="k"), r.job(key="k2")
        stored = await backend.enqueue([first, second, other])
        assert [s.id for s in stored] == [first.id, first.id, other.id]
        assert await backend.get(second.id) is None


async def test_enqueue_key_held_while_scheduled_active_and_failed(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        later = r.job(key="s", delay=LONG)
        await backend.enqueue([later])
        [held] = await backend.enqueue([r.job(key="s")])
        assert held.id == later.id

        lease = await claim_one(backend, r.job(key="a", max_attempts=2))
        [held] = await backend.enqueue([r.job(key="a")])
        assert held.id == lease.job.id
        assert held.state is JobState.ACTIVE

        await settle_one(backend, r.failed(lease, retry_at=time.time() + LONG))
        [held] = await backend.enqueue([r.job(key="a")])
        assert held.id == lease.job.id
        assert held.state is JobState.FAILED


@pytest.mark.parametrize("ending", ["dead", "cancelled", "cancel"])
async def test_enqueue_key_freed_by_dead_and_cancelled(backend: Backend, ending: str) -> None:
    with anyio.fail_after(BOUND):
        original = r.job(key="k")
        if ending == "cancel":
            await backend.enqueue([original])
            gone = await backend.cancel(original.id)
            assert gone is not None
            assert gone.state is JobState.CANCELLED
        else:
            outcome = r.dead if ending == "dead" else r.cancelled
            await finished(backend, original, outcome)
        fresh = r.job(key="k")
        [stored] = await backend.enqueue([fresh])
        assert stored.id == fresh.id
        assert stored.state is JobState.QUEUED


async def test_enqueue_key_held_by_completed_for_result_ttl(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        expiring = await finished(backend, r.job(key="ttl", result_ttl=SHORT), r.completed)
        forever = await finished(backend, r.job(key="forever", result_ttl=None), r.completed)
        [held] = await backend.enqueue([r.job(key="ttl")])
        assert held.id == expiring.id
        assert held.state is JobState.COMPLETED
        assert held.result == r.RESULT

        assert expiring.finished_at is not None
        await sleep_until(expiring.finished_at + SHORT + 0.05)
        fresh = r.job(key="ttl")
        [stored] = await backend.enqueue([fresh])
        assert stored.id == fresh.id
        assert stored.state is JobState.QUEUED
        [held] = await backend.enqueue([r.job(key="forever")])
        assert held.id == forever.id


# -- get ----------------------------------------------------------------------------


async def test_get_unknown_is_none(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        await backend.enqueue([r.job()])
        assert await backend.get(r.job().id) is None


async def test_get_completed_past_result_ttl_is_none(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        done = await finished(backend, r.job(result_ttl=SHORT), r.completed)
        kept = await finished(backend, r.job(result_ttl=LONG), r.completed)
        assert done.result == r.RESULT
        assert done.finished_at is not None
        await sleep_until(done.finished_at + SHORT + 0.05)
        assert await backend.get(done.id) is None
        assert (await get(backend, kept.id)).result == r.RESULT


# -- claim --------------------------------------------------------------------------


async def test_claim_respects_limit(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        jobs = [r.job() for _ in range(5)]
        await backend.enqueue(jobs)
        first = await claim(backend, limit=2)
        assert len(first) == 2
        rest = await claim(backend, limit=10)
        assert len(rest) == 3
        assert set(first) | set(rest) == {j.id for j in jobs}
        assert await claim(backend, limit=10) == {}


async def test_claim_order_priority_then_scheduled_at_then_id(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        now = time.time()
        # Ids are made in this order; the claim order must not follow it.
        late_low = r.job(at=now - 1, priority=-1)
        tie_1 = r.job(at=now - 2)
        tie_2 = r.job(at=now - 2)
        late = r.job(at=now - 1)
        early = r.job(at=now - 3)
        high = r.job(at=now - 1, priority=5)
        tie_3 = r.job(at=now - 2)
        expected = [high, early, tie_1, tie_2, tie_3, late, late_low]
        await backend.enqueue(list(reversed(expected)))
        order = []
        for _ in expected:
            [job_id] = await claim(backend, limit=1)
            order.append(job_id)
        assert order == [j.id for j in expected]


async def test_claim_takes_the_first_in_order(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        now = time.time()
        jobs = [r.job(at=now - i, priority=i % 3) for i in range(10)]
        await backend.enqueue(jobs)
        best = sorted(jobs, key=lambda j: (-j.priority, j.scheduled_at, j.id))
        assert set(await claim(backend, limit=4)) == {j.id for j in best[:4]}


async def test_claim_from_several_queues(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        a, b, c = r.job(queue="a"), r.job(queue="b"), r.job(queue="c")
        await backend.enqueue([a, b, c])
        assert set(await claim(backend, ["a", "b"])) == {a.id, b.id}
        assert await claim(backend, ["a", "b"]) == {}
        assert set(await claim(backend, ["c"])) == {c.id}


async def test_claim_scheduled_only_when_due(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        later = r.job(delay=0.25)
        await backend.enqueue([later])
        assert await claim(backend) == {}
        await sleep_until(later.scheduled_at + 0.05)
        leases = await claim(backend)
        assert set(leases) == {later.id}
        started_at = leases[later.id].job.started_at
        assert started_at is not None
        assert started_at >= later.scheduled_at - TOL


async def test_claim_skips_paused_queue(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        await backend.set_paused("a", True)
        held, free = r.job(queue="a"), r.job(queue="b")
        stored = await backend.enqueue([held, free])
        assert [s.state for s in stored] == [JobState.QUEUED, JobState.QUEUED]
        assert set(await claim(backend, ["a", "b"])) == {free.id}
        assert await claim(backend, ["a"]) == {}
        await backend.set_paused("a", False)
        assert set(await claim(backend, ["a"])) == {held.id}


async def test_claimed_record(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        submitted = r.job(max_attempts=3)
        await backend.enqueue([submitted])
        before = time.time()
        [lease] = await backend.claim([QUEUE], 1, worker="worker-7", lease_for=30.0)
        after = time.time()
        claimed = lease.job
        assert claimed.id == submitted.id
        assert claimed.state is JobState.ACTIVE
        assert claimed.attempts == 1
        assert claimed.worker == "worker-7"
        assert claimed.cancel_requested is False
        assert claimed.started_at is not None
        assert before - TOL <= claimed.started_at <= after + TOL
        assert claimed.lease_expires_at == pytest.approx(lease.expires_at, abs=1e-3)
        assert near(lease.expires_at, claimed.started_at + 30.0, 0.05)
        assert claimed.payload == submitted.payload
        assert claimed.max_attempts == 3
        assert lease.token

        stored = await get(backend, submitted.id)
        assert stored.state is JobState.ACTIVE
        assert stored.attempts == 1
        assert stored.worker == "worker-7"
        assert near(stored.lease_expires_at, lease.expires_at, 1e-3)


async def test_claim_tokens_unique_and_no_job_twice(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        jobs = [r.job() for _ in range(6)]
        await backend.enqueue(jobs)
        first = await claim(backend, limit=3)
        second = await claim(backend, limit=3, worker="w2")
        assert set(first).isdisjoint(second)
        assert set(first) | set(second) == {j.id for j in jobs}
        tokens = [lease.token for lease in (*first.values(), *second.values())]
        assert len(set(tokens)) == len(tokens)
        assert await claim(backend) == {}


async def test_concurrent_claims_never_share_a_job(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        jobs = [r.job(queue=("a", "b")[i % 2]) for i in range(200)]
        await backend.enqueue(jobs)
        claimed: list[str] = []

        async def worker(name: str) -> None:
            while leases := await backend.claim(["a", "b"], 7, worker=name, lease_for=LONG):
                claimed.extend(lease.job.id for lease in leases)
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for n in range(5):
                tg.start_soon(worker, f"w{n}")
        assert len(claimed) == len(set(claimed)) == len(jobs)
        assert set(claimed) == {j.id for j in jobs}


# -- wait_for_work ------------------------------------------------------------------


async def _returns_after(backend: Backend, queues: list[str], timeout: float) -> float:
    start = time.monotonic()
    await backend.wait_for_work(queues, timeout)
    return time.monotonic() - start


@pytest.mark.parametrize("trigger", ["enqueue", "hand_back", "retry_dead"])
async def test_wait_for_work_wakes_when_a_job_gets_ready(backend: Backend, trigger: str) -> None:
    with anyio.fail_after(BOUND):
        # Leave nothing ready, so only the trigger can end the wait early.
        if trigger == "hand_back":
            lease = await claim_one(backend, r.job())
        elif trigger == "retry_dead":
            gone = await finished(backend, r.job(), r.dead)
        returned: list[float] = []

        async def waiter() -> None:
            await backend.wait_for_work([QUEUE], 5.0)
            returned.append(time.monotonic())

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            # Give the waiter time to block, so the wake-up is what is tested.
            await anyio.sleep(0.1)
            triggered = time.monotonic()
            if trigger == "hand_back":
                assert await backend.settle([r.handed_back(lease)]) == [True]
            elif trigger == "retry_dead":
                assert await backend.retry_dead([gone.id]) == [gone.id]
            else:
                await backend.enqueue([r.job()])
        assert returned[0] - triggered < PROMPT
        assert len(await claim(backend)) == 1


async def test_wait_for_work_times_out_with_nothing(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        elapsed = await _returns_after(backend, [QUEUE, "other"], 0.3)
        assert 0.25 <= elapsed < 0.3 + PROMPT


async def test_wait_for_work_returns_at_once_when_ready(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        await backend.enqueue([r.job()])
        assert await _returns_after(backend, [QUEUE], 5.0) < PROMPT


async def test_wait_for_work_returns_by_earliest_scheduled_at(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        await backend.enqueue([r.job(delay=LONG), r.job(delay=0.2)])
        assert await _returns_after(backend, [QUEUE], 5.0) < 0.2 + PROMPT


async def test_wait_for_work_wakes_on_resume(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        await backend.set_paused(QUEUE, True)
        await backend.enqueue([r.job()])
        returned: list[float] = []

        async def waiter() -> None:
            await backend.wait_for_work([QUEUE], 5.0)
            returned.append(time.monotonic())

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.1)
            resumed = time.monotonic()
            await backend.set_paused(QUEUE, False)
        assert returned[0] - resumed < PROMPT


async def test_wait_for_work_returns_by_retry_due_time(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job(max_attempts=2))
        retry_at = time.time() + 0.2
        await settle_one(backend, r.failed(lease, retry_at=retry_at))
        assert await _returns_after(backend, [QUEUE], 5.0) < 0.2 + PROMPT
        await sleep_until(retry_at + 0.05)
        assert set(await claim(backend)) == {lease.job.id}


async def test_close_wakes_waiters(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        done: list[str] = []

        async def wait_work() -> None:
            with contextlib.suppress(BackendError):
                await backend.wait_for_work(["empty"], 5.0)
            done.append("work")

        async def wait_job() -> None:
            with contextlib.suppress(BackendError):
                await backend.wait_finished(lease.job.id)
            done.append("finished")

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_work)
            tg.start_soon(wait_job)
            await anyio.sleep(0.1)
            closed = time.monotonic()
            await backend.close()
        assert time.monotonic() - closed < PROMPT
        assert sorted(done) == ["finished", "work"]
        await backend.close()  # idempotent; the fixture closes once more


# -- heartbeat and progress ---------------------------------------------------------


async def test_heartbeat_extends_the_lease(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job(), lease_for=SHORT)
        reply = await backend.heartbeat([lease], lease_for=30.0)
        assert reply.lost == frozenset()
        assert reply.cancel == frozenset()
        stored = await get(backend, lease.job.id)
        assert near(stored.lease_expires_at, time.time() + 30.0)
        # The original lease would have lapsed by now; the extended one has not.
        await sleep_until(lease.expires_at + 0.1)
        assert await backend.recover() == 0
        assert (await get(backend, lease.job.id)).state is JobState.ACTIVE
        assert await backend.settle([r.completed(lease)]) == [True]


async def test_heartbeat_reports_stale_tokens_lost(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        old = await claim_one(backend, r.job(max_attempts=2), lease_for=SHORT)
        await sleep_until(old.expires_at + 0.1)
        assert await backend.recover() == 1
        new = (await claim(backend))[old.job.id]
        assert new.token != old.token
        assert (await backend.heartbeat([old], lease_for=30.0)).lost == {old.job.id}
        assert (await get(backend, new.job.id)).lease_expires_at == pytest.approx(
            new.expires_at, abs=1e-3
        )
        assert (await backend.heartbeat([new], lease_for=30.0)).lost == frozenset()
        assert near((await get(backend, new.job.id)).lease_expires_at, time.time() + 30.0)
        assert (await backend.heartbeat([r.forged(new)], lease_for=30.0)).lost == {new.job.id}

        await backend.settle([r.completed(new)])
        assert (await backend.heartbeat([new], lease_for=30.0)).lost == {new.job.id}


async def test_heartbeat_reports_cancel_requested(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        await backend.enqueue([r.job(), r.job()])
        leases = list((await claim(backend)).values())
        target = leases[0]
        requested = await backend.cancel(target.job.id)
        assert requested is not None
        assert requested.state is JobState.ACTIVE
        assert requested.cancel_requested is True
        reply = await backend.heartbeat(leases, lease_for=30.0)
        assert reply.cancel == {target.job.id}
        assert reply.lost == frozenset()


async def test_progress_is_stored(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        assert await backend.progress(lease, 0.25) is True
        assert (await get(backend, lease.job.id)).progress == 0.25
        assert await backend.progress(lease, 0.75) is True
        assert (await get(backend, lease.job.id)).progress == 0.75


async def test_progress_false_without_the_lease(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        assert await backend.progress(lease, 0.5) is True
        assert await backend.progress(r.forged(lease), 0.9) is False
        assert (await get(backend, lease.job.id)).progress == 0.5
        await backend.settle([r.completed(lease)])
        assert await backend.progress(lease, 0.9) is False


# -- settle -------------------------------------------------------------------------


async def test_settle_completed(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        before = time.time()
        done = await settle_one(backend, r.completed(lease, b"\x93\x01\x02\x03"))
        assert done.state is JobState.COMPLETED
        assert done.result == b"\x93\x01\x02\x03"
        assert done.finished_at is not None
        assert before - TOL <= done.finished_at <= time.time() + TOL
        assert done.attempts == 1
        assert done.errors == ()
        # The lease fields describe an active job only.
        assert done.lease_expires_at is None
        assert done.worker is None
        assert await claim(backend) == {}


async def test_settle_failed_retries_at_retry_at(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job(max_attempts=3))
        retry_at = time.time() + 0.25
        outcome = r.failed(lease, retry_at=retry_at)
        stored = await settle_one(backend, outcome)
        assert stored.state is JobState.FAILED
        assert stored.errors == (outcome.error,)
        assert stored.scheduled_at == pytest.approx(retry_at, abs=1e-3)
        assert stored.finished_at is None
        assert stored.attempts == 1
        assert await claim(backend) == {}

        await sleep_until(retry_at + 0.05)
        again = (await claim(backend))[lease.job.id]
        assert again.job.attempts == 2
        assert again.token != lease.token
        second = r.failed(again, retry_at=time.time() + LONG, message="boom again")
        stored = await settle_one(backend, second)
        assert stored.errors == (outcome.error, second.error)


async def test_settle_dead(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job(max_attempts=5))
        outcome = r.dead(lease)
        stored = await settle_one(backend, outcome)
        assert stored.state is JobState.DEAD
        assert stored.errors == (outcome.error,)
        assert stored.finished_at is not None
        assert near(stored.finished_at, time.time())
        assert stored.attempts == 1
        assert await claim(backend) == {}


async def test_settle_cancelled(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job(max_attempts=5))
        outcome = r.cancelled(lease)
        stored = await settle_one(backend, outcome)
        assert stored.state is JobState.CANCELLED
        assert stored.errors == (outcome.error,)
        assert stored.finished_at is not None
        assert near(stored.finished_at, time.time())
        assert await claim(backend) == {}


async def test_settle_queued_hands_the_job_back(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        stored = await settle_one(backend, r.handed_back(lease))
        assert stored.state is JobState.QUEUED
        assert stored.attempts == 0
        assert stored.errors == ()
        assert stored.finished_at is None
        again = (await claim(backend))[lease.job.id]
        assert again.job.attempts == 1
        assert again.token != lease.token


async def test_settle_ignores_stale_tokens(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        assert await backend.settle([r.completed(r.forged(lease))]) == [False]
        stored = await get(backend, lease.job.id)
        assert stored.state is JobState.ACTIVE
        assert stored.result is None
        assert await backend.settle([r.completed(lease)]) == [True]
        # Completion is recorded once: the same outcome again is stale.
        assert await backend.settle([r.dead(lease)]) == [False]
        assert (await get(backend, lease.job.id)).state is JobState.COMPLETED


async def test_settle_after_recovery_only_for_the_new_token(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        old = await claim_one(backend, r.job(max_attempts=2), lease_for=SHORT)
        await sleep_until(old.expires_at + 0.1)
        assert await backend.recover() == 1
        new = (await claim(backend))[old.job.id]
        assert await backend.settle([r.completed(old, b"old")]) == [False]
        assert await backend.settle([r.completed(new, b"new")]) == [True]
        assert (await get(backend, old.job.id)).result == b"new"


async def test_settle_batch_mixing_outcomes(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        jobs = [r.job(max_attempts=2) for _ in range(5)]
        await backend.enqueue(jobs)
        leases = await claim(backend)
        a, b, c, d, e = (leases[j.id] for j in jobs)
        outcomes = [
            r.completed(a),
            r.completed(r.forged(b)),
            r.failed(c, retry_at=time.time() + LONG),
            r.dead(d),
            r.handed_back(e),
        ]
        assert await backend.settle(outcomes) == [True, False, True, True, True]
        states = [(await get(backend, j.id)).state for j in jobs]
        assert states == [
            JobState.COMPLETED,
            JobState.ACTIVE,
            JobState.FAILED,
            JobState.DEAD,
            JobState.QUEUED,
        ]
        assert await backend.settle([]) == []


# -- recover ------------------------------------------------------------------------


async def test_recover_lapsed_leases(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        retried, spent, live = r.job(max_attempts=3), r.job(max_attempts=1), r.job(queue="live")
        await backend.enqueue([retried, spent, live])
        short = await claim(backend, lease_for=SHORT)
        [live_lease] = (await claim(backend, ["live"], lease_for=LONG)).values()
        assert set(short) == {retried.id, spent.id}
        assert await backend.recover() == 0
        await sleep_until(max(lease.expires_at for lease in short.values()) + 0.1)

        assert await backend.recover() == 2
        assert await backend.recover() == 0

        back = await get(backend, retried.id)
        assert back.state is JobState.QUEUED
        assert back.attempts == 1
        assert back.last_error is not None
        assert back.last_error.kind is ErrorKind.LOST
        assert back.last_error.attempt == 1
        assert back.lease_expires_at is None

        gone = await get(backend, spent.id)
        assert gone.state is JobState.DEAD
        assert gone.finished_at is not None
        assert [e.kind for e in gone.errors] == [ErrorKind.LOST]

        untouched = await get(backend, live.id)
        assert untouched.state is JobState.ACTIVE
        assert untouched.errors == ()
        assert (await backend.heartbeat([live_lease], lease_for=LONG)).lost == frozenset()

        again = (await claim(backend))[retried.id]
        assert again.job.attempts == 2


async def test_recover_honours_a_cancel_request_of_a_lost_job(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        doomed = r.job(max_attempts=3, key="k-cancel")
        await backend.enqueue([doomed])
        short = await claim(backend, lease_for=SHORT)
        requested = await backend.cancel(doomed.id)
        assert requested is not None
        assert requested.cancel_requested
        await sleep_until(short[doomed.id].expires_at + 0.1)

        async with anyio.create_task_group() as tg:
            finished: list[JobRecord | None] = []

            async def wait() -> None:
                finished.append(await backend.wait_finished(doomed.id))

            tg.start_soon(wait)
            assert await backend.recover() == 1
        stored = await get(backend, doomed.id)
        assert stored.state is JobState.CANCELLED
        assert stored.finished_at is not None
        assert [e.kind for e in stored.errors] == [ErrorKind.LOST]
        assert finished[0] is not None
        assert finished[0].state is JobState.CANCELLED
        assert await backend.claim([r.QUEUE], 10, worker="w", lease_for=LONG) == []
        # A cancelled job frees its key.
        again = r.job(key="k-cancel")
        [stored_again] = await backend.enqueue([again])
        assert stored_again.id == again.id


async def test_recover_from_many_workers_at_once(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        await backend.enqueue([r.job(max_attempts=2) for _ in range(10)])
        leases = await claim(backend, lease_for=SHORT)
        await sleep_until(max(lease.expires_at for lease in leases.values()) + 0.1)
        recovered: list[int] = []

        async def recover() -> None:
            recovered.append(await backend.recover())

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(recover)
        assert sum(recovered) == 10
        for job_id in leases:
            stored = await get(backend, job_id)
            assert stored.state is JobState.QUEUED
            assert len(stored.errors) == 1


# -- cancel -------------------------------------------------------------------------


async def test_cancel_pending_jobs_at_once(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        scheduled, queued = r.job(delay=0.2), r.job()
        await backend.enqueue([scheduled, queued])
        lease = await claim_one(backend, r.job(queue="f", max_attempts=2))
        failed = lease.job
        retry_at = time.time() + 0.2
        await settle_one(backend, r.failed(lease, retry_at=retry_at))

        for record in (scheduled, queued, failed):
            before = time.time()
            cancelled = await backend.cancel(record.id)
            assert cancelled is not None
            assert cancelled.state is JobState.CANCELLED
            assert cancelled.finished_at is not None
            assert before - TOL <= cancelled.finished_at <= time.time() + TOL
            assert (await get(backend, record.id)).state is JobState.CANCELLED

        # Not even once their time comes.
        await sleep_until(max(scheduled.scheduled_at, retry_at) + 0.05)
        assert await claim(backend, [QUEUE, "f"]) == {}
        assert (await counts(backend))[JobState.CANCELLED] == 2
        assert (await counts(backend, "f"))[JobState.CANCELLED] == 1


async def test_cancel_active_requests_it(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job(key="k"))
        requested = await backend.cancel(lease.job.id)
        assert requested is not None
        assert requested.state is JobState.ACTIVE
        assert requested.cancel_requested is True
        assert requested.finished_at is None
        assert (await get(backend, lease.job.id)).cancel_requested is True
        # The key is still held until the worker settles.
        [held] = await backend.enqueue([r.job(key="k")])
        assert held.id == lease.job.id

        stored = await settle_one(backend, r.cancelled(lease))
        assert stored.state is JobState.CANCELLED
        fresh = r.job(key="k")
        assert (await backend.enqueue([fresh]))[0].id == fresh.id


async def test_cancel_requested_loses_to_an_earlier_outcome(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        await backend.cancel(lease.job.id)
        stored = await settle_one(backend, r.completed(lease))
        assert stored.state is JobState.COMPLETED
        assert stored.result == r.RESULT


async def test_cancel_terminal_is_unchanged(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        for outcome in (r.completed, r.dead, r.cancelled):
            done = await finished(backend, r.job(), outcome)
            after = await backend.cancel(done.id)
            assert after is not None
            assert after.state is done.state
            assert after.finished_at == done.finished_at
            assert after.result == done.result
            assert after.cancel_requested is False
            assert (await get(backend, done.id)).state is done.state


async def test_cancel_unknown_is_none(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        assert await backend.cancel(r.job().id) is None


# -- wait_finished ------------------------------------------------------------------


async def test_wait_finished_terminal_returns_at_once(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        done = await finished(backend, r.job(), r.completed)
        with anyio.fail_after(PROMPT):
            got = await backend.wait_finished(done.id)
        assert got is not None
        assert got.state is JobState.COMPLETED
        assert got.result == r.RESULT


async def test_wait_finished_unknown_is_none(backend: Backend) -> None:
    with anyio.fail_after(BOUND), anyio.fail_after(PROMPT):
        assert await backend.wait_finished(r.job().id) is None


@pytest.mark.parametrize("ending", ["completed", "dead", "cancel"])
async def test_wait_finished_woken(backend: Backend, ending: str) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        got: list[JobRecord | None] = []

        async def waiter() -> None:
            got.append(await backend.wait_finished(lease.job.id))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(waiter)
            # The waiters are (most likely) blocked by now: this is the push path.
            await anyio.sleep(0.1)
            ended = time.monotonic()
            if ending == "completed":
                await backend.settle([r.completed(lease)])
            elif ending == "dead":
                await backend.settle([r.dead(lease)])
            else:
                # A job that has not started is cancelled at once.
                await backend.settle([r.handed_back(lease)])
                await backend.cancel(lease.job.id)
        assert time.monotonic() - ended < PROMPT
        expected = {
            "completed": JobState.COMPLETED,
            "dead": JobState.DEAD,
            "cancel": JobState.CANCELLED,
        }[ending]
        assert len(got) == 3
        for record in got:
            assert record is not None
            assert record.id == lease.job.id
            assert record.state is expected


async def test_wait_finished_never_misses_a_racing_completion(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        jobs = [r.job() for _ in range(20)]
        await backend.enqueue(jobs)
        leases = await claim(backend)
        got: dict[str, JobState] = {}

        async def waiter(job_id: str) -> None:
            record = await backend.wait_finished(job_id)
            assert record is not None
            got[job_id] = record.state

        async with anyio.create_task_group() as tg:
            for lease in leases.values():
                tg.start_soon(waiter, lease.job.id)
                await backend.settle([r.completed(lease)])
        assert got == dict.fromkeys(leases, JobState.COMPLETED)


async def test_wait_finished_cancelled_cleanly(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        with anyio.move_on_after(0.1) as scope:
            await backend.wait_finished(lease.job.id)
        assert scope.cancelled_caught
        assert (await get(backend, lease.job.id)).state is JobState.ACTIVE

        got: list[JobRecord | None] = []

        async def waiter() -> None:
            got.append(await backend.wait_finished(lease.job.id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.05)
            await backend.settle([r.completed(lease)])
        [record] = got
        assert record is not None
        assert record.state is JobState.COMPLETED


# -- stats --------------------------------------------------------------------------


async def test_stats_lists_every_state(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        [stats] = await backend.stats(["nothing-here"])
        assert stats.queue == "nothing-here"
        assert stats.counts == dict.fromkeys(JobState, 0)
        assert stats.paused is False
        assert stats.oldest_ready_at is None


async def test_stats_counts_after_transitions(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        # Distinct counts per state, so a count filed under the wrong state shows.
        want = {
            JobState.WAITING: 0,
            JobState.SCHEDULED: 1,
            JobState.QUEUED: 2,
            JobState.ACTIVE: 3,
            JobState.FAILED: 4,
            JobState.COMPLETED: 5,
            JobState.DEAD: 6,
            JobState.CANCELLED: 7,
        }
        later = [r.job(queue="a", delay=LONG) for _ in range(8)]
        now = [r.job(queue="a", max_attempts=2) for _ in range(20)]
        await backend.enqueue([*later, *now, r.job(queue="b")])
        for record in later[1:]:
            await backend.cancel(record.id)
        leases = list((await claim(backend, ["a"], 18)).values())
        retry_at = time.time() + LONG
        outcomes = [
            *(r.failed(lease, retry_at) for lease in leases[:4]),
            *(r.completed(lease) for lease in leases[4:9]),
            *(r.dead(lease) for lease in leases[9:15]),
        ]
        assert await backend.settle(outcomes) == [True] * 15
        await backend.set_paused("b", True)

        a, b = await backend.stats(["b", "a"])
        assert a.queue == "a"
        assert a.counts == want
        assert a.paused is False
        assert b.queue == "b"
        assert b.counts == {**dict.fromkeys(JobState, 0), JobState.QUEUED: 1}
        assert b.paused is True
        assert [s.queue for s in await backend.stats()] == ["a", "b"]


async def test_stats_lists_a_paused_queue_without_jobs(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        await backend.set_paused("idle", True)
        [stats] = await backend.stats(["idle"])
        assert stats.paused is True
        assert stats.counts == dict.fromkeys(JobState, 0)
        await backend.set_paused("idle", False)
        assert (await backend.stats(["idle"]))[0].paused is False


async def test_stats_oldest_ready_at(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        now = time.time()
        older, newer = r.job(at=now - 5), r.job(at=now - 2)
        await backend.enqueue([r.job(delay=LONG), newer, older])
        [stats] = await backend.stats([QUEUE])
        assert near(stats.oldest_ready_at, older.scheduled_at, 1e-3)
        assert set(await claim(backend, limit=1)) == {older.id}
        [stats] = await backend.stats([QUEUE])
        assert near(stats.oldest_ready_at, newer.scheduled_at, 1e-3)
        await claim(backend)
        [stats] = await backend.stats([QUEUE])
        assert stats.oldest_ready_at is None


# -- list_jobs ----------------------------------------------------------------------


async def test_list_jobs_filters(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        a1 = r.job(queue="a", name="n1")
        a2 = r.job(queue="a", name="n2")
        b1 = r.job(queue="b", name="n1")
        b2 = r.job(queue="b", name="n2", delay=LONG)
        await backend.enqueue([b2, a2, b1, a1])
        await claim(backend, ["a"], 1)  # a1: oldest id, so first

        def ids(records: list[JobRecord]) -> list[str]:
            return [record.id for record in records]

        assert ids(await backend.list_jobs()) == [a1.id, a2.id, b1.id, b2.id]
        assert ids(await backend.list_jobs(queue="a")) == [a1.id, a2.id]
        assert ids(await backend.list_jobs(name="n1")) == [a1.id, b1.id]
        assert ids(await backend.list_jobs(state=JobState.ACTIVE)) == [a1.id]
        assert ids(await backend.list_jobs(state=JobState.QUEUED)) == [a2.id, b1.id]
        assert ids(await backend.list_jobs(state=JobState.SCHEDULED)) == [b2.id]
        assert ids(await backend.list_jobs(queue="b", name="n2")) == [b2.id]
        assert ids(await backend.list_jobs(queue="a", name="n1", state=JobState.QUEUED)) == []
        assert await backend.list_jobs(queue="nowhere") == []
        [listed] = await backend.list_jobs(name="n2", queue="a")
        assert_stored_as(listed, a2, JobState.QUEUED)


async def test_list_jobs_limit_and_paging(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        jobs = [r.job() for _ in range(7)]
        await backend.enqueue(list(reversed(jobs)))
        pages: list[list[str]] = []
        after = None
        for _ in range(5):  # bounded: a backend that ignores ``after`` would page forever
            page = await backend.list_jobs(limit=3, after=after)
            if not page:
                break
            pages.append([record.id for record in page])
            after = page[-1].id
        ids = [j.id for j in jobs]
        assert pages == [ids[0:3], ids[3:6], ids[6:7]]
        assert [j.id for j in await backend.list_jobs(after=ids[4])] == ids[5:]


# -- retry_dead ---------------------------------------------------------------------


async def test_retry_dead_by_ids(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        gone = await finished(backend, r.job(key="k", max_attempts=2), r.dead)
        other_dead = await finished(backend, r.job(), r.dead)
        done = await finished(backend, r.job(), r.completed)
        live = r.job()
        await backend.enqueue([live])
        unknown = r.job().id

        retried = await backend.retry_dead([gone.id, done.id, live.id, unknown])
        assert retried == [gone.id]
        back = await get(backend, gone.id)
        assert back.state is JobState.QUEUED
        assert back.attempts == 0
        assert back.finished_at is None
        assert back.errors == gone.errors
        assert len(back.errors) == 1
        assert (await get(backend, other_dead.id)).state is JobState.DEAD
        assert (await get(backend, done.id)).state is JobState.COMPLETED

        # The key is held again.
        [held] = await backend.enqueue([r.job(key="k")])
        assert held.id == gone.id

        leases = await claim(backend)
        assert set(leases) == {gone.id, live.id}
        assert leases[gone.id].job.attempts == 1


async def test_retry_dead_by_filter_with_limit(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        dead_a = [await finished(backend, r.job(queue="a", name="n"), r.dead) for _ in range(3)]
        dead_b = await finished(backend, r.job(queue="b", name="n"), r.dead)
        other_name = await finished(backend, r.job(queue="a", name="m"), r.dead)

        retried = await backend.retry_dead(queue="a", name="n", limit=2)
        assert set(retried) == {dead_a[0].id, dead_a[1].id}
        assert (await get(backend, dead_a[2].id)).state is JobState.DEAD
        assert (await get(backend, dead_b.id)).state is JobState.DEAD
        assert (await get(backend, other_name.id)).state is JobState.DEAD
        assert set(await backend.retry_dead(name="n")) == {dead_a[2].id, dead_b.id}
        assert await backend.retry_dead(name="n") == []
        assert set(await claim(backend, ["a", "b"])) == {*(j.id for j in dead_a), dead_b.id}


async def test_retry_dead_stays_dead_when_its_key_is_taken(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        gone = await finished(backend, r.job(key="k"), r.dead)
        successor = r.job(key="k")
        assert (await backend.enqueue([successor]))[0].id == successor.id
        assert await backend.retry_dead([gone.id]) == []
        assert (await get(backend, gone.id)).state is JobState.DEAD


# -- purge --------------------------------------------------------------------------


async def test_purge_only_jobs_finished_before_older_than(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        old_done = await finished(backend, r.job(), r.completed)
        old_dead = await finished(backend, r.job(), r.dead)
        old_cancelled = await finished(backend, r.job(), r.cancelled)
        await anyio.sleep(0.1)
        new_done = await finished(backend, r.job(), r.completed)
        live = r.job()
        await backend.enqueue([live])
        assert old_cancelled.finished_at is not None
        assert new_done.finished_at is not None
        cutoff = (old_cancelled.finished_at + new_done.finished_at) / 2

        assert await backend.purge(states=[JobState.DEAD], older_than=cutoff) == 1
        assert await backend.get(old_dead.id) is None
        assert (await get(backend, old_done.id)).state is JobState.COMPLETED

        all_terminal = [JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED]
        assert await backend.purge(states=all_terminal, older_than=cutoff) == 2
        assert await backend.get(old_done.id) is None
        assert await backend.get(old_cancelled.id) is None
        assert (await get(backend, new_done.id)).state is JobState.COMPLETED
        assert (await get(backend, live.id)).state is JobState.QUEUED
        counted = await counts(backend)
        assert counted[JobState.COMPLETED] == 1
        assert counted[JobState.DEAD] == counted[JobState.CANCELLED] == 0


async def test_purge_by_queue_and_limit(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        in_a = [await finished(backend, r.job(queue="a"), r.dead) for _ in range(3)]
        in_b = await finished(backend, r.job(queue="b"), r.dead)
        cutoff = time.time() + LONG
        dead = [JobState.DEAD]
        assert await backend.purge(states=dead, older_than=cutoff, queue="a", limit=2) == 2
        left = [j.id for j in await backend.list_jobs(state=JobState.DEAD)]
        assert len(left) == 2
        assert in_b.id in left
        assert len(set(left) & {j.id for j in in_a}) == 1
        assert await backend.purge(states=dead, older_than=cutoff, queue="a") == 1
        assert [j.id for j in await backend.list_jobs()] == [in_b.id]


@pytest.mark.parametrize("state", [JobState.QUEUED, JobState.ACTIVE, JobState.SCHEDULED])
async def test_purge_rejects_live_states(backend: Backend, state: JobState) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        with pytest.raises(ValueError):
            await backend.purge(states=[JobState.COMPLETED, state], older_than=time.time() + LONG)
        assert (await get(backend, lease.job.id)).state is JobState.ACTIVE


async def test_purge_frees_keys(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        done = await finished(backend, r.job(key="k", result_ttl=None), r.completed)
        [held] = await backend.enqueue([r.job(key="k")])
        assert held.id == done.id
        assert await backend.purge(states=[JobState.COMPLETED], older_than=time.time() + LONG) == 1
        fresh = r.job(key="k")
        assert (await backend.enqueue([fresh]))[0].id == fresh.id


# -- prune --------------------------------------------------------------------------


async def test_prune_removes_expired_results(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        expiring = await finished(backend, r.job(result_ttl=SHORT), r.completed)
        kept = await finished(backend, r.job(result_ttl=LONG), r.completed)
        forever = await finished(backend, r.job(result_ttl=None), r.completed)
        dead = await finished(backend, r.job(), r.dead)
        assert expiring.finished_at is not None
        await sleep_until(expiring.finished_at + SHORT + 0.05)

        # Stores that expire results by themselves may have done it already.
        assert await backend.prune() in (0, 1)
        assert await backend.prune() == 0
        assert await backend.get(expiring.id) is None
        listed = {j.id for j in await backend.list_jobs()}
        assert listed == {kept.id, forever.id, dead.id}
        assert (await counts(backend))[JobState.COMPLETED] == 2


# -- caller-chosen ids --------------------------------------------------------------


def with_id(job_id: str, **fields: object) -> JobRecord:
    """A new job as a producer submits it, under the id its caller chose."""
    return replace(r.job(**fields), id=job_id)  # type: ignore[arg-type]


async def test_enqueue_caller_id_is_stored_as_given(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        job = with_id("order-42")
        [stored] = await backend.enqueue([job])
        assert stored_as_given(job, stored)
        assert stored.id == "order-42"
        assert (await get(backend, "order-42")).payload == job.payload
        leases = await claim(backend)
        assert list(leases) == ["order-42"]


@pytest.mark.parametrize("ending", ["queued", "active", "completed", "dead", "cancelled"])
async def test_enqueue_taken_id_returns_the_existing_job(backend: Backend, ending: str) -> None:
    with anyio.fail_after(BOUND):
        first = with_id("order-42", key="k1")
        if ending == "queued":
            await backend.enqueue([first])
        elif ending == "active":
            await claim_one(backend, first)
        else:
            outcome = {"completed": r.completed, "dead": r.dead, "cancelled": r.cancelled}
            await finished(backend, first, outcome[ending])
        before = await get(backend, "order-42")
        assert before.state.value == ending
        second = with_id("order-42", payload=b"other", key="k2")
        [again] = await backend.enqueue([second])
        assert not stored_as_given(second, again)
        assert again.id == "order-42"
        assert again.state is before.state
        assert again.payload == first.payload
        assert again.enqueued_at == first.enqueued_at
        # Nothing of the second was stored, nor its key taken.
        assert await get(backend, "order-42") == before
        assert [j.id for j in await backend.list_jobs()] == ["order-42"]
        fresh = r.job(key="k2")
        [stored] = await backend.enqueue([fresh])
        assert stored_as_given(fresh, stored)


@pytest.mark.parametrize("batch", [1, 3])
async def test_enqueue_id_taken_in_another_queue(backend: Backend, batch: int) -> None:
    if getattr(backend, "_cluster", False):
        pytest.skip("a Redis Cluster keeps ids unique per queue")
    with anyio.fail_after(BOUND):
        first = with_id("order-42", queue="a")
        await backend.enqueue([first])
        jobs = [with_id("order-42", queue="b", payload=b"other")]
        jobs += [with_id(f"other-{i}", queue="b") for i in range(batch - 1)]
        stored = await backend.enqueue(jobs)
        assert not stored_as_given(jobs[0], stored[0])
        assert stored[0].queue == "a"
        assert stored[0].payload == first.payload
        assert all(stored_as_given(j, s) for j, s in zip(jobs[1:], stored[1:], strict=True))
        assert (await get(backend, "order-42")).queue == "a"
        assert [j.id for j in await backend.list_jobs(queue="b")] == [j.id for j in jobs[1:]]


async def test_enqueue_same_id_twice_in_one_batch(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        first, second, other = with_id("a"), with_id("a", payload=b"other"), with_id("b")
        stored = await backend.enqueue([first, second, other])
        assert [s.id for s in stored] == ["a", "a", "b"]
        assert stored[1].payload == first.payload
        assert (await get(backend, "a")).payload == first.payload
        assert sorted(j.id for j in await backend.list_jobs()) == ["a", "b"]
        assert (await counts(backend))[JobState.QUEUED] == 2


async def test_enqueue_taken_id_in_a_large_batch(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        old = with_id("old-7")
        await finished(backend, old, r.completed)
        jobs = [with_id(f"new-{i}") for i in range(100)]
        jobs[50] = with_id("old-7", payload=b"other")
        stored = await backend.enqueue(jobs)
        assert [s.id for s in stored] == [j.id for j in jobs]
        assert [stored_as_given(j, s) for j, s in zip(jobs, stored, strict=True)] == [
            i != 50 for i in range(100)
        ]
        assert stored[50].state is JobState.COMPLETED
        assert (await counts(backend))[JobState.QUEUED] == 99


async def test_enqueue_id_is_free_again_after_purge(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        await finished(backend, with_id("order-42"), r.dead)
        purged = await backend.purge(states=[JobState.DEAD], older_than=time.time() + 1)
        assert purged == 1
        assert await backend.get("order-42") is None
        again = with_id("order-42", payload=b"again")
        [stored] = await backend.enqueue([again])
        assert stored_as_given(again, stored)
        assert (await get(backend, "order-42")).payload == b"again"
        assert (await get(backend, "order-42")).state is JobState.QUEUED


async def test_a_waited_enqueue_of_a_finished_id_reads_the_job(backend: Backend) -> None:
    waited = ENQUEUE_WAITED.of(backend)
    if waited is None:
        pytest.skip(f"{type(backend).__name__} does not implement EnqueuesWaited (optional)")
    with anyio.fail_after(BOUND):
        done = await finished(backend, with_id("order-42"), r.completed)
        again = with_id("order-42", payload=b"other")
        [stored] = await waited.enqueue_waited([again])
        assert not stored_as_given(again, stored)
        # Nothing will announce the end of a job that ended before: the wait reads it.
        with anyio.fail_after(PROMPT):
            found = await backend.wait_finished("order-42")
        assert found is not None
        assert (found.state, found.result) == (JobState.COMPLETED, done.result)
