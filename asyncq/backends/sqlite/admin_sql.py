"""Operator transaction bodies of the SQLite backend: ``stats``, ``list_jobs``,
``retry_dead``, ``purge``, ``remove``, ``set_paused`` and ``prune``.

None of them is on a worker's or a producer's path (those are in ``sql``).
They follow ``sql``'s rules: synchronous, run on the backend's database
thread inside a transaction the caller opened, ``now`` read after it began,
and touching nothing but the connection, so that a locked database can be
retried by running them again whole. The SQL conditions that mirror a shared
job rule (``asyncq.backends._common``) name it, as in ``sql``.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from ..._events import EventKind, JobEvent
from ..._records import JobRecord, JobState, QueueStats
from ..base import Retention
from .events import write as write_events
from .poison import JOB_QUEUES, fetch, read_or_stand_in, read_rows
from .schema import SELECT_JOB
from .sql import NOT_EXPIRED, children_of, key_holder, marks, release, select_by_ids

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["list_jobs", "prune", "purge", "remove", "retry_dead", "set_paused", "stats"]


# The states ``Retention`` keeps for a time, and what else a job must be to go
# by its state's retention: a completed job with a result_ttl goes by that.
_RETAINED = (
    (JobState.COMPLETED, " AND result_ttl IS NULL"),
    (JobState.DEAD, ""),
    (JobState.CANCELLED, ""),
)


# A parent is kept while a child still waits for it (so that the child, once
# released, may read the parent's result): asyncq_waits lists those pairs.
_NO_CHILD_WAITS = (
    " AND (p.children IS NULL OR NOT EXISTS (SELECT 1 FROM asyncq_waits w WHERE w.parent = p.id))"
)


def prune(conn: sqlite3.Connection, now: float, limit: int, retention: Retention) -> int:
    """Delete up to ``limit`` jobs ``_common.prunable`` at ``now`` under ``retention``.

    Expired results first, then each finished state past its retention.
    """
    # completed with a result_ttl: gone once it expires (_common.result_expired)
    deleted = conn.execute(
        "DELETE FROM asyncq_jobs WHERE id IN (SELECT id FROM asyncq_jobs p"
        f" WHERE expires_at <= ? AND state = 'completed'{_NO_CHILD_WAITS} LIMIT ?)",
        (now, limit),
    ).rowcount
    # any other finished job: gone once finished before now - keep (None: never)
    for state, extra in _RETAINED:
        keep = retention.keep_for(state)
        if keep is None:
            continue
        if deleted >= limit:
            break
        deleted += conn.execute(
            "DELETE FROM asyncq_jobs WHERE id IN (SELECT id FROM asyncq_jobs p"
            f" WHERE state = ? AND finished_at < ?{extra}{_NO_CHILD_WAITS} LIMIT ?)",
            (state.value, now - keep, limit - deleted),
        ).rowcount
    # a state with a count cap: the jobs of each queue beyond the newest ``most``
    for state, most in retention.capped:
        if deleted >= limit:
            break
        deleted += conn.execute(
            "DELETE FROM asyncq_jobs WHERE id IN (SELECT id FROM ("
            " SELECT id, row_number() OVER"
            "  (PARTITION BY queue ORDER BY finished_at DESC, id DESC) AS rank"
            f" FROM asyncq_jobs p WHERE state = ?{_NO_CHILD_WAITS}) WHERE rank > ? LIMIT ?)",
            (state.value, most, limit - deleted),
        ).rowcount
    return deleted


_STATE_OF = {state.value: state for state in JobState}
# A job held until a time is queued, kept as a scheduled one (schema._HOLDS).
_HELD = "held_until IS NOT NULL AND state = 'scheduled'"
#: ``list_jobs``'s condition on the state (its parameter: the state), where it is not ``=``.
_STATE_IS = {
    JobState.QUEUED: f"(state = ? OR ({_HELD}))",
    JobState.SCHEDULED: "(state = ? AND held_until IS NULL)",
}


def stats(conn: sqlite3.Connection, now: float, queues: Sequence[str] | None) -> list[QueueStats]:
    """Counts by state per queue.

    A job whose state is not a state (garbage written into the database) is
    counted as ``dead``: that is what ``get`` and ``list_jobs`` show for it
    (its stand-in), and what it becomes when a recovery takes it aside.
    Without ``queues``, every queue known or holding a job, except a name
    that is not text (no one could ask for it; a recovery takes its jobs aside).
    """
    if queues is None:
        seen = fetch(conn, f"SELECT name FROM asyncq_queues UNION {JOB_QUEUES}")
        names = sorted(name for (name,) in seen if isinstance(name, str))
    else:
        names = sorted(set(queues))
    paused = {name for (name,) in fetch(conn, "SELECT name FROM asyncq_queues WHERE paused")}
    out = []
    for queue in names:
        counts = dict.fromkeys(JobState, 0)
        for state, n in fetch(
            conn, "SELECT state, count(*) FROM asyncq_jobs WHERE queue = ? GROUP BY state", (queue,)
        ):
            counts[_STATE_OF.get(state, JobState.DEAD)] += n
        # held until a time: queued, kept as scheduled (schema._HOLDS)
        ((held,),) = fetch(
            conn, f"SELECT count(*) FROM asyncq_jobs WHERE queue = ? AND {_HELD}", (queue,)
        )
        counts[JobState.SCHEDULED] -= held
        counts[JobState.QUEUED] += held
        # the oldest ready job (_common.is_ready): queued, or scheduled/failed and due
        ((oldest,),) = fetch(
            conn,
            "SELECT min(at) FROM ("
            " SELECT min(scheduled_at) AS at FROM asyncq_jobs"
            "  WHERE queue = :queue AND state = 'queued' AND held_by IS NULL"
            " UNION ALL SELECT min(scheduled_at) FROM asyncq_jobs"
            "  WHERE queue = :queue AND state = 'scheduled' AND scheduled_at <= :now"
            " UNION ALL SELECT min(scheduled_at) FROM asyncq_jobs"
            "  WHERE queue = :queue AND state = 'failed' AND scheduled_at <= :now)",
            {"queue": queue, "now": now},
        )
        out.append(
            QueueStats(
                queue=queue,
                counts=counts,
                paused=queue in paused,
                # text sorts after numbers: only garbage is left when it is not a number
                oldest_ready_at=oldest if isinstance(oldest, float) else None,
            )
        )
    return out


def list_jobs(
    conn: sqlite3.Connection,
    now: float,
    state: JobState | None,
    queue: str | None,
    name: str | None,
    limit: int,
    after: str | None,
    newest: bool,
    meta: Mapping[str, str] | None = None,
) -> list[JobRecord]:
    where = [NOT_EXPIRED]
    params: list[Any] = [now]
    if state is not None:
        where.append(_STATE_IS.get(state, "state = ?"))
        params.append(state)
    for column, value in (("queue", queue), ("name", name)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if after is not None:
        where.append("id < ?" if newest else "id > ?")
        params.append(after)
    if meta:
        # asyncq_meta_value: registered on the connection (schema.meta_value)
        where.append("meta IS NOT NULL")
        for key, value in meta.items():
            where.append("asyncq_meta_value(meta, ?) = ?")
            params += (key, value)
    order = "id DESC" if newest else "id"
    filtered = len(where) > 1 + (after is not None)
    rows = _list_in_window(conn, where, params, after, order, limit) if filtered else None
    if rows is None:
        # Filtered: the filters' own index, its matches sorted (``+id``: no walk of every id).
        by = f"+{order}" if filtered else order
        sql = f"{SELECT_JOB} WHERE {' AND '.join(where)} ORDER BY {by} LIMIT ?"
        rows = fetch(conn, sql, (*params, limit))
    jobs, bad = read_rows(rows)
    if not bad:
        return jobs
    # a row that cannot be read is shown as its stand-in, in its place
    return [read_or_stand_in(row, now) for row in rows]


#: Jobs ``list_jobs`` looks through in id order before it asks the filters' index.
LIST_WINDOW = 2000


def _list_in_window(
    conn: sqlite3.Connection,
    where: list[str],
    params: list[Any],
    after: str | None,
    order: str,
    limit: int,
) -> list[Any] | None:
    """The filtered page from the next ``LIST_WINDOW`` ids alone, or ``None`` if they hold too few.

    A filter most jobs match (one big queue, its queued jobs) is answered by
    reading the id index from the cursor on and stopping early; a sparse one
    (the dead letters of a big store) by its own index and a sort of its matches.
    """
    cursor = ""
    inner: list[Any] = []
    if after is not None:
        cursor = "WHERE id < ?" if order.endswith("DESC") else "WHERE id > ?"
        inner.append(after)
    window = (
        f"SELECT *, rowid AS rowid FROM asyncq_jobs {cursor} ORDER BY {order} LIMIT {LIST_WINDOW}"
    )
    select = SELECT_JOB.replace(" FROM asyncq_jobs", f" FROM ({window})")
    sql = f"{select} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
    rows = fetch(conn, sql, (*inner, *params, limit))
    if len(rows) >= limit:
        return rows
    counted = f"SELECT count(*) FROM (SELECT 1 FROM asyncq_jobs {cursor} LIMIT {LIST_WINDOW})"
    (seen,) = conn.execute(counted, inner).fetchone()
    return rows if seen < LIST_WINDOW else None


def retry_dead(
    conn: sqlite3.Connection,
    now: float,
    job_ids: Sequence[str] | None,
    queue: str | None,
    name: str | None,
    limit: int,
    *,
    events: bool,
) -> list[str]:
    """``DeadQuery``'s dead jobs that can take their key back, put back in their queue."""
    if job_ids is None:
        # the dead jobs list_jobs would show, read without decoding them
        where = ""
        params: list[Any] = []
        for column, value in (("queue", queue), ("name", name)):
            if value is not None:
                where += f" AND {column} = ?"
                params.append(value)
        candidates = fetch(
            conn,
            f"SELECT id, queue, key, name FROM asyncq_jobs WHERE state = 'dead'{where}"
            " ORDER BY id LIMIT ?",
            (*params, limit),
        )
    else:
        # each id once already (``OperatorVerbs.retry_dead``)
        found = {
            row[0]: row
            for row in select_by_ids(conn, "id, queue, key, name", job_ids, " AND state = 'dead'")
        }
        candidates = [found[job_id] for job_id in job_ids if job_id in found]
    retried: list[str] = []
    written: list[JobEvent] = []
    taken: set[tuple[str, str]] = set()
    for job_id, job_queue, key, job_name in candidates:
        if not (
            isinstance(job_id, str) and isinstance(job_queue, str) and isinstance(key, str | None)
        ):
            continue  # garbage in the id, queue or key: it could never run
        if key is not None:
            slot = (job_queue, key)
            holder = key_holder(conn, job_queue, key, now)
            if slot in taken or (holder is not None and holder.id != job_id):
                continue
            taken.add(slot)
        retried.append(job_id)
        if events:
            written.append(
                JobEvent(
                    "", EventKind.RETRIED, job_id, str(job_name), job_queue, now, by="operator"
                )
            )
    conn.executemany(
        "UPDATE asyncq_jobs SET state = 'queued', attempts = 0, finished_at = NULL,"
        " scheduled_at = ?, key_released = 0 WHERE id = ? AND state = 'dead'",
        [(now, job_id) for job_id in retried],
    )
    write_events(conn, written)
    return retried


def purge(
    conn: sqlite3.Connection,
    now: float,
    states: Sequence[JobState],
    older_than: float,
    queue: str | None,
    limit: int,
) -> int:
    where = f"state IN ({marks(len(states))}) AND finished_at < ?"
    params: list[Any] = [*(state.value for state in states), older_than]
    if queue is not None:
        where += " AND queue = ?"
        params.append(queue)
    return conn.execute(
        "DELETE FROM asyncq_jobs WHERE id IN"
        f" (SELECT id FROM asyncq_jobs WHERE {where} ORDER BY id LIMIT ?)",
        (*params, limit),
    ).rowcount


def remove(
    conn: sqlite3.Connection, now: float, job_ids: Sequence[str], *, events: bool
) -> list[JobState | None]:
    """Delete the jobs of ``job_ids`` (each once) that are not active; the state each was in.

    A job whose state is not a state (garbage) is reported ``dead``, as
    ``stats`` counts it, and deleted; an expired result is reported ``None``.
    """
    found = {
        row[0]: row[1:]
        for row in select_by_ids(
            conn,
            f"id, CASE WHEN {_HELD} THEN 'queued' ELSE state END, expires_at, name, queue",
            job_ids,
        )
    }
    parents = [row[0] for row in select_by_ids(conn, "id", job_ids, " AND state <> 'active'")]
    orphans = children_of(conn, parents)
    conn.executemany(
        "DELETE FROM asyncq_jobs WHERE id = ? AND state <> 'active'",
        [(job_id,) for job_id in job_ids if job_id in found],
    )
    conn.executemany("DELETE FROM asyncq_waits WHERE child = ?", [(i,) for i in job_ids])
    if orphans:
        # A removed parent counts as finished for the children that wait for it.
        release(conn, now, [], orphans, events=events)
    out: list[JobState | None] = []
    for job_id in job_ids:
        row = found.get(job_id)
        if row is None or (row[0] == "completed" and row[1] is not None and row[1] <= now):
            out.append(None)
        else:
            out.append(_STATE_OF.get(row[0], JobState.DEAD))
    if events:
        write_events(
            conn,
            [
                JobEvent("", EventKind.REMOVED, job_id, str(name), str(queue), now, by="operator")
                for job_id, (state, _, name, queue) in found.items()
                if state != "active"
            ],
        )
    return out


def set_paused(conn: sqlite3.Connection, now: float, queue: str, paused: bool) -> None:
    conn.execute("INSERT OR IGNORE INTO asyncq_queues (name) VALUES (?)", (queue,))
    conn.execute("UPDATE asyncq_queues SET paused = ? WHERE name = ?", (int(paused), queue))
