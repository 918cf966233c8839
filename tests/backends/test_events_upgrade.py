"""A store made before the event stream upgrades, and its jobs write events after.

The event tables come with a migration step: a database at the step before
them opens (SQLite) or migrates (PostgreSQL), and a job stored before the
upgrade runs and shows its events from then on. A SQLite file whose events
were written before they took their leaner rows reads both kinds of rows.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import msgspec
import pytest

from asyncq._events import EventKind, JobEvent, encode_event
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


async def test_sqlite_events_written_before_they_were_packed_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = r.job()
    before = SQLITE_MIGRATIONS.index(sqlite_schema._EVENTS_PACKED)
    sqlite_file_at(path, before, old)
    # What a store at that step wrote: the whole event as a MessagePack map.
    written = JobEvent("", EventKind.ENQUEUED, old.id, old.name, old.queue, old.enqueued_at)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(
            "INSERT INTO asyncq_events (queue, job_id, at, body) VALUES (?, ?, ?, ?)",
            (old.queue, old.id, old.enqueued_at, encode_event(written)),
        )
    finally:
        conn.close()
    backend = SQLiteBackend(path, events=True)
    with anyio.fail_after(BOUND):
        await backend.open()
        try:
            [lease] = await backend.claim([old.queue], 1, worker="w1", lease_for=60)
            await backend.settle([r.completed(lease)])
            history = await backend.job_events(old.id)
            page = await backend.read_events(after=None, queues=[old.queue], limit=10)
        finally:
            await backend.close()
    assert [e.kind for e in history] == [
        EventKind.ENQUEUED,
        EventKind.STARTED,
        EventKind.COMPLETED,
    ]
    assert history[0] == msgspec.structs.replace(written, id=history[0].id)
    assert (history[1].attempt, history[1].worker) == (1, "w1")
    assert page.events == history
