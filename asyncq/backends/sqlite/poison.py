"""Rows the SQLite backend cannot read: fetching them, telling them, taking them aside.

SQLite keeps whatever a column is given, so garbage written by hand or by
another program reaches the backend in three shapes: a value of the wrong
type (text where a number belongs, a blob where text belongs), which
``schema.to_record`` refuses; a blob that does not decode (``errors``,
``headers``); and text that is not UTF-8, which makes ``sqlite3`` fail the
whole fetch. ``fetch`` turns the last into a value ``to_record`` refuses too,
so every read of a batch can go through ``_poison.read_all`` and find the bad
rows one by one, and every statement keeps working beside them.

A job whose row cannot be read is taken aside as a dead letter (``take_aside``)
by the write that finds it: a claim, a recovery, or the recovery's ``sweep``
of the rows no claim can ever reach (a state that is not a state, a queue
that is not text, a waiting job whose due time is not a number).
"""

from __future__ import annotations

import sqlite3
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from .._poison import Unreadable, describe, read_all, stand_in, unreadable_error
from ..base import JobRecord, JobState
from .schema import (
    ATTEMPTS,
    ENCODER,
    ID,
    NAMES,
    QUEUE,
    ROWID,
    SELECT_JOB,
    errors_readable,
    to_record,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "JOB_QUEUES",
    "NotText",
    "fetch",
    "identify",
    "read_rows",
    "read_or_stand_in",
    "sweep",
    "take_aside",
]


class NotText:
    """A TEXT value whose bytes are not UTF-8, as ``fetch`` hands it over."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def __repr__(self) -> str:
        return f"NotText({self.raw!r})"


def _text_or_not(raw: bytes) -> str | NotText:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return NotText(raw)


def fetch(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
) -> list[Any]:
    """All rows of a query; a text value that is not UTF-8 comes back as ``NotText``.

    ``sqlite3`` fails the whole fetch on such a value, so the query runs
    once more, only then, with a text factory that keeps the bytes.
    """
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "UTF-8" not in str(exc):
            raise
    conn.text_factory = _text_or_not
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.text_factory = str


def _shown(value: Any) -> str:
    """A row's id as an operator can look it up: itself, or as an SQL blob literal."""
    if isinstance(value, str):
        return value
    raw = value.raw if isinstance(value, NotText) else value
    return f"x'{raw.hex()}'" if isinstance(raw, bytes) else repr(raw)


def _plain(value: Any) -> Any:
    return value.raw if isinstance(value, NotText) else value


def identify(row: Sequence[Any]) -> tuple[str, str | None, bytes]:
    """A ``SELECT_JOB`` row's id, its queue if it is text, and the row as MessagePack."""
    queue = row[QUEUE]
    # payload and result last: they can be long, and only the first bytes are shown
    values = {
        name: _plain(value)
        for name, value in sorted(
            zip(NAMES, row, strict=False), key=lambda item: item[0] in ("payload", "result")
        )
    }
    return _shown(row[ID]), queue if isinstance(queue, str) else None, ENCODER.encode(values)


def read_rows(rows: Sequence[Any]) -> tuple[list[JobRecord], list[Unreadable]]:
    """``read_all`` for ``SELECT_JOB`` rows."""
    return read_all(rows, to_record, identify)


def read_or_stand_in(row: Sequence[Any], now: float) -> JobRecord:
    """The job a row holds, or the stand-in operator verbs show for it."""
    try:
        return to_record(row)
    except Exception as exc:  # noqa: BLE001 - a stored row must never fail an operator's read
        job_id, queue, raw = identify(row)
        return stand_in(Unreadable(job_id, queue, raw, describe(exc)), at=now)


_TAKE_ASIDE = (
    "UPDATE asyncq_jobs SET state = 'dead', finished_at = ?, {errors}, token = NULL,"
    " lease_expires_at = NULL, worker = NULL, expires_at = NULL WHERE rowid = ?"
)
# the errors read: the new one goes after them (as ``sql._APPEND_ERROR`` does)
_KEEP = _TAKE_ASIDE.format(
    errors="errors = CAST(coalesce(errors, x'') || ? AS BLOB), error_count = error_count + 1"
)
# the errors are garbage themselves: the new one replaces them
_REPLACE = _TAKE_ASIDE.format(errors="errors = ?, error_count = 1")


def take_aside(
    conn: sqlite3.Connection, now: float, rows: Sequence[Any], bad: Sequence[Unreadable]
) -> list[str]:
    """Make the ``bad`` ones among ``rows`` dead letters of kind ``undecodable``; return their ids.

    Dead frees the job's key (``_common.holds_key``) and ends its lease, if
    it had one; the caller wakes the job's waiters.
    """
    by_id = {_shown(row[ID]): row for row in rows}
    keep: list[tuple[Any, ...]] = []
    replace: list[tuple[Any, ...]] = []
    for item in bad:
        row = by_id[item.job_id]
        attempts = row[ATTEMPTS]
        error = unreadable_error(item, attempt=attempts if type(attempts) is int else 0, at=now)
        (keep if errors_readable(row) else replace).append((now, ENCODER.encode(error), row[ROWID]))
    conn.executemany(_KEEP, keep)
    conn.executemany(_REPLACE, replace)
    return [item.job_id for item in bad]


#: Every queue that holds a job, one index search each (a loose index scan): a
#: queue no producer named (a row written by hand, garbage in its queue) too.
JOB_QUEUES = (
    "SELECT queue FROM (WITH RECURSIVE seen(queue) AS (SELECT min(queue) FROM asyncq_jobs"
    " UNION ALL SELECT (SELECT min(queue) FROM asyncq_jobs WHERE queue > seen.queue)"
    " FROM seen WHERE seen.queue IS NOT NULL) SELECT queue FROM seen WHERE queue IS NOT NULL)"
)
# Text sorts after every number, and ``state`` is text: each state that is not
# a state lies in a gap between the real ones, a range of the (queue, state,
# scheduled_at) index. A waiting job's due time that is not a number sorts
# after every number too.
_STATES = sorted(state.value for state in JobState)
_GAPS = " UNION ALL ".join(
    [
        f"SELECT rowid FROM asyncq_jobs WHERE queue = :queue AND state < '{_STATES[0]}'",
        *(
            f"SELECT rowid FROM asyncq_jobs WHERE queue = :queue AND state > '{low}'"
            f" AND state < '{high}'"
            for low, high in pairwise(_STATES)
        ),
        f"SELECT rowid FROM asyncq_jobs WHERE queue = :queue AND state > '{_STATES[-1]}'",
        # no claim would ever promote these
        *(
            f"SELECT rowid FROM asyncq_jobs WHERE queue = :queue AND state = '{state.value}'"
            " AND scheduled_at >= ''"
            for state in (JobState.SCHEDULED, JobState.FAILED)
        ),
    ]
)


def sweep(conn: sqlite3.Connection, now: float) -> list[str]:
    """Take aside the unreadable jobs no claim can reach; return their ids.

    Those in a queue whose name is not text (no worker can ask for it), and
    in the other queues those whose state is not a state, or which wait for
    a due time that is not a number. Index searches per queue, so it costs
    little however many jobs wait.
    """
    rowids: list[int] = []
    for (queue,) in fetch(conn, JOB_QUEUES):
        if isinstance(queue, str):
            rowids.extend(rowid for (rowid,) in conn.execute(_GAPS, {"queue": queue}))
        elif isinstance(queue, NotText):
            found = conn.execute(
                "SELECT rowid FROM asyncq_jobs WHERE queue = CAST(? AS TEXT)", (queue.raw,)
            )
            rowids.extend(rowid for (rowid,) in found)
        else:
            found = conn.execute("SELECT rowid FROM asyncq_jobs WHERE queue = ?", (queue,))
            rowids.extend(rowid for (rowid,) in found)
    if not rowids:
        return []
    rows = [
        row for rowid in rowids for row in fetch(conn, f"{SELECT_JOB} WHERE rowid = ?", (rowid,))
    ]
    _, bad = read_rows(rows)
    return take_aside(conn, now, rows, bad)
