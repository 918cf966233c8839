"""Stores made before job annotations existed upgrade, keep their jobs, and then annotate them.

SQLite and PostgreSQL from the step before their annotations step (found by
the step itself, so the tests follow when steps are renumbered).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest

from asyncq._annotations import log_line
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

#: The version each store's annotations step brings it to (wherever it lands in the list).
SQLITE_ANNOTATIONS = SQLITE_MIGRATIONS.index(sqlite_schema._ANNOTATIONS) + 1
PG_ANNOTATIONS = [step for _, step in PG_MIGRATIONS].index(pg_schema._ANNOTATIONS) + 1


async def annotate_and_read(backend: Any, old: JobRecord) -> None:
    """Claim ``old`` (stored before the upgrade), annotate it, and read it back."""
    assert (await backend.get(old.id)).logs == ()
    [lease] = await backend.claim([old.queue], 1, worker="w1", lease_for=60)
    assert lease.job.id == old.id
    assert lease.job.meta == {}
    line = log_line(time.time(), 1, "info", "after the upgrade")
    assert await backend.log(lease, [line]) is True
    assert await backend.progress(lease, 0.5, msgspec.json.encode({"step": 1})) is True
    stored = await backend.get(old.id)
    assert stored.logs == (line,)
    assert stored.progress_detail == {"step": 1}
    new = msgspec.structs.replace(r.job(), meta={"tenant": "acme"})
    await backend.enqueue([new])
    assert [j.id for j in await backend.list_jobs(meta={"tenant": "acme"})] == [new.id]


async def test_a_sqlite_file_before_annotations_is_upgraded(tmp_path: Path) -> None:
    assert SQLITE_ANNOTATIONS <= SCHEMA_VERSION
    path = tmp_path / "old.db"
    old = r.job()
    sqlite_file_at(path, SQLITE_ANNOTATIONS - 1, old)
    backend = SQLiteBackend(path)
    with anyio.fail_after(BOUND):
        await backend.open()
        try:
            await annotate_and_read(backend, old)
        finally:
            await backend.close()


@pytest.mark.postgres
async def test_a_postgres_schema_before_annotations_is_upgraded(
    make_postgres: Any, postgres_admin: asyncpg.Connection[Any]
) -> None:
    assert len(PG_MIGRATIONS) >= PG_ANNOTATIONS
    schema = unique_namespace()
    old = r.job()
    with anyio.fail_after(BOUND):
        await postgres_schema_at(postgres_admin, schema, PG_ANNOTATIONS - 1, old)
        backend: PostgresBackend = make_postgres(schema)
        assert PG_ANNOTATIONS in await backend.migrate()
        await backend.open()
        await annotate_and_read(backend, old)
        assert (await backend.get(old.id)).state is JobState.ACTIVE
