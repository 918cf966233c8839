"""The SQLite backend's job event stream: transaction bodies on ``asyncq_events``.

``write`` is called by the bodies in ``sql`` and ``admin_sql`` that change
jobs, in their transaction, with the events of the change: one prepared
statement for the batch, nothing when there are none. An event's id is its
row's ``id`` in decimal: the rowid, ordered, and never given twice since
``prune`` keeps the newest row (SQLite numbers a new row after the highest). The other
bodies read the stream and prune it, as ``sql``'s do: synchronous, on the
database thread, inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from ..._events import EventPage, JobEvent, decode_event, encode_event
from .._eventlog import event_number, lost_between
from ..base import Retention

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["job_events", "latest", "newer", "prune", "read", "version", "write"]

_INSERT = "INSERT INTO asyncq_events (queue, job_id, at, body) VALUES (?, ?, ?, ?)"


def write(conn: sqlite3.Connection, events: Sequence[JobEvent]) -> None:
    """Store ``events`` in order (in the caller's transaction)."""
    if events:
        conn.executemany(
            _INSERT,
            [(event.queue, event.job_id, event.at, encode_event(event)) for event in events],
        )


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
        f"SELECT id, body FROM asyncq_events WHERE id > ?{where} ORDER BY id LIMIT ?",
        (start, *wanted, max(0, limit)),
    ).fetchall()
    events = [decode_event(body, str(number)) for number, body in rows]
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
        "SELECT id, body FROM asyncq_events WHERE job_id = ? ORDER BY id", (job_id,)
    ).fetchall()
    return [decode_event(body, str(number)) for number, body in rows]


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
        doomed += conn.execute(
            "SELECT id, queue FROM asyncq_events WHERE at < ? AND id < ? ORDER BY at LIMIT ?",
            (now - retention.events, newest, limit),
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
