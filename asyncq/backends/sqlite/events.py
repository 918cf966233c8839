"""The SQLite backend's job event stream: transaction bodies on ``asyncq_events``.

``write_fields`` (and ``write``) is called by the bodies in ``sql`` and
``admin_sql`` that change jobs, in their transaction, with the events of the
change: a few multi-row ``INSERT`` s for the batch (each of a size the
connection keeps prepared), nothing when there are none. A row holds the
event's queue, job id and time in columns and the rest of its fields as a
MessagePack array (rows written before the table lost its queue and time
indexes hold the whole ``JobEvent`` as a map; both are read). An event's id is
its row's ``id`` in decimal: the rowid, ordered, and never given twice since
``prune`` keeps the newest row (SQLite numbers a new row after the highest).
The other bodies read the stream and prune it, as ``sql``'s do: synchronous,
on the database thread, inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import msgspec

from ..._events import (
    EventFields,
    EventPage,
    JobEvent,
    decode_event,
    event_fields,
    fields_event,
    fields_type,
)
from .._eventlog import event_number, lost_between
from ..base import Retention

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "job_events",
    "latest",
    "newer",
    "prune",
    "read",
    "version",
    "write",
    "write_fields",
]

# The rows one INSERT writes: a batch goes in the largest first. Few sizes, so
# that the connection's statement cache keeps each prepared; 64 rows of 4 are
# 256 parameters, under the 999 an old SQLite allows.
_SIZES = (64, 16, 4, 1)
_INSERTS = {
    size: "INSERT INTO asyncq_events (queue, job_id, at, body) VALUES "
    + ", ".join(["(?, ?, ?, ?)"] * size)
    for size in _SIZES
}
_COLUMNS = "id, queue, job_id, at, body"


def write_fields(conn: sqlite3.Connection, events: Sequence[EventFields]) -> None:
    """Store the events of ``events`` (``EventFields``) in order, in the caller's transaction."""
    if not events:
        return
    # queue, job id, time; the body is the kind, name and the fields after the time
    values = [
        value
        for fields in events
        for value in (
            fields[3],
            fields[1],
            fields[4],
            _encoder.encode((fields[0], fields[2], *fields[5:])),
        )
    ]
    start, left = 0, len(events)
    for size in _SIZES:
        sql = _INSERTS[size]
        while left >= size:
            end = start + 4 * size
            conn.execute(sql, values[start:end])
            start, left = end, left - size


def write(conn: sqlite3.Connection, events: Sequence[JobEvent]) -> None:
    """``write_fields`` of ``events``."""
    write_fields(conn, [event_fields(event) for event in events])


def _event(number: int, queue: str, job_id: str, at: float, body: bytes) -> JobEvent:
    """The event a row holds."""
    if 0x80 <= body[0] <= 0x8F or body[0] in (0xDE, 0xDF):  # a map: a whole JobEvent
        return decode_event(body, str(number))
    kind, name, *rest = msgspec.structs.astuple(_body_decoder.decode(body))
    return fields_event(str(number), (kind, job_id, name, queue, at, *rest))


# A row's body, read back: the fields less those with columns of their own.
_body_decoder = msgspec.msgpack.Decoder(fields_type("_Body", without=("job_id", "queue", "at")))
_encoder = msgspec.msgpack.Encoder()


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _where(queues: Sequence[str] | None) -> tuple[str, tuple[str, ...]]:
    if queues is None:
        return "", ()
    wanted = tuple(dict.fromkeys(queues))
    return f" AND queue IN ({_marks(len(wanted))})", wanted


def read(
    conn: sqlite3.Connection,
    now: float,
    after: str | None,
    queues: Sequence[str] | None,
    limit: int,
) -> EventPage:
    start = event_number(after)
    where, wanted = _where(queues)
    lost = 0
    if after is not None:
        (floor,) = conn.execute(
            "SELECT coalesce(max(pruned_through), 0) FROM asyncq_event_floors WHERE 1" + where,
            wanted,
        ).fetchone()
        if floor > start:
            (kept,) = conn.execute(
                "SELECT count(*) FROM asyncq_events WHERE id > ? AND id <= ?", (start, floor)
            ).fetchone()
            lost = lost_between(start, floor, kept)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM asyncq_events WHERE id > ?{where} ORDER BY id LIMIT ?",
        (start, *wanted, max(0, limit)),
    ).fetchall()
    events = [_event(*row) for row in rows]
    return EventPage(events, events[-1].id if events else after, lost)


def newer(
    conn: sqlite3.Connection, now: float, after: str | None, queues: Sequence[str] | None
) -> bool:
    """Whether an event after ``after`` of ``queues`` is stored."""
    where, wanted = _where(queues)
    row = conn.execute(
        f"SELECT 1 FROM asyncq_events WHERE id > ?{where} LIMIT 1",
        (event_number(after), *wanted),
    ).fetchone()
    return row is not None


def version(conn: sqlite3.Connection, now: float) -> int:
    """``PRAGMA data_version``: it moves when another connection commits."""
    found: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return found


def job_events(conn: sqlite3.Connection, now: float, job_id: str) -> list[JobEvent]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM asyncq_events WHERE job_id = ? ORDER BY id", (job_id,)
    ).fetchall()
    return [_event(*row) for row in rows]


def latest(conn: sqlite3.Connection, now: float) -> str:
    """The id of the last event written (``prune`` keeps it), ``"0"`` before any."""
    (number,) = conn.execute("SELECT max(id) FROM asyncq_events").fetchone()
    return str(number or 0)


def prune(conn: sqlite3.Connection, now: float, limit: int, retention: Retention) -> int:
    """Delete up to ``limit`` events older than ``retention.events`` or beyond
    ``retention.max_events`` in their queue; record what went in the floors."""
    doomed: list[tuple[int, str]] = []
    # The newest row stays whatever its age: it keeps the numbering going.
    (newest,) = conn.execute("SELECT max(id) FROM asyncq_events").fetchone()
    if newest is None:
        return 0
    if retention.events is not None:
        # The oldest rows written, by id (no index on the time): those old enough go.
        doomed += conn.execute(
            "SELECT id, queue FROM (SELECT id, queue, at FROM asyncq_events WHERE id < ?"
            " ORDER BY id LIMIT ?) WHERE at < ?",
            (newest, limit, now - retention.events),
        ).fetchall()
    if retention.max_events is not None and len(doomed) < limit:
        doomed += conn.execute(
            "SELECT id, queue FROM (SELECT id, queue, row_number() OVER"
            " (PARTITION BY queue ORDER BY id DESC) AS rank FROM asyncq_events)"
            " WHERE rank > ? AND id < ? ORDER BY id LIMIT ?",
            (retention.max_events, newest, limit - len(doomed)),
        ).fetchall()
    if not doomed:
        return 0
    ids = {number for number, _ in doomed}
    conn.executemany("DELETE FROM asyncq_events WHERE id = ?", [(number,) for number in ids])
    floors: dict[str, int] = {}
    for number, queue in doomed:
        floors[queue] = max(number, floors.get(queue, 0))
    conn.executemany(
        "INSERT OR IGNORE INTO asyncq_event_floors (queue, pruned_through) VALUES (?, 0)",
        [(queue,) for queue in floors],
    )
    conn.executemany(
        "UPDATE asyncq_event_floors SET pruned_through = max(pruned_through, ?) WHERE queue = ?",
        [(number, queue) for queue, number in floors.items()],
    )
    return len(ids)
