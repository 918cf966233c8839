"""Transactional enqueue through a psycopg 3 connection (``asyncq[psycopg]``, psycopg 3.2+).

``enqueue(jobs, connection=conn)`` takes a ``psycopg.AsyncConnection`` or a
``psycopg.Connection`` besides an asyncpg one. The statements are asyncpg's,
text and all: they run on raw cursors (``AsyncRawCursor``, ``RawCursor``),
which send PostgreSQL's own ``$1`` placeholders as they are, and ask for
binary results, so that a ``ROW(...)`` comes back as typed values, in tuples
whatever the connection's ``row_factory``. The
parameters are what ``store`` gives asyncpg (lists for arrays, bytes for
``bytea``, floats, JSON as text), each cast in the statement. ``json`` and
``jsonb`` results are loaded as text, as asyncpg gives them, on the cursor
only: the caller's connection keeps its own loaders.

A sync ``Connection`` (Django's ``connection.connection``, a script's) is
used from a worker thread (``store_sync``), never from the event loop's: its
statements block, and the loop serves other callers meanwhile. The caller's
thread waits for the result (``app.sync`` blocks), so the connection is used
by one thread at a time; psycopg's own lock on it makes that safe anyway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.adapt import AdaptersMap, Buffer, Loader
from psycopg.pq import Format
from psycopg.rows import tuple_row

from .enqueue import Adapter, store

if TYPE_CHECKING:
    from ..._records import JobRecord
    from .sql import Statements

__all__ = ["AsyncConnectionAdapter", "ConnectionAdapter", "store_sync"]


class _JsonText(Loader):
    """``json``, ``jsonb`` (text format) as the text itself."""

    def load(self, data: Buffer) -> str:
        return bytes(data).decode()


class _JsonBinaryText(_JsonText):
    """``json`` (binary format: the text itself) as text."""

    format = Format.BINARY


class _JsonbBinaryText(Loader):
    """``jsonb`` (binary format: a version byte, then the text) as text."""

    format = Format.BINARY

    def load(self, data: Buffer) -> str:
        return bytes(data[1:]).decode()


def _as_asyncpg(adapters: AdaptersMap) -> None:
    """Load JSON as asyncpg does (text) through the cursor owning ``adapters``."""
    adapters.register_loader("json", _JsonText)
    adapters.register_loader("jsonb", _JsonText)
    adapters.register_loader("json", _JsonBinaryText)
    adapters.register_loader("jsonb", _JsonbBinaryText)


class AsyncConnectionAdapter(Adapter):
    """A ``psycopg.AsyncConnection`` as ``store`` uses a connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    def _cursor(self) -> psycopg.AsyncRawCursor[tuple[Any, ...]]:
        cursor = psycopg.AsyncRawCursor(self._conn, row_factory=tuple_row)
        _as_asyncpg(cursor.adapters)
        return cursor

    async def fetch(self, query: str, *args: Any) -> Sequence[Any]:
        async with self._cursor() as cursor:
            await cursor.execute(query, args, binary=True)
            return await cursor.fetchall()

    async def execute(self, query: str, *args: Any) -> None:
        async with self._cursor() as cursor:
            await cursor.execute(query, args, binary=True)

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        return self._conn.transaction()


class ConnectionAdapter(Adapter):
    """A sync ``psycopg.Connection`` as ``store`` uses a connection.

    Its methods are coroutines that never suspend: each runs its statement
    to the end, in the calling thread (``store_sync``).
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def _cursor(self) -> psycopg.RawCursor[tuple[Any, ...]]:
        cursor = psycopg.RawCursor(self._conn, row_factory=tuple_row)
        _as_asyncpg(cursor.adapters)
        return cursor

    async def fetch(self, query: str, *args: Any) -> Sequence[Any]:
        with self._cursor() as cursor:
            cursor.execute(query, args, binary=True)
            return cursor.fetchall()

    async def execute(self, query: str, *args: Any) -> None:
        with self._cursor() as cursor:
            cursor.execute(query, args, binary=True)

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        return self._transaction()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        with self._conn.transaction():
            yield


def store_sync(
    conn: psycopg.Connection[Any], statements: Statements, jobs: Sequence[JobRecord]
) -> list[JobRecord]:
    """``store`` through a sync connection, run to the end in this thread (no event loop).

    Every await in ``store`` ends in a ``ConnectionAdapter`` method, none of
    which suspends: the coroutine finishes on its first step.
    """
    coro = store(ConnectionAdapter(conn), statements, jobs)
    try:
        coro.send(None)
    except StopIteration as done:
        result: list[JobRecord] = done.value
        return result
    coro.close()
    msg = "storing through a sync psycopg connection suspended: nothing may await there"
    raise RuntimeError(msg)
