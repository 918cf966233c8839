"""Stores made before ``key_ttl`` existed upgrade: their keyed jobs hold their keys as before.

SQLite and PostgreSQL from the step before their key step (found by the step
itself, so the tests follow when steps are renumbered). A keyed job stored
before the upgrade, completed, still holds its key; a job enqueued after with
a ``key_ttl`` holds its own past its end.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from msgspec.structs import replace

from asyncq._records import JobRecord, JobState
from asyncq.backends.base import Backend, stored_as_given
from asyncq.backends.postgres import PostgresBackend
from asyncq.backends.postgres import schema as pg_schema
from asyncq.backends.postgres.schema import MIGRATIONS as PG_MIGRATIONS
from asyncq.backends.postgres.sql import Statements
from asyncq.backends.sqlite import SQLiteBackend
from asyncq.backends.sqlite import schema as sqlite_schema
from asyncq.backends.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from asyncq.backends.sqlite.schema import SCHEMA_VERSION
from conftest import unique_namespace

from . import _records as r

pytestmark = pytest.mark.anyio

BOUND = 30.0

#: The version each store's key step brings it to (wherever it lands in the list).
SQLITE_KEYS = SQLITE_MIGRATIONS.index(sqlite_schema._KEY_OPTIONS) + 1
PG_KEYS = [step for _, step in PG_MIGRATIONS].index(pg_schema._KEY_TTL) + 1


async def keys_after_the_upgrade(backend: Backend, old: JobRecord) -> None:
    """``old`` (keyed 'old', stored completed before the upgrade) holds its key; a new
    job with a ``key_ttl`` holds its key after it ended dead."""
    stored = await backend.get(old.id)
    assert stored is not None
    assert stored.key_ttl is None
    [held] = await backend.enqueue([r.job(key="old")])
    assert held.id == old.id
    throttled = replace(r.job(key="new"), key_ttl=60.0)
    await backend.enqueue([throttled])
    [lease] = await backend.claim([old.queue], 10, worker="w", lease_for=60)
    assert lease.job.id == throttled.id
    assert await backend.settle([r.dead(lease)]) == [True]
    again = r.job(key="new")
    [found] = await backend.enqueue([again])
    assert not stored_as_given(again, found)
    assert found.id == throttled.id
    assert found.state is JobState.DEAD


def old_row(old: JobRecord) -> tuple[Any, ...]:
    return (old.id, old.name, old.queue, old.payload, old.enqueued_at, old.scheduled_at)


async def test_a_sqlite_file_before_key_ttl_is_upgraded(tmp_path: Path) -> None:
    assert SCHEMA_VERSION >= SQLITE_KEYS
    path = tmp_path / "old.db"
    old = r.job(key="old")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("CREATE TABLE asyncq_meta (key TEXT PRIMARY KEY NOT NULL, value NOT NULL)")
        for step in SQLITE_MIGRATIONS[: SQLITE_KEYS - 1]:
            for statement in step:
                conn.execute(statement)
        conn.execute("INSERT INTO asyncq_meta VALUES ('schema_version', ?)", (SQLITE_KEYS - 1,))
        conn.execute(
            "INSERT INTO asyncq_jobs (id, name, queue, payload, state, priority, attempts,"
            " max_attempts, enqueued_at, scheduled_at, key, finished_at)"
            " VALUES (?, ?, ?, ?, 'completed', 0, 1, 1, ?, ?, 'old', ?)",
            (*old_row(old), old.enqueued_at),
        )
    finally:
        conn.close()
    backend = SQLiteBackend(path)
    with anyio.fail_after(BOUND):
        await backend.open()
        try:
            await keys_after_the_upgrade(backend, old)
        finally:
            await backend.close()


@pytest.mark.postgres
async def test_a_postgres_schema_before_key_ttl_is_upgraded(
    make_postgres: Any, postgres_admin: asyncpg.Connection[Any]
) -> None:
    assert len(PG_MIGRATIONS) >= PG_KEYS
    schema = unique_namespace()
    statements = Statements(schema)
    old = r.job(key="old")
    with anyio.fail_after(BOUND):
        async with postgres_admin.transaction():
            await postgres_admin.execute(statements.bootstrap)
            for version in range(1, PG_KEYS):
                description, step = statements.migrations[version - 1]
                await postgres_admin.execute(step)
                await postgres_admin.execute(statements.record_version, version, description)
            await postgres_admin.execute(
                f"INSERT INTO {schema}.jobs (id, name, queue, payload, state, enqueued_at,"
                " scheduled_at, key, key_held, finished_at)"
                " VALUES ($1, $2, $3, $4, 'completed', $5, $6, 'old', true, $5)",
                *old_row(old),
            )
        backend: PostgresBackend = make_postgres(schema)
        assert PG_KEYS in await backend.migrate()
        await backend.open()
        await keys_after_the_upgrade(backend, old)
