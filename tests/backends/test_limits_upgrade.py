"""A store made before flow control upgrades: its jobs run as before, and limits hold after.

The limit columns, tables and functions come with a migration step: a
database at the step before it opens (SQLite) or migrates (PostgreSQL); a job
stored before the upgrade is claimed as a plain job, and jobs with limits
stored after it are held back by them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from msgspec.structs import replace

from asyncq._records import Gate, JobRecord
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
