"""Transaction bodies of the SQLite backend's producers and workers.

Every function here is synchronous and runs on the backend's database thread,
inside a transaction its caller opened (``BEGIN IMMEDIATE`` for writes), with
``now`` read after the transaction began. A function is therefore one atomic
step of the store: a read of a row and the update that depends on it happen
under the same write lock, which is what ``SELECT ... FOR UPDATE`` or a Lua
script give other stores. Functions touch nothing but the connection, because
the caller retries them whole when the database is locked.

The job rules are the shared ones (``asyncq.backends._common``): Python calls
them where it holds a record, and each SQL condition that decides the same
thing names the function it mirrors. The schema's ``expires_at`` column is
``_common.expires_at`` stored: ``finished_at + result_ttl`` on completed jobs
with a ``result_ttl``, NULL otherwise.

The operator verbs' bodies, under the same rules, are in ``admin_sql``.
"""

from __future__ import annotations

import os
import sqlite3
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec.structs import replace

from ..._annotations import MAX_LOG_LINES, decode_json, encode_line
from ..._events import (
    EventFields,
    EventKind,
    debounced_event,
    dependency_event,
    enqueued_fields,
    event_fields,
    job_event,
    log_events,
    recovered_event,
    settled_fields,
    started_fields,
)
from ..._records import TERMINAL_STATES, JobRecord, JobState, Lease, LogLine, Outcome
from .._common import (
    LIVE_STATES,
    as_enqueued,
    claimed,
    debounced,
    is_pending,
    linked,
    lost_error,
    released,
    result_expired,
)
from .._limits import HOLD_BUDGET
from ..base import HeartbeatReply
from . import limits
from .events import write as write_events
from .events import write_fields
from .poison import fetch, read_or_stand_in, read_rows, sweep, take_aside
from .schema import (
    ENCODER,
    INSERT_JOB,
    INSERT_NEW,
    NAMES,
    SELECT_JOB,
    decode_ids,
    encode_ids,
    new_row,
    to_row,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

# The columns of SELECT_JOB, for select_by_ids.
_JOB_COLUMNS = SELECT_JOB.removeprefix("SELECT ").removesuffix(" FROM asyncq_jobs")

#: Rows per statement when a batch is spelled out as ``IN (?, ?, ...)``; far
#: below SQLITE_MAX_VARIABLE_NUMBER, which is 999 in old builds.
CHUNK = 500


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def marks(n: int) -> str:
    return ", ".join("?" * n)


def select_by_ids(
    conn: sqlite3.Connection, columns: str, ids: Sequence[str], where: str = ""
) -> list[Any]:
    """Rows for ``ids`` (any order), in as many statements as ``CHUNK`` needs."""
    rows: list[Any] = []
    for chunk in _chunks(ids):
        sql = f"SELECT {columns} FROM asyncq_jobs WHERE id IN ({marks(len(chunk))}){where}"
        rows.extend(fetch(conn, sql, tuple(chunk)))
    return rows


# not _common.result_expired (expires_at is set on completed jobs only)
NOT_EXPIRED = "(expires_at IS NULL OR expires_at > ?)"
_LIVE = ", ".join(sorted(f"'{state.value}'" for state in LIVE_STATES))
# _common.holds_key: live; or finished less than key_ttl ago; or, without a
# key_ttl, completed and not expired. A job whose key a debounced enqueue took
# over (key_released) holds it no more. Parameters: now, now.
_HOLDS_KEY = (
    f"key_released = 0 AND (state IN ({_LIVE}) OR (key_ttl IS NULL AND state = 'completed'"
    f" AND {NOT_EXPIRED}) OR (key_ttl IS NOT NULL AND finished_at + key_ttl > ?))"
)
# _common.is_ready, for the jobs a claim promotes to queued
_DUE = "state IN ('scheduled', 'failed') AND scheduled_at <= ?"


def key_holder(conn: sqlite3.Connection, queue: str, key: str, now: float) -> JobRecord | None:
    """The job holding ``key`` in ``queue`` at ``now`` (``_common.holds_key``), if any.

    A holder whose row cannot be read still holds the key (until a claim or a
    recovery takes it aside): it is returned as its stand-in.
    """
    rows = fetch(
        conn,
        f"{SELECT_JOB} WHERE queue = ? AND key = ? AND {_HOLDS_KEY} LIMIT 1",
        (queue, key, now, now),
    )
    return read_or_stand_in(rows[0], now) if rows else None


def _unpaused(conn: sqlite3.Connection, queues: Sequence[str]) -> list[str]:
    wanted = list(dict.fromkeys(queues))
    paused = {
        name
        for chunk in _chunks(wanted)
        for (name,) in conn.execute(
            f"SELECT name FROM asyncq_queues WHERE paused AND name IN ({marks(len(chunk))})",
            tuple(chunk),
        )
    }
    return [queue for queue in wanted if queue not in paused]


# -- producers -------------------------------------------------------------------


def enqueue(
    conn: sqlite3.Connection, now: float, jobs: Sequence[JobRecord], *, events: bool
) -> list[JobRecord]:
    stored: list[JobRecord] = []
    new_jobs: list[JobRecord] = []
    rows: list[JobRecord] = []
    # Ids already stored (caller-chosen ones), read in the same transaction as the insert.
    taken = {
        job.id: job
        for job in (
            read_or_stand_in(row, now)
            for row in select_by_ids(conn, _JOB_COLUMNS, [job.id for job in jobs])
        )
    }
    # (queue, key) -> the job holding it, for keys already looked up in this batch
    holders: dict[tuple[str, str], JobRecord | None] = {}
    # Parents stored before this batch, and the children each has, as the batch grows them.
    parents = _parents_of(conn, now, jobs, taken) if any(job.parents for job in jobs) else {}
    children: dict[str, list[str]] = {}
    for job in jobs:
        existing = taken.get(job.id)
        if existing is not None:
            stored.append(existing)
            continue
        slot = None
        if job.key is not None:
            slot = (job.queue, job.key)
            if slot not in holders:
                holders[slot] = key_holder(conn, job.queue, job.key, now)
            holder = holders[slot]
            if holder is not None and job.debounce is not None and is_pending(holder):
                replaced = debounced(holder, job, now)
                # The holder may be new in this batch: written first, with its event.
                _insert(conn, rows)
                if events:
                    write_fields(conn, [enqueued_fields(new, now) for new in new_jobs])
                rows.clear()
                new_jobs.clear()
                _replace_row(conn, replaced)
                if events:
                    write_events(conn, [debounced_event(replaced, now)])
                holders[slot] = replaced
                stored.append(replaced)
                continue
            if holder is not None and job.debounce is None:
                stored.append(holder)
                continue
            if holder is not None:  # running or finished: the debounced job takes the key over
                conn.execute("UPDATE asyncq_jobs SET key_released = 1 WHERE id = ?", (holder.id,))
        new = as_enqueued(job, now)
        if new.parents:
            new = linked(new, {p: taken.get(p) or parents.get(p) for p in new.parents}, now)
            for parent_id in new.parents:
                if parent_id not in children:
                    parent = taken.get(parent_id) or parents[parent_id]
                    children[parent_id] = list(parent.children)
                children[parent_id].append(new.id)
        if slot is not None:
            holders[slot] = new
        taken[job.id] = new
        rows.append(new)
        stored.append(new)
        new_jobs.append(new)
    _insert(conn, rows)
    if children:
        conn.executemany(
            "UPDATE asyncq_jobs SET children = ? WHERE id = ?",
            [(encode_ids(ids), parent_id) for parent_id, ids in children.items()],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO asyncq_waits (parent, child) VALUES (?, ?)",
            [(p, job.id) for job in new_jobs if job.state is JobState.WAITING for p in job.parents],
        )
    if events:
        written = [enqueued_fields(new, now) for new in new_jobs]
        written += [
            event_fields(dependency_event(new, now))
            for new in new_jobs
            if new.parents and new.state not in (JobState.QUEUED, JobState.SCHEDULED)
        ]
        write_fields(conn, written)
    conn.executemany(
        "INSERT OR IGNORE INTO asyncq_queues (name) VALUES (?)",
        [(queue,) for queue in sorted({job.queue for job in jobs})],
    )
    return stored


def _insert(conn: sqlite3.Connection, jobs: Sequence[JobRecord]) -> None:
    """Insert new jobs: those that set only what a producer sets bind just those columns."""
    plain: list[tuple[Any, ...]] = []
    full: list[tuple[Any, ...]] = []
    for job in jobs:
        row = new_row(job)
        if row is None:
            full.append(to_row(job))
        else:
            plain.append(row)
    if plain:
        conn.executemany(INSERT_NEW, plain)
    if full:
        conn.executemany(INSERT_JOB, full)


def _replace_row(conn: sqlite3.Connection, job: JobRecord) -> None:
    """Write ``job`` over its row (a debounced enqueue replaced the pending job)."""
    names = [name for name in NAMES if name != "id"]
    values = dict(zip(NAMES, to_row(job), strict=True))
    assignments = ", ".join(f"{name} = ?" for name in names)
    conn.execute(
        f"UPDATE asyncq_jobs SET {assignments} WHERE id = ?",
        (*(values[name] for name in names), job.id),
    )


def _parents_of(
    conn: sqlite3.Connection, now: float, jobs: Sequence[JobRecord], taken: dict[str, JobRecord]
) -> dict[str, JobRecord]:
    """The stored parents of the batch's jobs (those of the batch itself are in ``taken``)."""
    wanted = list(dict.fromkeys(p for job in jobs for p in job.parents if p not in taken))
    return {
        job.id: job
        for job in (read_or_stand_in(row, now) for row in select_by_ids(conn, _JOB_COLUMNS, wanted))
    }


def children_of(conn: sqlite3.Connection, job_ids: Sequence[str]) -> list[str]:
    """The children of the jobs ``job_ids``, each once."""
    rows = select_by_ids(conn, "children", job_ids, " AND children IS NOT NULL")
    return list(dict.fromkeys(c for (text,) in rows for c in decode_ids(text)))


def release(
    conn: sqlite3.Connection,
    now: float,
    finished: Sequence[str],
    child_ids: Sequence[str] | None = None,
    *,
    events: bool,
) -> bool:
    """Release the waiting children of the jobs ``finished`` (or removed) just now.

    ``_common.released`` decides each child from its parents as they are now
    in this transaction; a child that ends dead or cancelled releases its own
    children in turn. ``child_ids``: the children, when the parents' rows are
    gone (removed). Returns whether a child became ready (claimers wake).
    """
    ready = False
    todo: list[str] = list(finished)
    if child_ids is None:
        child_ids = children_of(conn, todo)
    while child_ids:
        todo = []
        waiting, _ = read_rows(
            select_by_ids(conn, _JOB_COLUMNS, child_ids, " AND state = 'waiting'")
        )
        for child in waiting:
            parents = {
                job.id: job
                for job in read_rows(select_by_ids(conn, _JOB_COLUMNS, list(child.parents)))[0]
            }
            new = released(child, parents, now)
            if new is None:
                continue
            conn.execute(
                f"UPDATE asyncq_jobs SET state = ?, finished_at = ?, {_APPEND_ERROR}"
                " WHERE id = ? AND state = 'waiting'",
                (
                    new.state.value,
                    new.finished_at,
                    ENCODER.encode(new.errors[-1]) if len(new.errors) > len(child.errors) else b"",
                    len(new.errors) - len(child.errors),
                    child.id,
                ),
            )
            conn.execute("DELETE FROM asyncq_waits WHERE child = ?", (child.id,))
            if events:
                write_events(conn, [dependency_event(new, now)])
            if new.state in TERMINAL_STATES:
                todo.append(child.id)
            else:
                ready = True
        child_ids = children_of(conn, todo) if todo else []
    return ready


def get(conn: sqlite3.Connection, now: float, job_id: str) -> JobRecord | None:
    """The job, or its stand-in (``_poison.stand_in``) if its row cannot be read."""
    rows = fetch(conn, f"{SELECT_JOB} WHERE id = ?", (job_id,))
    if not rows:
        return None
    job = read_or_stand_in(rows[0], now)
    return None if result_expired(job, now) else job


def cancel(
    conn: sqlite3.Connection, now: float, job_id: str, by: str, *, events: bool
) -> JobRecord | None:
    job = get(conn, now, job_id)
    if job is None or job.state in TERMINAL_STATES:
        return job
    if job.state is JobState.ACTIVE:
        conn.execute("UPDATE asyncq_jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        return replace(job, cancel_requested=True)
    conn.execute(
        "UPDATE asyncq_jobs SET state = 'cancelled', finished_at = ?, held_until = NULL,"
        " hold = NULL WHERE id = ?",
        (now, job_id),
    )
    if events:
        write_events(conn, [job_event(job, EventKind.CANCELLED, now, by=by)])
    if job.state is JobState.WAITING:
        conn.execute("DELETE FROM asyncq_waits WHERE child = ?", (job_id,))
    if job.children:
        release(conn, now, [job_id], events=events)
    return replace(job, state=JobState.CANCELLED, finished_at=now)


# -- workers ---------------------------------------------------------------------


def claim(
    conn: sqlite3.Connection,
    now: float,
    queues: Sequence[str],
    limit: int,
    worker: str,
    lease_for: float,
    *,
    events: bool,
) -> tuple[list[Lease], list[str]]:
    """Lease up to ``limit`` ready jobs; return the leases and the ids of jobs taken aside.

    A job whose row cannot be read is not leased: it becomes a dead letter of
    kind ``undecodable`` in this transaction (``poison.take_aside``), and the
    jobs read beside it are leased as usual.
    """
    aside: list[str] = []
    open_queues = _unpaused(conn, queues)
    # Promote due scheduled/failed jobs so one index gives the claim order (and
    # end the holds that kept jobs queued until now: schema._HOLDS).
    for chunk in _chunks(open_queues):
        conn.execute(
            "UPDATE asyncq_jobs SET state = 'queued', held_until = NULL, hold = NULL"
            f" WHERE queue IN ({marks(len(chunk))}) AND {_DUE}",
            (*chunk, now),
        )
    expires = now + lease_for
    leases: list[Lease] = []
    held = 0
    for queue in open_queues:
        # A job its limits hold back leaves the claim order (``_limits``): look
        # again past it, up to HOLD_BUDGET of them. Plain jobs take one pass.
        while len(leases) < limit and held < HOLD_BUDGET:
            rows = fetch(
                conn,
                f"{SELECT_JOB} WHERE queue = ? AND state = 'queued' AND held_by IS NULL"
                " ORDER BY priority DESC, scheduled_at, id LIMIT ?",
                (queue, limit - len(leases)),
            )
            jobs, bad = read_rows(rows)
            if bad:
                aside.extend(take_aside(conn, now, rows, bad))
            batch: list[Lease] = []
            stopped = 0
            for job in jobs:
                if job.limits or job.circuit is not None:
                    if not limits.admit_job(conn, now, job):
                        stopped += 1
                        continue
                    job = replace(job, held_by=None, rate_paid=False)
                active = claimed(job, now, worker, expires)
                batch.append(Lease(job=active, token=os.urandom(16).hex(), expires_at=expires))
            conn.executemany(
                "UPDATE asyncq_jobs SET state = 'active', attempts = attempts + 1, started_at = ?,"
                " worker = ?, lease_expires_at = ?, cancel_requested = 0, token = ?"
                " WHERE id = ? AND state = 'queued'",
                [(now, worker, expires, lease.token, lease.job.id) for lease in batch],
            )
            leases.extend(batch)
            held += stopped
            if not stopped:
                break
        if len(leases) >= limit:
            break
    if events:
        write_fields(conn, [started_fields(lease.job, now) for lease in leases])
    return leases, aside


class Probe(msgspec.Struct, frozen=True):
    """What ``wait_for_work`` learns from one look at the database."""

    #: ``PRAGMA data_version``: changes whenever another connection commits
    version: int
    ready: bool
    #: the earliest ``scheduled_at`` of a scheduled or failed job in the queues
    earliest: float | None


def data_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return version


def probe(
    conn: sqlite3.Connection, now: float, queues: Sequence[str], since: int | None
) -> Probe | None:
    """Look for work in ``queues``; ``None`` if no other connection committed since ``since``."""
    version = data_version(conn)
    if version == since:
        return None
    earliest: float | None = None
    # ready (_common.is_ready): queued, or the earliest scheduled or failed job is due
    for queue in _unpaused(conn, queues):
        ((queued, *due),) = fetch(
            conn,
            "SELECT EXISTS (SELECT 1 FROM asyncq_jobs WHERE queue = :queue AND state = 'queued'"
            "  AND held_by IS NULL),"
            " (SELECT min(scheduled_at) FROM asyncq_jobs WHERE queue = :queue"
            "  AND state = 'scheduled'),"
            " (SELECT min(scheduled_at) FROM asyncq_jobs WHERE queue = :queue"
            "  AND state = 'failed')",
            {"queue": queue},
        )
        if queued:
            return Probe(version, ready=True, earliest=None)
        for at in due:
            # a due time that is not a number is garbage: ``poison.sweep`` takes its job aside
            if isinstance(at, float):
                if at <= now:
                    return Probe(version, ready=True, earliest=None)
                earliest = at if earliest is None else min(earliest, at)
    return Probe(version, ready=False, earliest=earliest)


def _current_leases(conn: sqlite3.Connection, ids: Iterable[str]) -> dict[str, tuple[str, int]]:
    """``id -> (token, cancel_requested)`` for the ``active`` jobs among ``ids``."""
    rows = select_by_ids(
        conn, "id, token, cancel_requested", list(dict.fromkeys(ids)), " AND state = 'active'"
    )
    return {job_id: (token, cancel) for job_id, token, cancel in rows}


def heartbeat(
    conn: sqlite3.Connection, now: float, leases: Sequence[Lease], lease_for: float
) -> HeartbeatReply:
    current = _current_leases(conn, (lease.job.id for lease in leases))
    lost: set[str] = set()
    cancel: set[str] = set()
    held: list[tuple[float, str, str]] = []
    for lease in leases:
        job_id = lease.job.id
        token, cancel_requested = current.get(job_id, (None, 0))
        if token != lease.token:
            lost.add(job_id)
            continue
        held.append((now + lease_for, job_id, lease.token))
        if cancel_requested:
            cancel.add(job_id)
    conn.executemany("UPDATE asyncq_jobs SET lease_expires_at = ? WHERE id = ? AND token = ?", held)
    return HeartbeatReply(lost=frozenset(lost), cancel=frozenset(cancel))


def progress(
    conn: sqlite3.Connection,
    now: float,
    lease: Lease,
    value: float,
    detail: bytes | None,
    *,
    events: bool,
) -> bool:
    cursor = conn.execute(
        "UPDATE asyncq_jobs SET progress = ?, progress_detail = ?"
        " WHERE id = ? AND token = ? AND state = 'active'",
        (value, None if detail is None else detail.decode(), lease.job.id, lease.token),
    )
    if cursor.rowcount != 1:
        return False
    if events:
        shown = None if detail is None else decode_json(detail)
        fields = {"attempt": lease.job.attempts, "progress": value, "detail": shown}
        write_events(conn, [job_event(lease.job, EventKind.PROGRESS, now, **fields)])
    return True


def log(
    conn: sqlite3.Connection, now: float, lease: Lease, lines: Sequence[LogLine], *, events: bool
) -> bool:
    """Append ``lines`` to the job's logs and trim them, under the write lock."""
    row = conn.execute(
        "SELECT logs, logs_dropped FROM asyncq_jobs"
        " WHERE id = ? AND token = ? AND state = 'active'",
        (lease.job.id, lease.token),
    ).fetchone()
    if row is None:
        return False
    if not lines:
        return True
    kept = [part for part in (row[0] or "").split("\n") if part]
    kept += (encode_line(line).decode() for line in lines)
    over = max(0, len(kept) - MAX_LOG_LINES)
    conn.execute(
        "UPDATE asyncq_jobs SET logs = ?, logs_dropped = logs_dropped + ? WHERE id = ?",
        ("\n".join(kept[over:]), over, lease.job.id),
    )
    if events:
        write_events(conn, log_events(lease.job, lines))
    return True


_RELEASE = "token = NULL, lease_expires_at = NULL, worker = NULL"
# ``||`` makes TEXT; the cast takes the same bytes back as a BLOB (in a UTF-8
# database, which ``migrate`` checks, the bytes pass through unchanged).
_APPEND_ERROR = "errors = CAST(coalesce(errors, x'') || ? AS BLOB), error_count = error_count + ?"
_HELD = "WHERE id = ? AND token = ? AND state = 'active'"
_SETTLE = {
    # expires_at: _common.expires_at, with finished_at = now
    JobState.COMPLETED: "UPDATE asyncq_jobs SET state = 'completed', result = ?,"
    f" finished_at = ?, expires_at = ? + result_ttl, {_RELEASE} {_HELD}",
    JobState.FAILED: f"UPDATE asyncq_jobs SET state = 'failed', {_APPEND_ERROR},"
    f" scheduled_at = ?, {_RELEASE} {_HELD}",
    JobState.DEAD: f"UPDATE asyncq_jobs SET state = 'dead', {_APPEND_ERROR},"
    f" finished_at = ?, {_RELEASE} {_HELD}",
    JobState.CANCELLED: f"UPDATE asyncq_jobs SET state = 'cancelled', {_APPEND_ERROR},"
    f" finished_at = ?, {_RELEASE} {_HELD}",
    JobState.QUEUED: "UPDATE asyncq_jobs SET state = 'queued', attempts = max(0, attempts - 1),"
    f" {_RELEASE} {_HELD}",
}


class Settled(msgspec.Struct, frozen=True):
    applied: list[bool]
    #: ids that became terminal (their waiters are woken)
    finished: list[str]
    #: whether any job became ready again (claimers are woken)
    requeued: bool


def _settle_params(outcome: Outcome, now: float) -> tuple[Any, ...]:
    state = outcome.state
    held = (outcome.job_id, outcome.token)
    if state is JobState.QUEUED:
        return held
    if state is JobState.COMPLETED:
        return (outcome.result, now, now, *held)
    error = (b"", 0) if outcome.error is None else (ENCODER.encode(outcome.error), 1)
    if state is JobState.FAILED:
        return (*error, outcome.retry_at if outcome.retry_at is not None else now, *held)
    return (*error, now, *held)


# What a settled job's event needs, read with its lease.
_HELD_COLUMNS = (
    "id, token, name, queue, attempts, worker, started_at, children IS NOT NULL AS parent"
)


def settle(
    conn: sqlite3.Connection, now: float, outcomes: Sequence[Outcome], *, events: bool
) -> Settled:
    ids = list(dict.fromkeys(outcome.job_id for outcome in outcomes))
    # What a settled job needs besides its lease is read with it: a parent
    # releases its children, a limited job frees its slots as it leaves active.
    columns = _HELD_COLUMNS if events else "id, token, children IS NOT NULL AS parent"
    rows = select_by_ids(conn, f"{columns}, limits, circuit", ids, " AND state = 'active'")
    current = {row[0]: row[1:-3] for row in rows}
    parents = {row[0] for row in rows if row[-3]}
    gated = {row[0]: row[-2:] for row in rows if row[-2] is not None or row[-1] is not None}
    written: list[EventFields] = []
    applied: list[bool] = []
    finished: list[str] = []
    by_state: defaultdict[JobState, list[tuple[Any, ...]]] = defaultdict(list)
    for outcome in outcomes:
        lease = current.get(outcome.job_id)
        if lease is None or lease[0] != outcome.token:
            applied.append(False)
            continue
        # the lease is released by this outcome: a second one for it in the batch is stale
        if events:
            # Raw columns: a row written by hand may hold anything (poison.py).
            _, name, queue, attempts, worker, started_at = lease
            fields = settled_fields(
                outcome.job_id,
                name if isinstance(name, str) else "<unreadable>",
                queue if isinstance(queue, str) else "<unreadable>",
                attempts if type(attempts) is int else 0,
                worker if isinstance(worker, str) else None,
                started_at if isinstance(started_at, float) else None,
                outcome,
                now,
            )
            if fields is not None:
                written.append(fields)
        del current[outcome.job_id]
        applied.append(True)
        by_state[outcome.state].append(_settle_params(outcome, now))
        if outcome.state in TERMINAL_STATES:
            finished.append(outcome.job_id)
    for state, params in by_state.items():
        conn.executemany(_SETTLE[state], params)
    freed = False
    for outcome, applied_one in zip(outcomes, applied, strict=True):
        if applied_one and outcome.job_id in gated:
            kind = None if outcome.error is None else outcome.error.kind
            gates, breaker = gated.pop(outcome.job_id)
            freed = (
                limits.ended(conn, now, outcome.job_id, gates, breaker, outcome.state, kind)
                or freed
            )
    write_fields(conn, written)
    requeued = freed or bool(by_state.get(JobState.FAILED) or by_state.get(JobState.QUEUED))
    if parents and (done := [job_id for job_id in finished if job_id in parents]):
        # Only jobs with children pay for this: a column read with the lease.
        requeued = release(conn, now, done, events=events) or requeued
    return Settled(applied=applied, finished=finished, requeued=requeued)


def settle_and_claim(
    conn: sqlite3.Connection,
    now: float,
    outcomes: Sequence[Outcome],
    queues: Sequence[str],
    limit: int,
    worker: str,
    lease_for: float,
    *,
    events: bool,
) -> tuple[Settled, list[Lease], list[str]]:
    """``settle`` then ``claim`` in one transaction: what the outcomes hand back is claimable."""
    settled = settle(conn, now, outcomes, events=events)
    if limit <= 0 or not queues:
        return settled, [], []
    return settled, *claim(conn, now, queues, limit, worker, lease_for, events=events)


def recover(
    conn: sqlite3.Connection, now: float, *, events: bool
) -> tuple[list[tuple[str, bool]], list[str]]:
    """Release lapsed leases, and take aside the unreadable jobs no claim can reach.

    Returns ``(id, finished)`` for each lapsed job (dead or cancelled), and
    the ids of the jobs taken aside as dead letters (``poison.sweep``).
    A lapsed job whose row cannot be read is taken aside too, and counted
    as a finished lapsed job.
    """
    # _common.lease_lapsed (claim always sets lease_expires_at on an active job); an
    # expiry that is not a number is garbage, so lapsed too: NULL, or text or a blob
    # (which sort after every number). One index search each.
    rows = fetch(
        conn,
        " UNION ALL ".join(
            f"{SELECT_JOB} WHERE state = 'active' AND lease_expires_at {lapsed}"
            for lapsed in ("<= :now", ">= ''", "IS NULL")
        ),
        {"now": now},
    )
    lapsed, bad = read_rows(rows)
    errors = [lost_error(job, now) for job in lapsed]
    params = [
        (now, ENCODER.encode(error), job.id) for job, error in zip(lapsed, errors, strict=True)
    ]
    conn.executemany(
        "UPDATE asyncq_jobs SET"
        " state = CASE WHEN cancel_requested THEN 'cancelled'"
        "  WHEN attempts < max_attempts THEN 'queued' ELSE 'dead' END,"
        " finished_at = CASE WHEN attempts < max_attempts AND NOT cancel_requested"
        "  THEN NULL ELSE ? END,"
        f" errors = CAST(coalesce(errors, x'') || ? AS BLOB), error_count = error_count + 1,"
        f" {_RELEASE}"
        " WHERE id = ? AND state = 'active'",
        params,
    )
    for job, error in zip(lapsed, errors, strict=True):
        if job.limits or job.circuit is not None:
            limits.job_ended(conn, now, job, _recovered_state(job), error.kind)
    recovered = [
        (job.id, job.cancel_requested or job.attempts >= job.max_attempts) for job in lapsed
    ]
    if events:
        write_events(
            conn,
            [
                recovered_event(job, _recovered_state(job), error, now)
                for job, error in zip(lapsed, errors, strict=True)
            ],
        )
    if any(job.children for job in lapsed):
        release(conn, now, [job.id for job in lapsed if job.children], events=events)
    if bad:
        recovered.extend((job_id, True) for job_id in take_aside(conn, now, rows, bad))
    return recovered, sweep(conn, now)


def _recovered_state(job: JobRecord) -> JobState:
    """What ``recover`` makes of ``job``, as the statement above decides it."""
    if job.cancel_requested:
        return JobState.CANCELLED
    return JobState.QUEUED if job.attempts < job.max_attempts else JobState.DEAD
