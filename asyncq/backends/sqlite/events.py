"""The SQLite backend's job event stream: transaction bodies on ``asyncq_events``.

``write_fields`` (and ``write``) is called by the bodies in ``sql`` and
``admin_sql`` that change jobs, in their transaction, with the events of the
change. They take one row for each run of events of one queue (most writes
are one run): its ``n`` events packed into its ``body`` (``_eventlog.pack``),
numbered from its ``id`` on (``id`` to ``id + n - 1``), and one row in
``asyncq_event_jobs`` for each of their jobs, to find a job's history. A row
per event, with its own index entries, costs a write several times more.

An event's id is its number in decimal: the numbers are given in the order
written and never twice, since a new row takes the number after the newest
row's last and ``prune`` keeps the newest event. ``prune`` deletes whole rows,
or the oldest events of one (``skip`` of them are gone). Rows written before
events were packed hold one event each, as a ``JobEvent`` map; they are read
the same way. The other bodies read the stream and prune it, as ``sql``'s do:
synchronous, on the database thread, inside the caller's transaction.
"""

from __future__ import annotations

import itertools
import sqlite3
from operator import itemgetter
from typing import TYPE_CHECKING

from ..._events import EventFields, EventPage, JobEvent, decode_event, event_fields, fields_event
from .._eventlog import event_number, lost_between, pack, unpack
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

# Where EventFields hold what a row's columns repeat (JobEvent's order, less its id).
_JOB_ID, _QUEUE, _AT = 1, 3, 4
_queue_of = itemgetter(_QUEUE)

# A row numbered after the newest one's last event (1 in an empty table).
_ADD_ROW = (
    "INSERT INTO asyncq_events (id, queue, job_id, at, n, body)"
    " SELECT coalesce((SELECT id + n FROM asyncq_events ORDER BY id DESC LIMIT 1), 1),"
    " ?, '', ?, ?, ?"
)
# The jobs of a row go in with a few multi-row INSERTs, the largest first:
# few sizes, so that the connection's statement cache keeps each prepared.
_SIZES = (64, 16, 4, 1)
_ADD_JOBS = {
    size: "INSERT INTO asyncq_event_jobs (job_id, event_id) VALUES " + ", ".join(["(?, ?)"] * size)
    for size in _SIZES
}
_ROW = "id, n, skip, job_id, body"
# The row holding number ? (or, if that was pruned, the row before it; 0 for
# none): the rows from it on hold the numbers from ? on.
_HOLDING = "SELECT coalesce(max(id), 0) FROM asyncq_events WHERE id <= ?"
_FROM = f"id >= ({_HOLDING})"


def write_fields(conn: sqlite3.Connection, events: Sequence[EventFields]) -> None:
    """Store the events of ``events`` (``EventFields``) in order, in the caller's transaction."""
    for queue, grouped in itertools.groupby(events, key=_queue_of):
        run = list(grouped)
        at = max(fields[_AT] for fields in run)
        first = conn.execute(_ADD_ROW, (queue, at, len(run), pack(run))).lastrowid
        assert first is not None
        values = [
            value for job_id in dict.fromkeys(f[_JOB_ID] for f in run) for value in (job_id, first)
        ]
        start, left = 0, len(values) // 2
        for size in _SIZES:
            while left >= size:
                end = start + 2 * size
                conn.execute(_ADD_JOBS[size], values[start:end])
                start, left = end, left - size


def write(conn: sqlite3.Connection, events: Sequence[JobEvent]) -> None:
    """``write_fields`` of ``events``."""
    write_fields(conn, [event_fields(event) for event in events])


def _numbered(
    first: int, n: int, skip: int, job_id: str, body: bytes
) -> list[tuple[int, EventFields]]:
    """The events a row keeps: each one's number and fields."""
    if 0x80 <= body[0] <= 0x8F or body[0] in (0xDE, 0xDF):  # a map: one JobEvent, unpacked
        return [(first, event_fields(decode_event(body, "")))]
    return [(first + i, fields) for i, fields in enumerate(unpack(body)) if i >= skip]


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
            # the numbers in (start, floor] still kept, whatever their queue
            (kept,) = conn.execute(
                "SELECT coalesce(sum(max(0, min(id + n - 1, ?) - max(id + skip, ?) + 1)), 0)"
                f" FROM asyncq_events WHERE {_FROM} AND id <= ?",
                (floor, start + 1, start + 1, floor),
            ).fetchone()
            lost = lost_between(start, floor, kept)
    found: list[tuple[int, EventFields]] = []
    (low,) = conn.execute(_HOLDING, (start + 1,)).fetchone()
    page = 4
    while len(found) < limit:
        # Rows a page at a time, growing: one row may hold many events.
        rows = conn.execute(
            f"SELECT {_ROW} FROM asyncq_events WHERE id >= ?{where} ORDER BY id LIMIT ?",
            (low, *wanted, page),
        ).fetchall()
        for row in rows:
            found += (event for event in _numbered(*row) if event[0] > start)
        if len(rows) < page:
            break
        low, page = rows[-1][0] + 1, min(4 * page, 256)
    events = [fields_event(str(number), fields) for number, fields in found[: max(0, limit)]]
    return EventPage(events, events[-1].id if events else after, lost)


def newer(
    conn: sqlite3.Connection, now: float, after: str | None, queues: Sequence[str] | None
) -> bool:
    """Whether an event after ``after`` of ``queues`` is stored."""
    where, wanted = _where(queues)
    start = event_number(after)
    # A row's last event is never pruned alone, so its number tells.
    row = conn.execute(
        f"SELECT 1 FROM asyncq_events WHERE {_FROM} AND id + n - 1 > ?{where} LIMIT 1",
        (start + 1, start, *wanted),
    ).fetchone()
    return row is not None


def version(conn: sqlite3.Connection, now: float) -> int:
    """``PRAGMA data_version``: it moves when another connection commits."""
    found: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return found


def job_events(conn: sqlite3.Connection, now: float, job_id: str) -> list[JobEvent]:
    rows = conn.execute(
        "SELECT e.id, e.n, e.skip, e.job_id, e.body FROM asyncq_event_jobs AS j"
        " JOIN asyncq_events AS e ON e.id = j.event_id WHERE j.job_id = ? ORDER BY e.id",
        (job_id,),
    ).fetchall()
    return [
        fields_event(str(number), fields)
        for row in rows
        for number, fields in _numbered(*row)
        if fields[_JOB_ID] == job_id
    ]


def latest(conn: sqlite3.Connection, now: float) -> str:
    """The id of the last event written (``prune`` keeps it), ``"0"`` before any."""
    row = conn.execute("SELECT id + n - 1 FROM asyncq_events ORDER BY id DESC LIMIT 1").fetchone()
    return str(0 if row is None else row[0])


def prune(conn: sqlite3.Connection, now: float, limit: int, retention: Retention) -> int:
    """Delete about ``limit`` events (whole rows, or the oldest of one) older than
    ``retention.events`` or beyond ``retention.max_events`` in their queue; record
    what went in the floors. The newest event stays, to number on from it."""
    row = conn.execute("SELECT max(id) FROM asyncq_events").fetchone()
    if row[0] is None:
        return 0
    pruning = _Pruning(conn, newest=row[0])
    if retention.events is not None:
        found = conn.execute(
            "SELECT id, n, skip, queue FROM asyncq_events WHERE at < ? ORDER BY at LIMIT ?",
            (now - retention.events, limit),
        ).fetchall()
        for number, n, skip, queue in found:
            if pruning.deleted >= limit:
                break
            pruning.drop(number, n, skip, queue, n - skip)
        pruning.apply()
    if retention.max_events is not None and pruning.deleted < limit:
        cap = retention.max_events
        over = conn.execute(
            "SELECT queue, sum(n - skip) - ? FROM asyncq_events GROUP BY queue"
            " HAVING sum(n - skip) > ?",
            (cap, cap),
        ).fetchall()
        for queue, excess in over:
            found = conn.execute(
                "SELECT id, n, skip FROM asyncq_events WHERE queue = ? ORDER BY id LIMIT ?",
                (queue, limit),
            ).fetchall()
            for number, n, skip in found:
                if excess <= 0 or pruning.deleted >= limit:
                    break
                excess -= pruning.drop(number, n, skip, queue, excess)
        pruning.apply()
    return pruning.deleted


class _Pruning:
    """What one ``prune`` deletes: rows, and the oldest events of others."""

    def __init__(self, conn: sqlite3.Connection, newest: int) -> None:
        self.conn = conn
        self.newest = newest
        self.deleted = 0
        self.rows: list[int] = []
        self.trims: list[tuple[int, int]] = []  # (skip, id)
        self.floors: dict[str, int] = {}

    def drop(self, number: int, n: int, skip: int, queue: str, most: int) -> int:
        """Delete up to ``most`` of the oldest events the row ``number`` keeps; return how many."""
        live = n - skip
        if live <= most and number != self.newest:
            self.rows.append(number)
            gone = live
        else:
            gone = min(most, live - 1 if number == self.newest else live)
            if gone <= 0:
                return 0
            self.trims.append((skip + gone, number))
        last = number + skip + gone - 1
        self.floors[queue] = max(last, self.floors.get(queue, 0))
        self.deleted += gone
        return gone

    def apply(self) -> None:
        conn = self.conn
        if self.rows:
            jobs: list[tuple[str, int]] = []
            for number in self.rows:
                n, job_id, body = conn.execute(
                    "SELECT n, job_id, body FROM asyncq_events WHERE id = ?", (number,)
                ).fetchone()
                written = _numbered(number, n, 0, job_id, body)
                jobs += ((job, number) for job in dict.fromkeys(f[_JOB_ID] for _, f in written))
            conn.executemany(
                "DELETE FROM asyncq_event_jobs WHERE job_id = ? AND event_id = ?", jobs
            )
            conn.executemany(
                "DELETE FROM asyncq_events WHERE id = ?", [(number,) for number in self.rows]
            )
        conn.executemany("UPDATE asyncq_events SET skip = ? WHERE id = ?", self.trims)
        conn.executemany(
            "INSERT OR IGNORE INTO asyncq_event_floors (queue, pruned_through) VALUES (?, 0)",
            [(queue,) for queue in self.floors],
        )
        conn.executemany(
            "UPDATE asyncq_event_floors SET pruned_through = max(pruned_through, ?)"
            " WHERE queue = ?",
            [(number, queue) for queue, number in self.floors.items()],
        )
        self.rows, self.trims, self.floors = [], [], {}
