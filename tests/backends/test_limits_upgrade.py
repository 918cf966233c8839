"""A store made before flow control upgrades: its jobs run as before, and limits hold after.

The limit columns, tables and functions come with a migration step: a
database at the step before it opens (SQLite) or migrates (PostgreSQL); a job
stored before the upgrade is claimed as a plain job, and jobs with limits
stored after it are held back by them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest
from msgspec.structs import replace

from asyncq._records import Gate, JobRecord, Lease
from asyncq.backends.postgres import PostgresBackend
from asyncq.backends.postgres import schema as pg_schema
from asyncq.backends.postgres.schema import MIGRATIONS as PG_MIGRATIONS
from asyncq.backends.sqlite import SQLiteBackend
from asyncq.backends.sqlite import schema as sqlite_schema
from asyncq.backends.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from asyncq.backends.sqlite.schema import SCHEMA_VERSION
from backends._upgrade import postgres_schema_at, sqlite_file_at
from conftest import unique_namespace

from . import _records as r

pytestmark = pytest.mark.anyio

BOUND = 30.0

#: The version each store's flow-control step brings it to (wherever it lands in the list).
SQLITE_LIMITS = SQLITE_MIGRATIONS.index(sqlite_schema._LIMITS) + 1
PG_LIMITS = [step for _, step in PG_MIGRATIONS].index(pg_schema._LIMITS) + 1


async def old_runs_and_limits_hold(backend: Any, old: JobRecord) -> None:
    """``old`` (stored before the upgrade) is claimed; a limit holds the jobs stored after."""
    [lease] = await backend.claim([old.queue], 1, worker="w1", lease_for=60)
    assert lease.job.id == old.id
    assert lease.job.limits == ()
    gate = Gate(name="smtp", concurrency=1)
    await backend.enqueue([replace(r.job(), limits=(gate,)) for _ in range(2)])
    assert len(await backend.claim([old.queue], 5, worker="w1", lease_for=60)) == 1
    (state,) = await backend.limit_states()
    assert (state.running, state.held) == (1, 1)


async def test_a_sqlite_file_before_limits_is_upgraded(tmp_path: Path) -> None:
    assert SQLITE_LIMITS <= SCHEMA_VERSION
    path = tmp_path / "old.db"
    old = r.job()
    sqlite_file_at(path, SQLITE_LIMITS - 1, old)
    backend = SQLiteBackend(path)
    with anyio.fail_after(BOUND):
        await backend.open()
        try:
            await old_runs_and_limits_hold(backend, old)
        finally:
            await backend.close()


@pytest.mark.postgres
async def test_a_postgres_schema_before_limits_is_upgraded(
    make_postgres: Any, postgres_admin: asyncpg.Connection[Any]
) -> None:
    assert len(PG_MIGRATIONS) >= PG_LIMITS
    schema = unique_namespace()
    old = r.job()
    with anyio.fail_after(BOUND):
        await postgres_schema_at(postgres_admin, schema, PG_LIMITS - 1, old)
        backend: PostgresBackend = make_postgres(schema)
        assert PG_LIMITS in await backend.migrate()
        await backend.open()
        await old_runs_and_limits_hold(backend, old)


# -- the step after: held jobs stay queued (SQLite), a batch at a time (PostgreSQL) -----------

SQLITE_HOLDS = SQLITE_MIGRATIONS.index(sqlite_schema._HOLDS) + 1
PG_BATCHES = [step for _, step in PG_MIGRATIONS].index(pg_schema._FLOW_BATCHES) + 1


async def test_a_sqlite_job_held_before_the_upgrade_runs_when_due(tmp_path: Path) -> None:
    assert SQLITE_HOLDS <= SCHEMA_VERSION
    path = tmp_path / "old.db"
    old = r.job()
    sqlite_file_at(path, SQLITE_HOLDS - 1, old)
    gates = msgspec.msgpack.encode((Gate(name="api", rate=1.0),))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # held as it was: scheduled, its rate token booked, due now
        conn.execute(
            "UPDATE asyncq_jobs SET state = 'scheduled', rate_paid = 1, limits = ? WHERE id = ?",
            (gates, old.id),
        )
    finally:
        conn.close()
    backend = SQLiteBackend(path)
    with anyio.fail_after(BOUND):
        await backend.open()
        try:
            [lease] = await backend.claim([old.queue], 5, worker="w1", lease_for=60)
            assert lease.job.id == old.id
            assert (lease.job.held_until, lease.job.hold) == (None, None)
            (api,) = await backend.limit_states()
            assert api.tokens == 1.0  # its token was booked before: none taken again
        finally:
            await backend.close()


@pytest.mark.postgres
async def test_a_postgres_job_counted_before_the_upgrade_frees_its_slot(
    make_postgres: Any, postgres_admin: asyncpg.Connection[Any]
) -> None:
    assert len(PG_MIGRATIONS) >= PG_BATCHES
    schema = unique_namespace()
    running, aside, booked = r.job(), r.job(), r.job()
    with anyio.fail_after(BOUND):
        await postgres_schema_at(postgres_admin, schema, PG_BATCHES - 1, running)
        jobs = f'"{schema}".jobs'
        for job in (aside, booked):
            await postgres_admin.execute(
                f"INSERT INTO {jobs} (id, name, queue, payload, state, enqueued_at, scheduled_at)"
                " VALUES ($1, $2, $3, $4, 'queued', $5, $6)",
                *(job.id, job.name, job.queue, job.payload, job.enqueued_at, job.scheduled_at),
            )
        # As the step before left them: one running on a full slot (counted by
        # the row trigger of then), one set aside on it, one held with its
        # rate token booked (scheduled, due now).
        smtp, api = '[["smtp", null, 1]]', '[["api", null, null, 1.0]]'
        await postgres_admin.execute(
            f'INSERT INTO "{schema}".limits (slot, name, concurrency, running)'
            " VALUES ('smtp', 'smtp', 1, 1)"
        )
        await postgres_admin.execute(
            f"UPDATE {jobs} SET state = 'active', attempts = 1, token = 't1', limits = $2,"
            " lease_expires_at = extract(epoch from now()) + 60 WHERE id = $1",
            running.id,
            smtp,
        )
        await postgres_admin.execute(
            f"UPDATE {jobs} SET held_by = 'smtp', limits = $2 WHERE id = $1", aside.id, smtp
        )
        await postgres_admin.execute(
            f"UPDATE {jobs} SET state = 'scheduled', rate_paid = true, limits = $2 WHERE id = $1",
            booked.id,
            api,
        )
        backend: PostgresBackend = make_postgres(schema)
        assert PG_BATCHES in await backend.migrate()
        await backend.open()
        lease = Lease(job=replace(running, attempts=1), token="t1", expires_at=0.0)
        assert await backend.settle([r.completed(lease)]) == [True]
        claimed = await backend.claim([running.queue], 5, worker="w1", lease_for=60)
        assert {lease.job.id for lease in claimed} == {aside.id, booked.id}
        states = {state.slot: state for state in await backend.limit_states()}
        assert (states["smtp"].running, states["smtp"].held) == (1, 0)
        assert states["api"].tokens == 1.0  # booked before the upgrade: none taken again
