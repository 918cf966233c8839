"""The executable form of ``EnqueuesWaited`` (``asyncq/backends/base.py``).

``enqueue_waited`` must store what ``enqueue`` would, and a ``wait_finished``
that follows must end with the job however soon or late it finishes: these
tests run over the ``backend`` fixture and skip, with the reason, the backends
that do not offer the capability (``enqueue_and_wait`` uses ``enqueue`` there).
"""

from __future__ import annotations

from functools import partial

import anyio
import pytest

from asyncq._records import JobState
from asyncq.backends.base import ENQUEUE_WAITED, Backend, EnqueuesWaited

from . import _records as r
from ._records import QUEUE
from ._waits import finished_while

pytestmark = pytest.mark.anyio

BOUND = 10.0
LONG = 60.0


@pytest.fixture
def waited(backend: Backend) -> EnqueuesWaited:
    waited = ENQUEUE_WAITED.of(backend)
    if waited is None:
        pytest.skip(f"{type(backend).__name__} does not offer EnqueuesWaited (optional)")
    return waited


async def complete(backend: Backend, job_id: str, result: bytes = r.RESULT) -> None:
    (lease,) = await backend.claim([QUEUE], 1, worker="w1", lease_for=LONG)
    assert lease.job.id == job_id
    assert await backend.settle([r.completed(lease, result)]) == [True]


async def test_it_stores_what_enqueue_stores(backend: Backend, waited: EnqueuesWaited) -> None:
    with anyio.fail_after(BOUND):
        jobs = [r.job(), r.job(delay=LONG), r.job(queue="other")]
        stored = await waited.enqueue_waited(jobs)
        assert [job.id for job in stored] == [job.id for job in jobs]
        assert [job.state for job in stored] == [
            JobState.QUEUED,
            JobState.SCHEDULED,
            JobState.QUEUED,
        ]
        for job in jobs:
            got = await backend.get(job.id)
            assert got is not None
            assert got.payload == job.payload


async def test_a_held_key_returns_the_holder(backend: Backend, waited: EnqueuesWaited) -> None:
    with anyio.fail_after(BOUND):
        (first,) = await backend.enqueue([r.job(key="k")])
        again = r.job(key="k")
        (stored,) = await waited.enqueue_waited([again])
        assert stored.id == first.id
        assert await backend.get(again.id) is None
        # Waiting on the holder works as for any job.
        finished = await finished_while(backend, first.id, lambda: complete(backend, first.id))
        assert finished is not None
        assert finished.state is JobState.COMPLETED


async def test_a_wait_that_starts_first_ends_with_the_job(
    backend: Backend, waited: EnqueuesWaited
) -> None:
    with anyio.fail_after(BOUND):
        job = r.job()
        await waited.enqueue_waited([job])
        finished = await finished_while(
            backend, job.id, lambda: complete(backend, job.id, b"\xa3yes")
        )
        assert finished is not None
        assert (finished.state, finished.result) == (JobState.COMPLETED, b"\xa3yes")


async def test_a_job_that_ends_before_the_wait_starts_is_returned(
    backend: Backend, waited: EnqueuesWaited
) -> None:
    with anyio.fail_after(BOUND):
        job = r.job()
        await waited.enqueue_waited([job])
        await complete(backend, job.id, b"\xa3yes")
        finished = await backend.wait_finished(job.id)
        assert finished is not None
        assert (finished.state, finished.result) == (JobState.COMPLETED, b"\xa3yes")


async def test_many_waits_in_a_row_each_end_with_their_job(
    backend: Backend, waited: EnqueuesWaited
) -> None:
    with anyio.fail_after(BOUND):
        for n in range(20):
            job = r.job()
            await waited.enqueue_waited([job])
            result = bytes([0xA1, 0x30 + n % 10])
            end = partial(complete, backend, job.id, result)
            if n % 2:
                await end()
                finished = await backend.wait_finished(job.id)
            else:
                finished = await finished_while(backend, job.id, end)
            assert finished is not None
            assert (finished.id, finished.result) == (job.id, result)
