"""The job event stream on every store (``HasEvents``, ``EVENTS`` in ``base.py``).

Runs through the ``backend`` fixture like the conformance suite: each store
writes the same events, in the same order, for the same changes; a reader
resumes after an id without losing or repeating one; and a reader the
store's retention overtook is told how many it lost.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncq._annotations import log_line
from asyncq._events import EventKind, JobEvent
from asyncq._records import ErrorKind, JobState, Lease
from asyncq.backends.base import EVENTS, Backend, HasEvents
from conftest import unique_namespace

from . import _records as r
from ._records import QUEUE
from .test_conformance import BOUND, LONG, claim_one

pytestmark = pytest.mark.anyio

OTHER = "other"


def stream(backend: Backend) -> HasEvents:
    events = EVENTS.of(backend)
    assert events is not None, f"{backend.url} does not offer the event stream"
    return events


async def read_all(
    events: HasEvents, after: str | None = None, queues: Sequence[str] | None = None
) -> list[JobEvent]:
    page = await events.read_events(after=after, queues=queues, limit=10_000)
    assert page.lost == 0
    return page.events


async def claim(
    backend: Backend,
    limit: int,
    *,
    queues: Sequence[str] = (QUEUE,),
    worker: str = "w1",
    lease_for: float = LONG,
) -> list[Lease]:
    return await backend.claim(list(queues), limit, worker=worker, lease_for=lease_for)


def kinds(events: Sequence[JobEvent]) -> list[tuple[EventKind, int | None]]:
    return [(event.kind, event.attempt) for event in events]


async def test_a_job_that_retries_twice_then_completes(backend: Backend) -> None:
    events = stream(backend)
    with anyio.fail_after(BOUND):
        start = await events.latest_event_id(None)
        [job] = await backend.enqueue([r.job(max_attempts=3)])
        for attempt in (1, 2):
            [lease] = await claim(backend, 1, worker=f"w{attempt}")
            assert await backend.settle([r.failed(lease, time.time() - 1)]) == [True]
        [lease] = await claim(backend, 1, worker="w3")
        assert await backend.settle([r.completed(lease)]) == [True]

        history = await events.job_events(job.id)
        assert kinds(history) == [
            (EventKind.ENQUEUED, None),
            (EventKind.STARTED, 1),
            (EventKind.RETRYING, 1),
            (EventKind.STARTED, 2),
            (EventKind.RETRYING, 2),
            (EventKind.STARTED, 3),
            (EventKind.COMPLETED, 3),
        ]
        # The stream from before the enqueue holds the same events, in order.
        assert await read_all(events, start) == history
        assert all((e.job_id, e.name, e.queue) == (job.id, r.NAME, QUEUE) for e in history)
        assert len({e.id for e in history}) == len(history)
        assert [e.worker for e in history[1:]] == ["w1", "w1", "w2", "w2", "w3", "w3"]
        retrying = history[2]
        assert retrying.error is not None
        assert (retrying.error.kind, retrying.error.message) == (ErrorKind.ERROR, "boom")
        assert retrying.due is not None
        assert retrying.due < time.time()
        completed = history[-1]
        assert completed.duration is not None
        assert 0 <= completed.duration < BOUND
        ats = [e.at for e in history]
        assert ats == sorted(ats)
        assert abs(ats[0] - time.time()) < BOUND


async def test_a_job_cancelled_while_running(backend: Backend) -> None:
    events = stream(backend)
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        cancelled = await backend.cancel(lease.job.id)
        assert cancelled is not None
        assert cancelled.state is JobState.ACTIVE
        reply = await backend.heartbeat([lease], lease_for=LONG)
        assert reply.cancel == {lease.job.id}
        assert await backend.settle([r.cancelled(lease)]) == [True]

        history = await events.job_events(lease.job.id)
        assert kinds(history) == [
            (EventKind.ENQUEUED, None),
            (EventKind.STARTED, 1),
            (EventKind.CANCELLED, 1),
        ]
        assert history[-1].by == "worker"
        assert history[-1].error is not None
        assert history[-1].error.kind is ErrorKind.CANCELLED


async def test_a_job_cancelled_before_it_runs(backend: Backend) -> None:
    events = stream(backend)
    with anyio.fail_after(BOUND):
        [job, by_default] = await backend.enqueue([r.job(delay=LONG), r.job(delay=LONG)])
        await backend.cancel(job.id, by="cli")
        history = await events.job_events(job.id)
        assert kinds(history) == [(EventKind.ENQUEUED, None), (EventKind.CANCELLED, None)]
        assert history[0].due is not None
        assert abs(history[0].due - job.scheduled_at) < 0.01
        assert history[1].by == "cli"
        await backend.cancel(by_default.id)
        assert (await events.job_events(by_default.id))[-1].by == "api"


async def test_a_dead_job_retried_by_an_operator(backend: Backend) -> None:
    events = stream(backend)
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        assert await backend.settle([r.dead(lease)]) == [True]
        assert await backend.retry_dead([lease.job.id]) == [lease.job.id]
        [again] = await claim(backend, 1)
        assert await backend.settle([r.completed(again)]) == [True]
        assert await backend.remove([lease.job.id]) == [JobState.COMPLETED]

        history = await events.job_events(lease.job.id)
        assert kinds(history) == [
            (EventKind.ENQUEUED, None),
            (EventKind.STARTED, 1),
            (EventKind.DEAD, 1),
            (EventKind.RETRIED, None),
            (EventKind.STARTED, 1),
            (EventKind.COMPLETED, 1),
            (EventKind.REMOVED, None),
        ]
        assert history[2].error is not None
        assert history[2].error.kind is ErrorKind.REJECT
        assert [history[3].by, history[6].by] == ["operator", "operator"]


async def test_progress_and_log_lines_are_events(backend: Backend) -> None:
    events = stream(backend)
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        assert await backend.progress(lease, 0.5, b'{"step":"resize"}')
        lines = [
            log_line(time.time(), 1, "warning", "slow disk"),
            log_line(time.time(), 1, "info", "ok"),
        ]
        assert await backend.log(lease, lines)
        history = await events.job_events(lease.job.id)
        assert [e.kind for e in history] == [
            EventKind.ENQUEUED,
            EventKind.STARTED,
            EventKind.PROGRESS,
            EventKind.LOG,
            EventKind.LOG,
        ]
        assert (history[2].progress, history[2].detail) == (0.5, {"step": "resize"})
        assert [(e.level, e.message) for e in history[3:]] == [
            ("warning", "slow disk"),
            ("info", "ok"),
        ]


async def test_a_lapsed_lease_is_a_recovered_event(backend: Backend) -> None:
    events = stream(backend)
    with anyio.fail_after(BOUND):
        [job] = await backend.enqueue([r.job(max_attempts=2)])
        [lease] = await claim(backend, 1, worker="gone", lease_for=0.05)
        await anyio.sleep(0.2)  # the lease must lapse by the store's clock
        assert await backend.recover() == 1
        history = await events.job_events(job.id)
        assert kinds(history)[-1] == (EventKind.RECOVERED, 1)
        assert history[-1].worker == "gone"
        assert history[-1].error is not None
        assert history[-1].error.kind is ErrorKind.LOST
        assert lease.job.id == job.id


async def test_resume_after_an_id_loses_nothing_and_repeats_nothing(backend: Backend) -> None:
    events = stream(backend)
    with anyio.fail_after(BOUND):
        start = await events.latest_event_id(None)
        await backend.enqueue([r.job() for _ in range(5)])
        await backend.enqueue([r.job(queue=OTHER) for _ in range(2)])
        leases = await claim(backend, 10, queues=[QUEUE, OTHER])
        await backend.settle([r.completed(lease) for lease in leases])
        everything = await read_all(events, start)
        assert len(everything) == 7 * 3

        seen: list[JobEvent] = []
        after = start
        while True:  # a reader that stops after every page and resumes from its last id
            page = await events.read_events(after=after, queues=None, limit=4)
            assert page.lost == 0
            if not page.events:
                assert page.last_id == after
                break
            seen += page.events
            after = page.last_id
        assert seen == everything

        only_other = await read_all(events, start, queues=[OTHER])
        assert only_other == [e for e in everything if e.queue == OTHER]
        assert await read_all(events, after) == []


async def test_one_write_of_several_queues_keeps_its_order(backend: Backend) -> None:
    events = stream(backend)
    with anyio.fail_after(BOUND):
        start = await events.latest_event_id(None)
        await backend.enqueue([r.job(queue=q) for q in (QUEUE, QUEUE, OTHER, QUEUE)])
        leases = await claim(backend, 4, queues=[QUEUE, OTHER])
        by_queue = {q: [lease for lease in leases if lease.job.queue == q] for q in (QUEUE, OTHER)}
        # settled in one call, the queues interleaved
        order = [by_queue[QUEUE][0], by_queue[OTHER][0], by_queue[QUEUE][1], by_queue[QUEUE][2]]
        await backend.settle([r.completed(lease) for lease in order])
        everything = await read_all(events, start)
        for queue in (QUEUE, OTHER):
            # in the order written within a queue (Redis orders queues by time only)
            mine = [e for e in everything if e.queue == queue]
            assert [e.job_id for e in mine if e.kind is EventKind.COMPLETED] == [
                lease.job.id for lease in order if lease.job.queue == queue
            ]
            assert await read_all(events, start, queues=[queue]) == mine
        for lease in order:
            assert [e.kind for e in await events.job_events(lease.job.id)] == [
                EventKind.ENQUEUED,
                EventKind.STARTED,
                EventKind.COMPLETED,
            ]


async def test_a_large_batch_has_an_event_per_job_read_and_resumed_anywhere(
    backend: Backend,
) -> None:
    # Large enough to take each store's bulk path (PostgreSQL copies in 32 jobs
    # or more, and writes runs: see test_events_postgres); two queues, and in
    # one of them two names.
    events = stream(backend)
    with anyio.fail_after(BOUND):
        start = await events.latest_event_id(None)
        batch = [r.job(name=f"tests.n{i % 2}") for i in range(20)]
        batch += [r.job(queue=OTHER) for _ in range(20)]
        await backend.enqueue(batch)
        everything = await read_all(events, start)
        for queue in QUEUE, OTHER:  # in order per queue (Redis merges queues by time)
            assert [(e.kind, e.job_id, e.name) for e in everything if e.queue == queue] == [
                (EventKind.ENQUEUED, job.id, job.name) for job in batch if job.queue == queue
            ]
        assert len({e.id for e in everything}) == len(everything) == len(batch)

        seen: list[JobEvent] = []
        after = start
        while True:  # pages that end inside the batch, each read resumed from the last id
            page = await events.read_events(after=after, queues=None, limit=7)
            assert page.lost == 0
            if not page.events:
                break
            seen += page.events
            after = page.last_id
        assert seen == everything
        for event in everything[5], everything[25]:
            assert await read_all(events, event.id) == everything[everything.index(event) + 1 :]
            assert [e.job_id for e in await events.job_events(event.job_id)] == [event.job_id]
        assert await read_all(events, start, queues=[OTHER]) == [
            e for e in everything if e.queue == OTHER
        ]
        woke = anyio.Event()

        async def wait(after: str) -> None:
            await events.wait_for_events([OTHER], after, LONG)
            woke.set()

        async with anyio.create_task_group() as tg:  # more after an id inside the batch
            tg.start_soon(wait, [e for e in everything if e.queue == OTHER][-2].id)
        assert woke.is_set()

        # One claim of them all: each job's started event, with its attempt and worker.
        leases = await claim(backend, len(batch), queues=[QUEUE, OTHER], worker="w9")
        after = everything[-1].id
        started: list[JobEvent] = []
        while page := (await events.read_events(after=after, queues=None, limit=7)).events:
            started += page
            after = page[-1].id
        assert sorted((e.job_id, e.kind, e.attempt, e.worker) for e in started) == sorted(
            (lease.job.id, EventKind.STARTED, 1, "w9") for lease in leases
        )
        assert len(leases) == len(batch)
        job = leases[-1].job
        assert [e.kind for e in await events.job_events(job.id)] == [
            EventKind.ENQUEUED,
            EventKind.STARTED,
        ]


async def test_two_readers_see_the_same_sequence(backend: Backend) -> None:
    events = stream(backend)
    with anyio.fail_after(BOUND):
        start = await events.latest_event_id(None)
        seen: list[list[JobEvent]] = [[], []]
        wanted = 6

        async def follow(into: list[JobEvent]) -> None:
            after = start
            while len(into) < wanted:
                await events.wait_for_events([QUEUE], after, 1.0)
                page = await events.read_events(after=after, queues=[QUEUE], limit=100)
                into += page.events
                after = page.last_id

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow, seen[0])
            tg.start_soon(follow, seen[1])
            for _ in range(2):
                lease = await claim_one(backend, r.job())
                await backend.settle([r.completed(lease)])
        assert seen[0] == seen[1]
        assert [e.kind for e in seen[0]] == [
            EventKind.ENQUEUED,
            EventKind.STARTED,
            EventKind.COMPLETED,
        ] * 2


async def test_wait_for_events_returns_early_on_a_new_event(backend: Backend) -> None:
    events = stream(backend)
    with anyio.fail_after(BOUND):
        after = await events.latest_event_id(None)
        woke = anyio.Event()

        async def wait() -> None:
            await events.wait_for_events([QUEUE], after, LONG)
            woke.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.05)
            assert not woke.is_set()
            await backend.enqueue([r.job()])
            with anyio.fail_after(5.0):  # within the store's wake-up (SQLite: its poll)
                await woke.wait()


async def test_a_bad_event_id_is_refused(backend: Backend) -> None:
    with pytest.raises(ValueError, match="not an event id"):
        await stream(backend).read_events(after="not-an-id", queues=None, limit=10)


# -- retention ---------------------------------------------------------------------


def _make_with(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, **options: Any
) -> Backend:
    """A backend of ``kind`` in a namespace of its own, made with ``options`` (events on)."""
    options.setdefault("events", True)
    if kind == "memory":
        from asyncq.backends.memory import MemoryBackend

        return MemoryBackend.from_url("memory://", **options)
    if kind == "sqlite":
        from asyncq.backends.sqlite import SQLiteBackend

        return SQLiteBackend(tmp_path / f"{unique_namespace()}.db", **options)
    if kind == "fakeredis":
        import fakeredis

        from asyncq.backends.redis import RedisBackend

        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        return RedisBackend(client, namespace=unique_namespace(), **options)
    if kind in ("redis", "redis-cluster"):
        from asyncq.backends.redis import RedisBackend

        if kind == "redis":
            url = request.getfixturevalue("redis_url")
        else:
            from backends._redis_cluster import cluster_url

            url = cluster_url(request.config)
        return RedisBackend.from_url(url, namespace=unique_namespace(), **options)
    from asyncq.backends.postgres import PostgresBackend

    return PostgresBackend(
        request.getfixturevalue("postgres_dsn"),
        schema=unique_namespace(),
        migrate=True,
        **options,
    )


@pytest.fixture
async def made(
    request: pytest.FixtureRequest, backend_kind: str, tmp_path: Path
) -> AsyncIterator[Any]:
    """``made(**options)``: an open backend of each kind with options; closed and dropped after."""
    opened: list[Backend] = []

    async def factory(**options: Any) -> Backend:
        instance = _make_with(backend_kind, request, tmp_path, **options)
        await instance.open()
        opened.append(instance)
        return instance

    yield factory
    for instance in opened:
        await instance.close()
        drop = getattr(instance, "drop", None)
        if drop is not None and backend_kind in ("redis", "redis-cluster", "postgres"):
            await drop()


async def test_a_reader_overtaken_by_retention_is_told_how_many_it_lost(
    made: Any, backend_kind: str
) -> None:
    backend: Backend = await made(retention_max_events=3)
    events = stream(backend)
    with anyio.fail_after(BOUND):
        start = await events.latest_event_id(None)
        jobs = await backend.enqueue([r.job() for _ in range(5)])
        first = (await read_all(events, start))[0]
        assert first.job_id == jobs[0].id
        await backend.prune()
        page = await events.read_events(after=first.id, queues=None, limit=100)
        # Five enqueued events, three kept: the reader after the first lost one.
        # Redis counts by trim (the first two went in one): at most that many.
        if "redis" in backend_kind:
            assert 1 <= page.lost <= 2
        else:
            assert page.lost == 1
        assert [e.job_id for e in page.events] == [job.id for job in jobs[2:]]
        # A reader from the start (no id) reads what is kept and loses nothing.
        page = await events.read_events(after=None, queues=None, limit=100)
        assert (page.lost, len(page.events)) == (0, 3)
        # A reader up to date loses nothing.
        page = await events.read_events(after=page.last_id, queues=None, limit=100)
        assert (page.lost, page.events) == (0, [])


async def test_pruning_again_across_several_writes_counts_what_each_reader_lost(
    made: Any, backend_kind: str
) -> None:
    backend: Backend = await made(retention_max_events=4)
    events = stream(backend)
    with anyio.fail_after(BOUND):
        start = await events.latest_event_id(None)
        first = await backend.enqueue([r.job() for _ in range(3)])
        second = await backend.enqueue([r.job() for _ in range(3)])
        written = await read_all(events, start)
        await backend.prune()  # keeps the last of the first write and the second write
        page = await events.read_events(after=written[0].id, queues=None, limit=100)
        assert [e.job_id for e in page.events] == [job.id for job in (*first[2:], *second)]
        third = await backend.enqueue([r.job() for _ in range(2)])
        await backend.prune()  # keeps the last two of the second write and the third
        page = await events.read_events(after=written[2].id, queues=None, limit=2)
        if "redis" in backend_kind:  # counted by trim: at most the three trimmed since
            assert 1 <= page.lost <= 3
        else:
            assert page.lost == 1
        assert [e.job_id for e in page.events] == [job.id for job in second[1:]]
        page = await events.read_events(after=page.last_id, queues=None, limit=100)
        assert (page.lost, [e.job_id for e in page.events]) == (0, [job.id for job in third])


async def test_events_older_than_their_retention_are_pruned(made: Any) -> None:
    backend: Backend = await made(retention_events=0.0)
    events = stream(backend)
    with anyio.fail_after(BOUND):
        [job] = await backend.enqueue([r.job()])
        [later] = await backend.enqueue([r.job()])
        assert len(await events.job_events(job.id)) == 1
        await anyio.sleep(0.05)
        await backend.prune()
        # The older event is gone (a store may keep the newest, to number on from it).
        assert await events.job_events(job.id) == []
        assert (await backend.get(job.id)) is not None
        assert len(await events.job_events(later.id)) <= 1


async def test_events_off_writes_nothing(made: Any) -> None:
    backend: Backend = await made(events=False)
    events = stream(backend)
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        await backend.settle([r.completed(lease)])
        assert await events.job_events(lease.job.id) == []
        assert (await events.read_events(after=None, queues=None, limit=10)).events == []
