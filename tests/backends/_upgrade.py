"""Stores left at an older schema version, holding one job, for the upgrade tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import asyncpg

from asyncq._records import JobRecord
from asyncq.backends.postgres.sql import Statements
from asyncq.backends.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS

__all__ = ["postgres_schema_at", "sqlite_file_at"]


def sqlite_file_at(path: Path, version: int, job: JobRecord) -> None:
    """Write a SQLite file at schema ``version`` holding ``job``, queued."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("CREATE TABLE asyncq_meta (key TEXT PRIMARY KEY NOT NULL, value NOT NULL)")
        for step in SQLITE_MIGRATIONS[:version]:
            for statement in step:
                conn.execute(statement)
        conn.execute("INSERT INTO asyncq_meta VALUES ('schema_version', ?)", (version,))
        conn.execute(
            "INSERT INTO asyncq_jobs (id, name, queue, payload, state, priority, attempts,"
            " max_attempts, enqueued_at, scheduled_at)"
            " VALUES (?, ?, ?, ?, 'queued', 0, 0, 1, ?, ?)",
            (job.id, job.name, job.queue, job.payload, job.enqueued_at, job.scheduled_at),
        )
    finally:
        conn.close()


async def postgres_schema_at(
    admin: asyncpg.Connection[Any], schema: str, version: int, job: JobRecord
) -> None:
    """Make ``schema`` at migration ``version`` (steps 1 to it applied) holding ``job``, queued."""
    statements = Statements(schema)
    async with admin.transaction():
        await admin.execute(statements.bootstrap)
        for number in range(1, version + 1):
            description, step = statements.migrations[number - 1]
            await admin.execute(step)
            await admin.execute(statements.record_version, number, description)
        await admin.execute(
            f"INSERT INTO {schema}.jobs (id, name, queue, payload, state, enqueued_at,"
            " scheduled_at) VALUES ($1, $2, $3, $4, 'queued', $5, $6)",
            job.id,
            job.name,
            job.queue,
            job.payload,
            job.enqueued_at,
            job.scheduled_at,
        )
