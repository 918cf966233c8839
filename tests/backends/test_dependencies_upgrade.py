"""A store made before dependencies upgrades, and its old jobs become parents after.

The columns and the ``waiting`` state come with a migration step (whatever its
number once merged): a database at the step before it opens (SQLite) or
migrates (PostgreSQL); a job stored before the upgrade is given a child, and
completing it releases the child.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from msgspec.structs import replace

from asyncq._records import JobRecord, JobState
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

#: The version each store's dependencies step brings it to (wherever it lands in the list).
SQLITE_DEPENDENCIES = SQLITE_MIGRATIONS.index(sqlite_schema._DEPENDENCIES) + 1
PG_DEPENDENCIES = [step for _, step in PG_MIGRATIONS].index(pg_schema._DEPENDENCIES) + 1


async def parent_then_child(backend: Any, old: JobRecord) -> None:
    """Give ``old`` (stored before the upgrade) a child, run ``old``, and see the child ready."""
    assert (await backend.get(old.id)).children == ()
    child = replace(r.job(queue=old.queue), parents=(old.id,))
    (stored,) = await backend.enqueue([child])
    assert stored.state is JobState.WAITING
    [lease] = await backend.claim([old.queue], 1, worker="w1", lease_for=60)
    assert lease.job.id == old.id
    assert await backend.settle([r.completed(lease)]) == [True]
    assert (await backend.get(child.id)).state is JobState.QUEUED
    assert (await backend.get(old.id)).children == (child.id,)


async def test_a_sqlite_file_before_dependencies_is_upgraded(tmp_path: Path) -> None:
    assert SQLITE_DEPENDENCIES <= SCHEMA_VERSION
    path = tmp_path / "old.db"
    old = r.job()
    sqlite_file_at(path, SQLITE_DEPENDENCIES - 1, old)
    backend = SQLiteBackend(path)
    with anyio.fail_after(BOUND):
        await backend.open()
        try:
            await parent_then_child(backend, old)
        finally:
            await backend.close()


@pytest.mark.postgres
async def test_a_postgres_schema_before_dependencies_is_upgraded(
    make_postgres: Any, postgres_admin: asyncpg.Connection[Any]
) -> None:
    assert len(PG_MIGRATIONS) >= PG_DEPENDENCIES
    schema = unique_namespace()
    old = r.job()
    with anyio.fail_after(BOUND):
        await postgres_schema_at(postgres_admin, schema, PG_DEPENDENCIES - 1, old)
        backend: PostgresBackend = make_postgres(schema)
        assert PG_DEPENDENCIES in await backend.migrate()
        await backend.open()
        await parent_then_child(backend, old)
