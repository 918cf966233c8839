"""What a PostgreSQL ``wait_for_work`` knows without reading the due time.

After a claim that came up short, a wait reads the earliest due time of the
queues only if something was announced since (a job ready now), if a job due
later was announced (or a retry, or a resume) since the last read, if the due
time has come, if the last read is older than the safety-net interval, or if
the listener reconnected. Against the real server; every backend works in a
schema of its own, dropped afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import asyncpg
import pytest

from asyncq._records import Lease
from asyncq.backends.postgres import PostgresBackend

from . import _records as r

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

BOUND = 20.0
#: Longer than any test waits, so only a notification can end a wait in time.
NO_POLL = 120.0
#: How late a wait may return after the moment it should.
PROMPT = 0.5

Make = Callable[..., PostgresBackend]


@pytest.fixture
def make(make_postgres: Make) -> Make:
    """Migrated, unopened backends that poll only as a last resort (``make_postgres``'s)."""
    return partial(make_postgres, migrate=True, poll_interval=NO_POLL)


class DueReads:
    """Counts the reads of the due time ``backend`` makes from now on."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.count = 0
        fetchval = backend._transport.fetchval

        async def counted(query: str, *args: object) -> Any:
            if query == backend._sql.wait_for_work:
                self.count += 1
            return await fetchval(query, *args)

        backend._transport.fetchval = counted  # type: ignore[method-assign]


async def claim_all(backend: PostgresBackend) -> list[Lease]:
    return await backend.claim([r.QUEUE], 100, worker="w1", lease_for=60)


async def returns_after(backend: PostgresBackend, timeout: float = NO_POLL) -> float:
    started = time.monotonic()
    await backend.wait_for_work([r.QUEUE], timeout)
    return time.monotonic() - started


async def idle_worker(backend: PostgresBackend) -> DueReads:
    """Open ``backend`` and bring it where a worker's loop is: listening, drained, due time read."""
    await backend.open()
    reads = DueReads(backend)
    assert await claim_all(backend) == []
    await backend.wait_for_work([r.QUEUE], 0.01)  # listens, then reads the due time
    assert reads.count == 1
    assert await claim_all(backend) == []
    return reads


async def woken_by(backend: PostgresBackend, announce: Callable[[], Any]) -> None:
    """Wait for work while ``announce()`` runs; return once the wait ended."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(backend.wait_for_work, [r.QUEUE], NO_POLL)
        await anyio.wait_all_tasks_blocked()
        await announce()


async def test_jobs_ready_now_come_and_go_without_reading_the_due_time(make: Make) -> None:
    backend = make()
    with anyio.fail_after(BOUND):
        reads = await idle_worker(backend)
        for _ in range(5):
            await woken_by(backend, lambda: backend.enqueue([r.job()]))
            [lease] = await claim_all(backend)
            assert await backend.settle([r.completed(lease)]) == [True]
            assert await returns_after(backend, 0.05) >= 0.05  # nothing ready, nothing due
        assert reads.count == 1


async def test_a_job_due_later_is_announced_and_its_due_time_read(make: Make) -> None:
    backend = make()
    with anyio.fail_after(BOUND):
        reads = await idle_worker(backend)
        await woken_by(backend, lambda: backend.enqueue([r.job(delay=0.3)]))
        assert await claim_all(backend) == []
        assert await returns_after(backend) < 0.3 + PROMPT
        assert reads.count == 2
        assert len(await claim_all(backend)) == 1


async def test_a_retry_due_later_is_announced(make: Make) -> None:
    backend = make()
    with anyio.fail_after(BOUND):
        reads = await idle_worker(backend)
        await woken_by(backend, lambda: backend.enqueue([r.job(max_attempts=2)]))
        [lease] = await claim_all(backend)
        retry_at = time.time() + 0.3
        await woken_by(backend, lambda: backend.settle([r.failed(lease, retry_at=retry_at)]))
        assert await claim_all(backend) == []
        assert await returns_after(backend) < 0.3 + PROMPT
        assert reads.count == 2


async def test_resuming_a_queue_announces_its_jobs_due_later(make: Make) -> None:
    backend = make()
    with anyio.fail_after(BOUND):
        await backend.set_paused(r.QUEUE, True)
        await backend.enqueue([r.job(delay=0.5)])
        reads = await idle_worker(backend)  # paused: nothing due
        await woken_by(backend, lambda: backend.set_paused(r.QUEUE, False))
        assert await claim_all(backend) == []
        assert await returns_after(backend) < 0.5 + PROMPT
        assert reads.count == 2


async def test_an_unannounced_change_is_found_by_the_safety_net(
    make: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    # An operator's hand edit sends no notice: the due time as read stands
    # until the read is older than the safety-net interval.
    backend = make(poll_interval=0.2)
    with anyio.fail_after(BOUND):
        await backend.enqueue([r.job(delay=60)])
        reads = await idle_worker(backend)
        await postgres_admin.execute(
            f"UPDATE {backend.schema}.jobs SET scheduled_at = extract(epoch from now()) + 0.5"
        )
        started = time.monotonic()
        while not (leases := await claim_all(backend)):
            await backend.wait_for_work([r.QUEUE], NO_POLL)
        assert time.monotonic() - started < 0.5 + PROMPT
        assert len(leases) == 1
        assert reads.count >= 2


async def test_nothing_known_survives_a_new_listening_connection(make: Make) -> None:
    backend = make()
    with anyio.fail_after(BOUND):
        reads = await idle_worker(backend)
        await backend.close()
        await backend.open()
        assert await claim_all(backend) == []
        await backend.wait_for_work([r.QUEUE], 0.01)
        assert reads.count == 2


async def test_a_claim_that_fills_up_leaves_nothing_known(make: Make) -> None:
    backend = make()
    with anyio.fail_after(BOUND):
        reads = await idle_worker(backend)
        await backend.enqueue([r.job(), r.job()])
        assert len(await backend.claim([r.QUEUE], 1, worker="w1", lease_for=60)) == 1
        assert await returns_after(backend) < PROMPT  # the other one is ready: read, and return
        assert reads.count == 2
