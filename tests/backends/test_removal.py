"""Removing jobs, retention by count, and listing newest first, on every store.

Runs through the ``backend`` fixture like the conformance suite; retention
caps need a backend made with them, so ``capped`` makes one of the same kind
(in a namespace of its own) from its options.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from msgspec.structs import replace

from asyncq._records import JobRecord, JobState
from asyncq.backends._common import optional_count, over_cap, pop_retention
from asyncq.backends.base import Backend, Retention, stored_as_given
from asyncq.exceptions import ConfigurationError
from conftest import unique_namespace

from . import _records as r
from ._records import QUEUE
from ._waits import finished_while
from .test_conformance import BOUND, LONG, claim, claim_one, counts, finished

pytestmark = pytest.mark.anyio

OTHER = "other"


async def _state_of(backend: Backend, job: JobRecord) -> JobState:
    stored = await backend.get(job.id)
    assert stored is not None
    return stored.state


# -- remove ---------------------------------------------------------------------------


async def test_remove_deletes_every_state_but_active(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        completed = await finished(backend, r.job(), r.completed)
        dead = await finished(backend, r.job(), r.dead)
        cancelled = await finished(backend, r.job(), r.cancelled)
        failed = await finished(
            backend, r.job(max_attempts=3), lambda x: r.failed(x, time.time() + LONG)
        )
        lease = await claim_one(backend, r.job())
        [queued, scheduled] = await backend.enqueue([r.job(), r.job(delay=LONG)])
        ids = [queued.id, scheduled.id, completed.id, dead.id, cancelled.id, lease.job.id]
        ids += [failed.id, "no-such-job"]

        found = await backend.remove(ids)

        assert found == [
            JobState.QUEUED,
            JobState.SCHEDULED,
            JobState.COMPLETED,
            JobState.DEAD,
            JobState.CANCELLED,
            JobState.ACTIVE,
            JobState.FAILED,
            None,
        ]
        for job_id in ids:
            if job_id != lease.job.id:
                assert await backend.get(job_id) is None
        # The running job is untouched: its worker still holds it and settles it.
        assert await _state_of(backend, lease.job) is JobState.ACTIVE
        assert await backend.settle([r.completed(lease)]) == [True]
        assert [j.id for j in await backend.list_jobs()] == [lease.job.id]
        assert await backend.claim([QUEUE], 10, worker="w", lease_for=LONG) == []
        left = await counts(backend)
        assert left[JobState.COMPLETED] == 1
        assert sum(left.values()) == 1


async def test_remove_twice_and_repeated_ids(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        [job] = await backend.enqueue([r.job()])
        assert await backend.remove([job.id, job.id]) == [JobState.QUEUED, JobState.QUEUED]
        assert await backend.remove([job.id]) == [None]
        assert await backend.remove([]) == []


async def test_a_removed_job_frees_its_id_and_key(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        done = await finished(backend, replace(r.job(key="done-7"), id="chosen-2"), r.completed)
        first = replace(r.job(key="order-7"), id="chosen-1")
        [stored] = await backend.enqueue([first])
        assert stored_as_given(first, stored)
        assert await backend.remove([first.id, done.id]) == [JobState.QUEUED, JobState.COMPLETED]

        again = replace(r.job(key="order-7", payload=b"\xa1x"), id="chosen-1")
        other_id = r.job(key="done-7")
        [stored_again, stored_other] = await backend.enqueue([again, other_id])
        assert stored_as_given(again, stored_again)
        assert stored_as_given(other_id, stored_other)
        got = await backend.get("chosen-1")
        assert got is not None
        assert got.payload == b"\xa1x"
        assert got.attempts == 0
        assert (await counts(backend))[JobState.QUEUED] == 2
        # The new job runs like any other.
        leases = await claim(backend)
        assert set(leases) == {"chosen-1", other_id.id}


async def test_waiters_on_a_removed_job_wake_and_find_no_job(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        [job] = await backend.enqueue([r.job(delay=LONG)])

        async def remove() -> None:
            assert await backend.remove([job.id]) == [JobState.SCHEDULED]

        assert await finished_while(backend, job.id, remove) is None
        assert await backend.wait_finished(job.id) is None


async def test_remove_racing_a_claim_takes_each_job_once(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        jobs = await backend.enqueue([r.job() for _ in range(40)])
        ids = [job.id for job in jobs]
        leased: dict[str, Any] = {}
        found: list[JobState | None] = []

        async def take() -> None:
            leased.update(await claim(backend, limit=40))

        async def remove() -> None:
            found.extend(await backend.remove(ids))

        async with anyio.create_task_group() as tg:
            tg.start_soon(take)
            tg.start_soon(remove)
        for job_id, state in zip(ids, found, strict=True):
            # Either the claim had it first (and it is still there, running),
            # or the removal did (and no lease was handed out for it).
            assert (state is JobState.ACTIVE) == (job_id in leased)
            assert state in (JobState.ACTIVE, JobState.QUEUED)
            assert (await backend.get(job_id) is None) == (state is JobState.QUEUED)
        left = await counts(backend)
        assert left[JobState.ACTIVE] == len(leased)
        assert left[JobState.QUEUED] == 0


async def test_remove_spans_queues_in_one_call(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        [a, b, c] = await backend.enqueue([r.job(), r.job(queue=OTHER), r.job(queue=OTHER)])
        assert await backend.remove([b.id, a.id]) == [JobState.QUEUED, JobState.QUEUED]
        assert (await counts(backend))[JobState.QUEUED] == 0
        assert (await counts(backend, OTHER))[JobState.QUEUED] == 1
        assert [j.id for j in await backend.list_jobs()] == [c.id]


# -- listing newest first ----------------------------------------------------------------


async def test_list_jobs_pages_both_ways(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        jobs = await backend.enqueue([r.job(queue=QUEUE if i % 2 else OTHER) for i in range(7)])
        ids = sorted(job.id for job in jobs)

        async def walk(newest: bool, **filters: Any) -> list[list[str]]:
            pages: list[list[str]] = []
            after = None
            while True:
                page = await backend.list_jobs(limit=3, after=after, newest=newest, **filters)
                if not page:
                    return pages
                pages.append([job.id for job in page])
                after = page[-1].id

        assert await walk(False) == [ids[0:3], ids[3:6], ids[6:]]
        down = ids[::-1]
        assert await walk(True) == [down[0:3], down[3:6], down[6:]]
        mine = sorted(job.id for job in jobs if job.queue == QUEUE)
        assert await walk(True, queue=QUEUE) == [mine[::-1]]
        # A cursor in the middle: below it, newest first; above it, oldest first.
        middle = ids[3]
        below = await backend.list_jobs(after=middle, newest=True)
        assert [j.id for j in below] == ids[:3][::-1]
        above = await backend.list_jobs(after=middle)
        assert [j.id for j in above] == ids[4:]


async def test_list_jobs_newest_by_state(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        dead = [await finished(backend, r.job(), r.dead) for _ in range(3)]
        await backend.enqueue([r.job()])
        listed = await backend.list_jobs(state=JobState.DEAD, newest=True, limit=2)
        assert [j.id for j in listed] == [dead[2].id, dead[1].id]
        rest = await backend.list_jobs(state=JobState.DEAD, newest=True, after=listed[-1].id)
        assert [j.id for j in rest] == [dead[0].id]


# -- retention by count ------------------------------------------------------------------

CAPS = {"retention_max_completed": 2, "retention_max_dead": 1, "retention_max_cancelled": 0}


def _make_capped(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if kind == "memory":
        from asyncq.backends.memory import MemoryBackend

        url = "memory://?" + "&".join(f"{k}={v}" for k, v in CAPS.items())
        return MemoryBackend.from_url(url)
    if kind == "sqlite":
        from asyncq.backends.sqlite import SQLiteBackend

        return SQLiteBackend(tmp_path / "capped.db", **CAPS)
    if kind == "fakeredis":
        import fakeredis

        from asyncq.backends.redis import RedisBackend

        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        return RedisBackend(client, namespace=unique_namespace(), **CAPS)
    if kind in ("redis", "redis-cluster"):
        from asyncq.backends.redis import RedisBackend

        if kind == "redis":
            url = request.getfixturevalue("redis_url")
        else:
            from backends._redis_cluster import cluster_url

            url = cluster_url(request.config)
        return RedisBackend.from_url(url, namespace=unique_namespace(), **CAPS)
    from asyncq.backends.postgres import PostgresBackend

    return PostgresBackend(
        request.getfixturevalue("postgres_dsn"),
        schema=unique_namespace(),
        migrate=True,
        **CAPS,
    )


@pytest.fixture
async def capped(
    request: pytest.FixtureRequest, backend_kind: str, tmp_path: Path
) -> AsyncIterator[Backend]:
    """An open backend of each kind whose retention keeps 2 completed, 1 dead, 0 cancelled."""
    instance = _make_capped(backend_kind, request, tmp_path)
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()
        drop = getattr(instance, "drop", None)
        if drop is not None and backend_kind in ("redis", "redis-cluster", "postgres"):
            await drop()


async def _finish_all(backend: Backend, jobs: list[JobRecord], end: Any) -> list[JobRecord]:
    """Run each job through one attempt ending with ``end``, one after the other."""
    return [await finished(backend, job, end) for job in jobs]


async def test_retention_caps_are_read_from_options(capped: Backend) -> None:
    assert capped.retention == Retention(max_completed=2, max_dead=1, max_cancelled=0)


async def test_prune_keeps_at_most_the_cap_per_queue_newest_first(capped: Backend) -> None:
    backend = capped
    with anyio.fail_after(BOUND):
        completed = await _finish_all(backend, [r.job() for _ in range(4)], r.completed)
        dead = await _finish_all(backend, [r.job() for _ in range(3)], r.dead)
        cancelled = await _finish_all(backend, [r.job() for _ in range(2)], r.cancelled)
        other_dead = await _finish_all(backend, [r.job(queue=OTHER)], r.dead)
        [live] = await backend.enqueue([r.job()])

        # Several workers pruning at once delete each job once, and never below the caps.
        pruned: list[int] = []

        async def prune() -> None:
            pruned.append(await backend.prune())

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(prune)
        assert sum(pruned) == 2 + 2 + 2
        assert await backend.prune() == 0

        kept = {job.id for job in await backend.list_jobs()}
        assert kept == {completed[2].id, completed[3].id, dead[2].id, other_dead[0].id, live.id}
        left = await counts(backend)
        assert left[JobState.COMPLETED] == 2
        assert left[JobState.DEAD] == 1
        assert left[JobState.CANCELLED] == 0
        assert left[JobState.QUEUED] == 1
        assert (await counts(backend, OTHER))[JobState.DEAD] == 1
        for job in cancelled:
            assert await backend.get(job.id) is None


async def test_a_cap_counts_completed_jobs_with_a_result_ttl_too(capped: Backend) -> None:
    backend = capped
    with anyio.fail_after(BOUND):
        jobs = [r.job(result_ttl=LONG * 60, key=f"k{i}") for i in range(3)]
        done = await _finish_all(backend, jobs, r.completed)
        assert await backend.prune() == 1
        assert await backend.get(done[0].id) is None
        assert [j.id for j in await backend.list_jobs()] == [done[1].id, done[2].id]
        # The pruned job's key is free; the kept ones' keys are still held.
        [again, held] = await backend.enqueue([r.job(key="k0"), r.job(key="k1")])
        assert again.id != done[0].id
        assert again.state is JobState.QUEUED
        assert held.id == done[1].id


async def test_the_default_retention_has_no_cap(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        await _finish_all(backend, [r.job() for _ in range(3)], r.dead)
        assert await backend.prune() == 0
        assert (await counts(backend))[JobState.DEAD] == 3


# -- the caps' settings ---------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_a_cap_is_a_whole_number_or_none(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_dead must be a whole number >= 0"):
        Retention(max_dead=bad)
    assert Retention(max_dead=0).keep_most(JobState.DEAD) == 0
    assert Retention().capped == ()
    assert Retention(max_cancelled=3, max_completed=1).capped == (
        (JobState.COMPLETED, 1),
        (JobState.CANCELLED, 3),
    )


def test_caps_come_from_options_like_the_ages() -> None:
    assert optional_count("none") is None
    assert optional_count("12") == 12
    for bad in ("-1", "1.5", "many"):
        with pytest.raises(ValueError, match="whole number >= 0 or 'none'"):
            optional_count(bad)
    base = Retention(max_dead=5, dead=60.0)
    options: dict[str, Any] = {"retention": base, "retention_max_completed": 7}
    assert pop_retention(options) == Retention(dead=60.0, max_dead=5, max_completed=7)
    assert options == {}


def test_over_cap_picks_the_oldest_per_queue_and_state() -> None:
    def ended(state: JobState, at: float, queue: str = QUEUE) -> JobRecord:
        return replace(r.job(queue=queue), state=state, finished_at=at)

    old, mid, new = (ended(JobState.DEAD, at) for at in (1.0, 2.0, 3.0))
    elsewhere = ended(JobState.DEAD, 0.5, OTHER)
    done = ended(JobState.COMPLETED, 0.1)
    doomed = over_cap([new, old, mid, elsewhere, done], Retention(max_dead=1))
    assert doomed == [old, mid]
    assert over_cap([new, old], Retention()) == []
