"""PostgreSQL's event stream: numbers taken in open transactions, and the upgrade.

An event's number is taken when its row is inserted but seen at commit, so a
reader must not read past the number of a transaction still open (it would
never come back for it); and a schema made before the event stream migrates.
"""

from __future__ import annotations

from typing import Any

import anyio
import asyncpg
import pytest
from msgspec.structs import replace

from asyncq._events import EventKind
from asyncq._records import JobState, Lease
from asyncq.backends.postgres import PostgresBackend
from asyncq.backends.postgres import schema as pg_schema
from asyncq.backends.postgres.enqueue import COPY_MIN_BATCH
from asyncq.backends.postgres.schema import MIGRATIONS
from asyncq.backends.postgres.sql import Statements
from backends._upgrade import postgres_schema_at
from conftest import unique_namespace

from . import _records as r
from .conftest import MakePostgres

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

BOUND = 30.0


async def test_a_reader_waits_for_an_open_transaction_below_it(
    make_postgres: MakePostgres, postgres_dsn: str
) -> None:
    backend = make_postgres(migrate=True, events=True)
    with anyio.fail_after(BOUND):
        await backend.open()
        start = await backend.latest_event_id(None)
        conn: asyncpg.Connection[Any] = await asyncpg.connect(postgres_dsn)
        try:
            tx = conn.transaction()
            await tx.start()
            [early] = await backend.enqueue([r.job()], connection=conn)  # number n, not committed
            # number n + 1, committed (another queue: the open transaction holds the first's row)
            [late] = await backend.enqueue([r.job(queue="other")])
            page = await backend.read_events(after=start, queues=None, limit=100)
            assert page.events == []  # not past n while its transaction is open
            assert page.last_id == start
            await tx.commit()
        finally:
            await conn.close()
        page = await backend.read_events(after=start, queues=None, limit=100)
        assert [e.job_id for e in page.events] == [early.id, late.id]
        assert [e.kind for e in page.events] == [EventKind.ENQUEUED] * 2


async def test_a_rolled_back_number_is_passed_once_old(
    make_postgres: MakePostgres, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncq.backends.postgres import events as pg_events

    monkeypatch.setattr(pg_events, "GAP_GRACE", 0.2)
    backend = make_postgres(migrate=True, events=True)
    with anyio.fail_after(BOUND):
        await backend.open()
        start = await backend.latest_event_id(None)
        conn: asyncpg.Connection[Any] = await asyncpg.connect(postgres_dsn)
        try:
            tx = conn.transaction()
            await tx.start()
            await backend.enqueue([r.job()], connection=conn)
            [kept] = await backend.enqueue([r.job(queue="other")])
            await tx.rollback()
        finally:
            await conn.close()
        assert (await backend.read_events(after=start, queues=None, limit=10)).events == []
        await anyio.sleep(0.3)
        page = await backend.read_events(after=start, queues=None, limit=10)
        assert [e.job_id for e in page.events] == [kept.id]


async def test_a_batch_copied_in_and_a_claim_write_a_run_each(make_postgres: MakePostgres) -> None:
    # One row a queue, under one number: the events' ids are that number and a place.
    backend = make_postgres(migrate=True, events=True)
    with anyio.fail_after(BOUND):
        await backend.open()
        start = await backend.latest_event_id(None)
        jobs = await backend.enqueue([r.job() for _ in range(COPY_MIN_BATCH)])
        leases = await backend.claim([r.QUEUE], COPY_MIN_BATCH, worker="w1", lease_for=60)
        page = await backend.read_events(after=start, queues=None, limit=1000)
        numbers = [event.id.partition(".")[0] for event in page.events]
        enqueued, started = page.events[:COPY_MIN_BATCH], page.events[COPY_MIN_BATCH:]
        assert len(set(numbers[:COPY_MIN_BATCH])) == len(set(numbers[COPY_MIN_BATCH:])) == 1
        assert [e.id for e in enqueued] == [f"{numbers[0]}.{i}" for i in range(1, len(jobs) + 1)]
        assert [(e.kind, e.job_id) for e in enqueued] == [(EventKind.ENQUEUED, j.id) for j in jobs]
        assert sorted((e.kind, e.job_id, e.attempt, e.worker) for e in started) == sorted(
            (EventKind.STARTED, lease.job.id, 1, "w1") for lease in leases
        )
        assert page.last_id == numbers[-1]  # the whole run read


async def test_a_schema_before_events_is_migrated(
    make_postgres: MakePostgres, postgres_dsn: str
) -> None:
    backend = make_postgres(events=True)
    step = [step for _, step in MIGRATIONS].index(pg_schema._EVENTS) + 1
    statements = Statements(backend.schema)
    old = r.job()
    conn: asyncpg.Connection[Any] = await asyncpg.connect(postgres_dsn)
    with anyio.fail_after(BOUND):
        try:
            await conn.execute(statements.bootstrap)
            for version, (why, sql) in enumerate(statements.migrations[: step - 1], start=1):
                await conn.execute(sql)
                await conn.execute(statements.record_version, version, why)
            await conn.execute(
                f'INSERT INTO "{backend.schema}".jobs (id, name, queue, payload, state,'
                " enqueued_at, scheduled_at) VALUES ($1, $2, $3, $4, 'queued', $5, $5)",
                old.id,
                old.name,
                old.queue,
                old.payload,
                old.enqueued_at,
            )
        finally:
            await conn.close()
        assert step in await backend.migrate()
        await backend.open()
        assert await backend.job_events(old.id) == []
        [lease] = await backend.claim([old.queue], 1, worker="w1", lease_for=60)
        await backend.settle([r.completed(lease)])
        found = [event.kind for event in await backend.job_events(old.id)]
        assert found == [EventKind.STARTED, EventKind.COMPLETED]


async def test_events_written_by_triggers_are_read_after_the_upgrade(
    make_postgres: MakePostgres, postgres_admin: asyncpg.Connection[Any]
) -> None:
    # A schema whose triggers wrote a job's first events (its attempt running
    # when the upgrade came), migrated to events written by the statements.
    step = [step for _, step in MIGRATIONS].index(pg_schema._EVENTS_WRITTEN) + 1
    schema = unique_namespace()
    old = r.job()
    with anyio.fail_after(BOUND):
        await postgres_schema_at(postgres_admin, schema, step - 1, old)
        await postgres_admin.execute(
            f"UPDATE {schema}.jobs SET state = 'active', attempts = 1, worker = 'w0',"
            " token = 't0', started_at = $2::float8, lease_expires_at = $2::float8 + 60"
            " WHERE id = $1",
            old.id,
            old.enqueued_at,
        )
        backend = make_postgres(schema, events=True)
        assert step in await backend.migrate()
        await backend.open()
        history = await backend.job_events(old.id)
        assert [(e.kind, e.attempt, e.worker) for e in history] == [
            (EventKind.ENQUEUED, None, None),
            (EventKind.STARTED, 1, "w0"),
        ]
        running = r.job()
        await backend.enqueue([running])
        [lease] = await backend.claim([old.queue], 1, worker="w1", lease_for=60)
        assert lease.job.id == running.id  # the old job is still running
        await backend.settle([r.completed(lease)])
        page = await backend.read_events(after=history[-1].id, queues=None, limit=10)
        assert [(e.kind, e.job_id, e.worker) for e in page.events] == [
            (EventKind.ENQUEUED, running.id, None),
            (EventKind.STARTED, running.id, "w1"),
            (EventKind.COMPLETED, running.id, "w1"),
        ]
        # The attempt running across the upgrade ends: its lease's token names no worker.
        before = Lease(replace(old, state=JobState.ACTIVE, attempts=1), "t0", old.enqueued_at + 60)
        assert await backend.settle([r.completed(before)]) == [True]
        ended = (await backend.job_events(old.id))[-1]
        assert (ended.kind, ended.attempt, ended.worker) == (EventKind.COMPLETED, 1, None)


async def test_a_session_with_events_off_writes_none(
    make_postgres: MakePostgres, postgres_dsn: str
) -> None:
    # The backend's statements write events; a session that says otherwise
    # (a caller's connection here) writes none. A backend without events
    # writes none through a caller's connection either.
    backend = make_postgres(migrate=True, events=True)
    quiet = make_postgres(backend.schema, events=False)
    conn: asyncpg.Connection[Any] = await asyncpg.connect(
        postgres_dsn, server_settings={"asyncq.events": "off"}
    )
    plain: asyncpg.Connection[Any] = await asyncpg.connect(postgres_dsn)
    try:
        with anyio.fail_after(BOUND):
            await backend.open()
            [off] = await backend.enqueue([r.job()], connection=conn)
            [through_quiet] = await quiet.enqueue([r.job()], connection=plain)
            [on] = await backend.enqueue([r.job()], connection=plain)
            assert await backend.job_events(off.id) == []
            assert await backend.job_events(through_quiet.id) == []
            assert [e.kind for e in await backend.job_events(on.id)] == [EventKind.ENQUEUED]
    finally:
        await conn.close()
        await plain.close()


def test_events_off_is_an_option_of_the_backend() -> None:
    backend = PostgresBackend("postgresql://localhost/db", events=False)
    assert backend.events is False
    backend.events = True
    assert backend.events is True
    off = PostgresBackend.from_url("postgresql://localhost/db?events=false")
    assert off.events is False
