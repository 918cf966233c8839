"""The executable form of ``SettlesOnClaim`` (``asyncq/backends/base.py``).

``settle_and_claim`` must give the same results as ``settle`` then ``claim``:
these tests run over the ``backend`` fixture and skip, with the reason, the
backends that do not offer the capability (workers fall back to the two calls
on those).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio
import pytest

from asyncq._records import JobState, Lease, Outcome
from asyncq.backends.base import Backend, SettlesOnClaim

from . import _records as r
from ._records import QUEUE

pytestmark = pytest.mark.anyio

BOUND = 10.0
LONG = 60.0
#: Well under every wait's timeout, and well over any push latency.
PROMPT = 1.0


@pytest.fixture
def fused(backend: Backend) -> SettlesOnClaim:
    # Every backend with the method keeps its contract, not only those that list
    # SETTLE_ON_CLAIM: a Redis Cluster has it (in two round trips) without offering it.
    if not isinstance(backend, SettlesOnClaim):
        pytest.skip(f"{type(backend).__name__} does not implement SettlesOnClaim (optional)")
    return backend


async def settle_and_claim(
    backend: SettlesOnClaim,
    outcomes: Sequence[Outcome],
    limit: int = 100,
    queues: Sequence[str] = (QUEUE,),
    *,
    worker: str = "w1",
) -> tuple[list[bool], dict[str, Lease]]:
    applied, leases = await backend.settle_and_claim(
        list(outcomes), list(queues), limit, worker=worker, lease_for=LONG
    )
    by_id = {lease.job.id: lease for lease in leases}
    assert len(by_id) == len(leases), "one claim handed out a job twice"
    return applied, by_id


async def claimed(backend: Backend, limit: int = 100) -> dict[str, Lease]:
    leases = await backend.claim([QUEUE], limit, worker="w1", lease_for=LONG)
    return {lease.job.id: lease for lease in leases}


async def state(backend: Backend, job_id: str) -> JobState:
    job = await backend.get(job_id)
    assert job is not None
    return job.state


async def test_without_outcomes_it_is_a_claim(backend: Backend, fused: SettlesOnClaim) -> None:
    with anyio.fail_after(BOUND):
        jobs = [r.job(priority=p) for p in (0, 5, 1)]
        await backend.enqueue(jobs)
        applied, leases = await settle_and_claim(fused, [], limit=2)
        assert applied == []
        assert list(leases) == [jobs[1].id, jobs[2].id]
        lease = leases[jobs[1].id]
        assert lease.job.state is JobState.ACTIVE
        assert lease.job.attempts == 1
        assert lease.job.worker == "w1"
        assert await state(backend, jobs[0].id) is JobState.QUEUED


async def test_outcomes_applied_then_new_jobs_claimed(
    backend: Backend, fused: SettlesOnClaim
) -> None:
    with anyio.fail_after(BOUND):
        first = [r.job(max_attempts=2) for _ in range(4)]
        await backend.enqueue(first)
        held = await claimed(backend)
        a, b, c, d = (held[job.id] for job in first)
        fresh = [r.job() for _ in range(3)]
        await backend.enqueue(fresh)
        outcomes = [
            r.completed(a, b"\x93\x01\x02\x03"),
            r.completed(r.forged(b)),
            r.failed(c, retry_at=time.time() + LONG),
            r.dead(d),
        ]
        applied, leases = await settle_and_claim(fused, outcomes, limit=2)
        assert applied == [True, False, True, True]
        assert list(leases) == [fresh[0].id, fresh[1].id]
        done = await backend.get(a.job.id)
        assert done is not None
        assert done.state is JobState.COMPLETED
        assert done.result == b"\x93\x01\x02\x03"
        assert done.worker is None
        assert done.lease_expires_at is None
        assert [await state(backend, job.id) for job in first[1:]] == [
            JobState.ACTIVE,
            JobState.FAILED,
            JobState.DEAD,
        ]
        # The refused outcome left its lease alone: the real one still settles.
        assert await backend.settle([r.completed(b)]) == [True]
        assert await state(backend, fresh[2].id) is JobState.QUEUED


async def test_a_job_handed_back_is_claimable_by_the_same_call(
    backend: Backend, fused: SettlesOnClaim
) -> None:
    with anyio.fail_after(BOUND):
        job = r.job()
        await backend.enqueue([job])
        lease = (await claimed(backend))[job.id]
        applied, leases = await settle_and_claim(fused, [r.handed_back(lease)])
        assert applied == [True]
        again = leases[job.id]
        assert again.token != lease.token
        assert again.job.attempts == 1  # handed back untouched, then claimed afresh
        assert await backend.settle([r.completed(lease)]) == [False]
        assert await backend.settle([r.completed(again)]) == [True]


async def test_a_retry_due_now_is_claimable_by_the_same_call(
    backend: Backend, fused: SettlesOnClaim
) -> None:
    with anyio.fail_after(BOUND):
        job = r.job(max_attempts=3)
        await backend.enqueue([job])
        lease = (await claimed(backend))[job.id]
        outcome = r.failed(lease, retry_at=time.time() - 10)
        applied, leases = await settle_and_claim(fused, [outcome])
        assert applied == [True]
        again = leases[job.id]
        assert again.job.attempts == 2
        assert again.job.errors == (outcome.error,)


async def test_a_stale_outcome_never_touches_the_new_lease(
    backend: Backend, fused: SettlesOnClaim
) -> None:
    with anyio.fail_after(BOUND):
        job = r.job()
        await backend.enqueue([job])
        lease = (await claimed(backend))[job.id]
        await backend.settle([r.handed_back(lease)])
        # The same outcome again is stale, whatever the claim in the call takes.
        applied, leases = await settle_and_claim(fused, [r.completed(lease)])
        assert applied == [False]
        again = leases[job.id]
        assert await state(backend, job.id) is JobState.ACTIVE
        assert await backend.settle([r.completed(again)]) == [True]


async def test_limit_zero_settles_and_claims_nothing(
    backend: Backend, fused: SettlesOnClaim
) -> None:
    with anyio.fail_after(BOUND):
        job, waiting = r.job(), r.job()
        await backend.enqueue([job])
        lease = (await claimed(backend))[job.id]
        await backend.enqueue([waiting])
        applied, leases = await settle_and_claim(fused, [r.completed(lease)], limit=0)
        assert (applied, leases) == ([True], {})
        assert await state(backend, job.id) is JobState.COMPLETED
        assert await state(backend, waiting.id) is JobState.QUEUED


async def test_paused_queues_are_skipped(backend: Backend, fused: SettlesOnClaim) -> None:
    with anyio.fail_after(BOUND):
        job, other = r.job(), r.job(queue="paused")
        await backend.enqueue([job, other])
        lease = (await claimed(backend))[job.id]
        await backend.set_paused("paused", True)
        applied, leases = await settle_and_claim(
            fused, [r.completed(lease)], queues=["paused", QUEUE]
        )
        assert (applied, leases) == ([True], {})
        await backend.set_paused("paused", False)
        _, leases = await settle_and_claim(fused, [], queues=["paused"])
        assert list(leases) == [other.id]


async def test_a_bad_outcome_refuses_the_whole_call(
    backend: Backend, fused: SettlesOnClaim
) -> None:
    with anyio.fail_after(BOUND):
        job, waiting = r.job(), r.job()
        await backend.enqueue([job])
        lease = (await claimed(backend))[job.id]
        await backend.enqueue([waiting])
        bad = Outcome(job_id=lease.job.id, token=lease.token, state=JobState.ACTIVE)
        with pytest.raises(ValueError, match="not an outcome"):
            await settle_and_claim(fused, [r.completed(lease), bad])
        assert await state(backend, job.id) is JobState.ACTIVE
        assert await state(backend, waiting.id) is JobState.QUEUED


async def test_completion_wakes_waiters(backend: Backend, fused: SettlesOnClaim) -> None:
    with anyio.fail_after(BOUND):
        job = r.job()
        await backend.enqueue([job])
        lease = (await claimed(backend))[job.id]
        finished: list[JobState] = []

        async def wait() -> None:
            got = await backend.wait_finished(job.id)
            assert got is not None
            finished.append(got.state)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            # The waiter is (most likely) blocked by now: this is the push path.
            await anyio.sleep(0.1)
            ended = time.monotonic()
            await settle_and_claim(fused, [r.completed(lease)])
        assert time.monotonic() - ended < PROMPT
        assert finished == [JobState.COMPLETED]
