"""A store made before the event stream upgrades, and its jobs write events after.

The event tables come with a migration step: a database at the step before
them opens (SQLite) or migrates (PostgreSQL), and a job stored before the
upgrade runs and shows its events from then on.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asyncq._events import EventKind
from asyncq.backends.sqlite import SQLiteBackend
from asyncq.backends.sqlite import schema as sqlite_schema
from asyncq.backends.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from backends._upgrade import sqlite_file_at

from . import _records as r

pytestmark = pytest.mark.anyio

BOUND = 30.0
SQLITE_EVENTS = SQLITE_MIGRATIONS.index(sqlite_schema._EVENTS) + 1


async def test_a_sqlite_file_before_events_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = r.job()
    sqlite_file_at(path, SQLITE_EVENTS - 1, old)
    backend = SQLiteBackend(path, events=True)
    with anyio.fail_after(BOUND):
        await backend.open()
        try:
            assert await backend.job_events(old.id) == []
            [lease] = await backend.claim([old.queue], 1, worker="w1", lease_for=60)
            await backend.settle([r.completed(lease)])
            found = [event.kind for event in await backend.job_events(old.id)]
            assert found == [EventKind.STARTED, EventKind.COMPLETED]
        finally:
            await backend.close()
