"""Fixtures of the PostgreSQL backend's own tests: backends in schemas of their own.

``make_postgres`` makes unopened backends on the test server (each in a new
schema unless the test names one) and closes them and drops their schemas
afterwards; ``postgres_admin`` is a plain connection outside any backend,
for what a test does to the store behind a backend's back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import asyncpg
import pytest

from asyncq.backends.postgres import PostgresBackend
from conftest import unique_namespace

#: Closing and dropping every backend a test made takes at most this long.
TEARDOWN_BOUND = 60.0

MakePostgres = Callable[..., PostgresBackend]


@pytest.fixture
async def make_postgres(postgres_dsn: str) -> AsyncIterator[MakePostgres]:
    """Unopened backends on the test server; closed and their schemas dropped afterwards.

    ``make_postgres(schema=None, **options)``: ``options`` go to
    ``PostgresBackend.from_url``; without a ``schema``, a new one.
    """
    made: list[PostgresBackend] = []

    def factory(schema: str | None = None, **options: Any) -> PostgresBackend:
        backend = PostgresBackend.from_url(
            postgres_dsn, schema=schema or unique_namespace(), **options
        )
        made.append(backend)
        return backend

    yield factory
    with anyio.fail_after(TEARDOWN_BOUND):
        for backend in made:
            await backend.close()
        dropped = set()
        for backend in made:
            if backend.schema not in dropped:
                dropped.add(backend.schema)
                await backend.drop()


@pytest.fixture
async def postgres_admin(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A plain connection of the test's own, outside any backend."""
    conn = await asyncpg.connect(postgres_dsn)
    try:
        yield conn
    finally:
        await conn.close()
