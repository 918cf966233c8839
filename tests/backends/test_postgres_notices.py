"""PostgreSQL completion notices that carry the finished job.

A settlement's notice on ``<schema>:done`` carries each finished job that
fits in a notification, and ``wait_finished`` returns it without reading the
job again; a job too large for a notice, a backend with ``carry_jobs=False``
and anything sent by someone else fall back to a read. Against the real
server; every backend works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest
from msgspec.structs import replace

from asyncq._records import ErrorInfo, ErrorKind, JobRecord, JobState, Lease, Outcome
from asyncq.backends.postgres import PostgresBackend, codec

from . import _records as r

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

BOUND = 20.0
#: Longer than any test waits, so only a notification can end a wait in time.
NO_POLL = 120.0

Make = Callable[..., PostgresBackend]


@pytest.fixture
def make(make_postgres: Make) -> Make:
    """Migrated, unopened backends that poll only as a last resort (``make_postgres``'s)."""
    return partial(make_postgres, migrate=True, poll_interval=NO_POLL)


class Reads:
    """The ids ``backend.get`` is called with from now on."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.ids: list[str] = []
        self._more = anyio.Event()
        get = backend.get

        async def counted(job_id: str) -> JobRecord | None:
            self.ids.append(job_id)
            self._more.set()
            return await get(job_id)

        backend.get = counted  # type: ignore[method-assign]

    async def reach(self, count: int) -> None:
        """Return once ``count`` reads were made (a notice travels on a connection of its own)."""
        while len(self.ids) < count:
            await self._more.wait()
            self._more = anyio.Event()


async def settle_while_waiting(
    backend: PostgresBackend, leases: list[Lease], outcomes: list[Outcome]
) -> dict[str, JobRecord | None]:
    """Wait for every leased job, then settle ``outcomes`` in one call; what the waits returned."""
    got: dict[str, JobRecord | None] = {}

    async def wait(job_id: str) -> None:
        got[job_id] = await backend.wait_finished(job_id)

    async with anyio.create_task_group() as tg:
        for lease in leases:
            tg.start_soon(wait, lease.job.id)
        await anyio.wait_all_tasks_blocked()
        assert all(await backend.settle(outcomes))
    return got


async def claimed(backend: PostgresBackend, *jobs: JobRecord) -> list[Lease]:
    await backend.enqueue(list(jobs))
    leases = await backend.claim([r.QUEUE], len(jobs), worker="w1", lease_for=60)
    assert len(leases) == len(jobs)
    return leases


@pytest.mark.parametrize("ending", [r.completed, r.dead, r.cancelled])
async def test_a_waiter_gets_the_finished_job_from_the_notice(
    make: Make, ending: Callable[[Lease], Outcome]
) -> None:
    backend = make()
    with anyio.fail_after(BOUND):
        await backend.open()
        [lease] = await claimed(backend, r.job(headers={"traceparent": "00-ab-cd-01"}))
        reads = Reads(backend)
        got = await settle_while_waiting(backend, [lease], [ending(lease)])
        # One read before the wait (subscribe, then read), none after the notice;
        # and the record is exactly the one stored, to the last bit of every float.
        assert reads.ids == [lease.job.id]
        stored = await backend.get(lease.job.id)
    assert got[lease.job.id] == stored
    assert stored is not None
    assert stored.state in (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED)


@pytest.mark.parametrize("order", ["wait first", "end first"])
async def test_a_job_stored_for_a_waiter_is_not_read_by_it(make: Make, order: str) -> None:
    backend = make()
    with anyio.fail_after(BOUND):
        await backend.open()
        reads = Reads(backend)
        ids: list[str] = []
        for _ in range(3):
            (job,) = await backend.enqueue_waited([r.job()])
            ids.append(job.id)
            (lease,) = await backend.claim([r.QUEUE], 1, worker="w1", lease_for=60)
            if order == "wait first":
                got = await settle_while_waiting(backend, [lease], [r.completed(lease)])
                record = got[job.id]
            else:
                assert await backend.settle([r.completed(lease)]) == [True]
                record = await backend.wait_finished(job.id)
            stored = await backend.get(job.id)
            assert record == stored
            assert stored is not None
            assert stored.state is JobState.COMPLETED
    # Only the checks above read: the waits took each job from its notice.
    assert reads.ids == ids


async def test_a_job_stored_for_a_waiter_is_read_after_the_listener_was_lost(
    make: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    backend = make()
    with anyio.fail_after(BOUND):
        await backend.open()
        (job,) = await backend.enqueue_waited([r.job()])
        (lease,) = await backend.claim([r.QUEUE], 1, worker="w1", lease_for=60)
        # The listening connection goes between the enqueue and the wait.
        conn = backend._listener.connection
        assert conn is not None
        await postgres_admin.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        # The driver reports the end on its own time; nothing to await but that.
        while backend._listener.connection is not None:  # noqa: ASYNC110
            await anyio.sleep(0.01)
        reads = Reads(backend)
        got = await settle_while_waiting(backend, [lease], [r.completed(lease)])
        assert reads.ids == [job.id]  # read once, since its end may have gone unheard
        record = got[job.id]
        assert record is not None
        assert record.state is JobState.COMPLETED


async def test_a_result_too_large_for_a_notice_is_read(make: Make) -> None:
    backend = make()
    with anyio.fail_after(BOUND):
        await backend.open()
        # A payload of any size stays out of the notice.
        [small, large] = await claimed(backend, r.job(payload=b"\x01" * 9000), r.job())
        reads = Reads(backend)
        # One notice with the small result and the large one's id, then one alone.
        outcomes = [r.completed(small), r.completed(large, result=b"\xc4" * 7000)]
        got = await settle_while_waiting(backend, [small, large], outcomes)
        [single] = await claimed(backend, r.job())
        got_single = await settle_while_waiting(
            backend, [single], [r.completed(single, result=b"\xc4" * 7000)]
        )
        # The large results are read again after the notice; the small one is not.
        assert {job_id: reads.ids.count(job_id) for job_id in reads.ids} == {
            small.job.id: 1,
            large.job.id: 2,
            single.job.id: 2,
        }
    for lease in (small, large):
        assert got[lease.job.id] == await backend.get(lease.job.id)
    assert got_single[single.job.id] == await backend.get(single.job.id)


async def test_many_finished_jobs_are_split_across_notices(
    make: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    backend = make()
    payloads: list[str] = []
    all_sent = anyio.Event()

    def heard(conn: object, pid: int, channel: str, payload: str) -> None:
        payloads.append(payload)
        if sum(len(msgspec.json.decode(p)) for p in payloads) == 60:
            all_sent.set()

    await postgres_admin.add_listener(f"{backend.schema}:done", heard)
    with anyio.fail_after(BOUND):
        await backend.open()
        leases = await claimed(backend, *(r.job() for _ in range(60)))
        reads = Reads(backend)
        results = [bytes([i]) * 1500 for i in range(60)]
        outcomes = [
            r.completed(lease, result) for lease, result in zip(leases, results, strict=True)
        ]
        got = await settle_while_waiting(backend, leases, outcomes)
        await all_sent.wait()
    assert len(payloads) > 10
    assert all(len(p.encode()) < 8000 for p in payloads)
    assert sorted(reads.ids) == sorted(lease.job.id for lease in leases)  # one each, before
    for lease, result in zip(leases, results, strict=True):
        record = got[lease.job.id]
        assert record is not None
        assert record.result == result


async def test_errors_and_retries_travel_intact(make: Make) -> None:
    backend = make()
    with anyio.fail_after(BOUND):
        await backend.open()
        [lease] = await claimed(backend, r.job(max_attempts=2))
        await backend.settle([r.failed(lease, retry_at=0.0, message="first")])
        [again] = await backend.claim([r.QUEUE], 1, worker="w1", lease_for=60)
        error = ErrorInfo(
            kind=ErrorKind.ERROR,
            message='a "quoted"\nmessage, \\ and ünïcode',
            attempt=2,
            at=1_700_000_000.123456,
            type="ValueError",
            traceback="Traceback (most recent call last):\n  ...",
        )
        outcome = Outcome(job_id=again.job.id, token=again.token, state=JobState.DEAD, error=error)
        got = await settle_while_waiting(backend, [again], [outcome])
        stored = await backend.get(again.job.id)
    record = got[again.job.id]
    assert record == stored
    assert record is not None
    assert [e.message for e in record.errors] == ["first", error.message]


async def test_without_carry_jobs_waiters_read(make: Make) -> None:
    backend = make(carry_jobs=False)
    with anyio.fail_after(BOUND):
        await backend.open()
        [lease] = await claimed(backend, r.job())
        reads = Reads(backend)
        got = await settle_while_waiting(backend, [lease], [r.completed(lease)])
    assert reads.ids == [lease.job.id, lease.job.id]
    record = got[lease.job.id]
    assert record is not None
    assert record.state is JobState.COMPLETED


@pytest.mark.parametrize("carry_jobs", [True, False])
async def test_a_carried_job_is_taken_only_with_carry_jobs(
    make: Make, postgres_admin: asyncpg.Connection[Any], carry_jobs: bool
) -> None:
    # A look-alike notice from another session wakes the waiter either way;
    # with carry_jobs=False its job is ignored and the waiter reads the store.
    backend = make(carry_jobs=carry_jobs)
    with anyio.fail_after(BOUND):
        await backend.open()
        [lease] = await claimed(backend, r.job())
        reads = Reads(backend)
        other = [lease.job.id, "completed", 1, 1.0, 1.0, 2.0, "b3RoZXI=", [], None, False]
        got: list[JobRecord | None] = []

        async def wait() -> None:
            got.append(await backend.wait_finished(lease.job.id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            notice = msgspec.json.encode([other]).decode()
            await postgres_admin.execute(
                "SELECT pg_notify($1, $2)", f"{backend.schema}:done", notice
            )
            if not carry_jobs:
                await reads.reach(2)  # woken, read the job: still active
                await anyio.wait_all_tasks_blocked()
                assert not got
                await backend.settle([r.completed(lease)])
    [record] = got
    assert record is not None
    assert record.result == (b"other" if carry_jobs else r.RESULT)


async def test_a_malformed_carried_job_falls_back_to_a_read(
    make: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    backend = make()
    with anyio.fail_after(BOUND):
        await backend.open()
        [lease] = await claimed(backend, r.job())
        reads = Reads(backend)
        got: list[JobRecord | None] = []

        async def wait() -> None:
            got.append(await backend.wait_finished(lease.job.id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            bad = msgspec.json.encode([[lease.job.id, "not", "a", "job"], 7, {"a": 1}]).decode()
            await postgres_admin.execute("SELECT pg_notify($1, $2)", f"{backend.schema}:done", bad)
            await reads.reach(2)  # woken, read the job: still active
            await anyio.wait_all_tasks_blocked()
            assert not got
            assert await backend.settle([r.completed(lease)]) == [True]
        assert reads.ids == [lease.job.id, lease.job.id]
        [record] = got
        assert record == await backend.get(lease.job.id)


def test_read_done_reads_ids_and_finishes() -> None:
    job = r.job()
    finish = [job.id, "dead", 2, 1.5, 5.5, 6.25, None, [], 0.5, True]
    ahead = ["d", "queued", 1, 1.0, None, None, None, [], None, False]
    items = ["a", finish, ["b", "junk"], 3, {"x": 1}, "c", ahead]
    payload = msgspec.json.encode(items).decode()
    found = dict(codec.read_done(payload, {"a", job.id, "b", "d"}))
    # Ids alone, a Finish, one that is not, and one of a state not terminal.
    assert found.keys() == {"a", job.id, "b", "d"}
    assert found["a"] is None
    assert found["b"] is None
    assert found["d"] is None
    decoded = found[job.id]
    assert decoded is not None
    stored = replace(job, state=JobState.ACTIVE, attempts=2, worker="w1", lease_expires_at=9.0)
    assert decoded.applied_to(stored) == replace(
        job,
        state=JobState.DEAD,
        attempts=2,
        scheduled_at=1.5,
        started_at=5.5,
        finished_at=6.25,
        progress=0.5,
        cancel_requested=True,
    )
    assert codec.read_done(payload, set()) == []
    with pytest.raises(msgspec.DecodeError):
        codec.read_done('{"a": 1}', {"a"})
