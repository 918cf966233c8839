"""The parts of the PostgreSQL backend's statements that write job events.

Each statement that changes jobs writes their events itself: one
data-modifying CTE (``WITH ... AS (INSERT INTO events SELECT ... FROM <the
rows it changed>)``) over what its ``UPDATE`` or ``INSERT`` returned, so an
event is committed if and only if its change is, with one ``INSERT`` for a
batch (a claim and a batch copied in write runs, see ``schema``) and no
second pass over ``jobs``. Each kind of change has its one fragment here, a
template with the fields of ``sql.Statements``, named by the field the
statements take it through (``{started_events}`` in the claims, and so on).
A ``Statements(events=False)`` fills those fields with nothing: a backend
without events runs statements that never mention the table.

A settlement clears the job's ``worker``, which its event names: the lease's
token carries it (``token``), and the statements that end a lease return
the token they matched (``u.token``). Reading the row as it was instead (a
statement does not see its own changes) would cost every settlement the
planning of a second lookup of its jobs, more than the rest of its events.

With events in, ``ON`` reads the session setting ``asyncq.events`` once per
statement (a condition on no column: a one-time filter), so that a caller's
session (``enqueue(connection=...)``) or a pool passed in can turn them off.

Notices: the statements that change a job's state already send one (work,
later, done: see ``schema``), which is what the event stream's listener
hears; only the changes that send none notify ``<schema>:events`` (progress
and log lines). A claim sends nothing: a ``started`` event reaches a
follower with the next notice, or at its next look (``events``).
"""

from __future__ import annotations

__all__ = ["FRAGMENTS", "ON", "token"]

#: The session writes events unless ``asyncq.events`` is ``off`` in it.
ON = "current_setting('asyncq.events', true) IS DISTINCT FROM 'off'"


def token(worker: str) -> str:
    """A new lease's token: 36 random characters (a UUID), a space, the ``worker``'s id."""
    return f"gen_random_uuid()::text || ' ' || {worker}"


# The worker that held the lease the statement ended (``u.token``): none for a
# token made before tokens carried it.
_HOLDER = "nullif(substr(u.token, 38), '')"


def _insert(*fields: str) -> str:
    """The INSERT of events with their ``fields`` (columns of ``events``) after the common ones."""
    return (
        "INSERT INTO {s}.events (kind, job_id, name, queue, at"
        + "".join(f", {field}" for field in fields)
        + ")"
    )


# ``enqueued``: the rows an enqueue inserted (``ins``: id, name, queue, state,
# scheduled_at); a job due later carries its due time.
_ENQUEUED = f""",
        enqueued_events AS (
            {_insert("due")}
            SELECT 'enqueued', u.id, u.name, u.queue, {{now}},
                   CASE WHEN u.state = 'scheduled' THEN u.scheduled_at END
            FROM ins u WHERE {ON}
        )"""

# ``enqueued``, for a batch copied in (every job queued): a run per queue
# (see ``schema``). The queues are $2; per queue, the name its jobs share or
# NULL ($3), and where its jobs are in $6 (their ids, by queue) and $7
# (their names, or NULL when each queue's jobs share one): $4[n] to $5[n],
# sent as text (an int[] parameter costs asyncpg a type introspection, some
# 20 ms, on every new connection).
_COPIED = f""",
        enqueued_events AS (
            INSERT INTO {{s}}.events (kind, name, queue, at, job_ids, names)
            SELECT 'enqueued', r.name, r.queue, {{now}}, ($6::text[])[r.first:r.last],
                   CASE WHEN r.name IS NULL THEN ($7::text[])[r.first:r.last] END
            FROM unnest($2::text[], $3::text[], $4::text[]::int[], $5::text[]::int[])
                WITH ORDINALITY AS r(queue, name, first, last, n)
            WHERE {ON}
            ORDER BY r.n
        )"""

# ``debounced``: the pending job a debounced enqueue replaced (``replaced``).
_DEBOUNCED = f""",
        debounced_events AS (
            {_insert("due")}
            SELECT 'debounced', u.id, u.name, u.queue, {{now}}, u.scheduled_at
            FROM replaced u WHERE {ON}
        )"""

# ``started``: the jobs a claim took (``claimed``), with their new attempt; a
# run per queue (see ``schema``), even of one job.
_STARTED = f""",
        started_events AS (
            INSERT INTO {{s}}.events (kind, queue, worker, at, job_ids, names, attempts)
            SELECT 'started', u.queue, u.worker, {{now}}, array_agg(u.id), array_agg(u.name),
                   array_agg(u.attempts)
            FROM claimed u WHERE {ON}
            GROUP BY u.queue, u.worker
        )"""

# A settlement (``upd``: id, name, queue, state, attempts, started_at,
# finished_at, scheduled_at, token, and the error it appended): ``completed``,
# ``retrying`` (state failed), ``dead``, ``cancelled``; a hand-back (queued)
# writes none.
_SETTLED = f""",
        settled_events AS (
            {_insert("attempt", "worker", "duration", "error", "due", "actor")}
            SELECT CASE WHEN u.state = 'failed' THEN 'retrying' ELSE u.state END,
                   u.id, u.name, u.queue, {{now}}, u.attempts, {_HOLDER},
                   CASE WHEN u.state = 'completed'
                        THEN greatest(0, u.finished_at - u.started_at) END,
                   u.error,
                   CASE WHEN u.state = 'failed' THEN u.scheduled_at END,
                   CASE WHEN u.state = 'cancelled' THEN 'worker' END
            FROM upd u
            WHERE u.state <> 'queued' AND {ON}
        )"""

# A lapsed lease (``upd`` of ``recover``: id, name, queue, state, attempts,
# token, error): ``recovered`` when queued again, else ``dead`` or
# ``cancelled`` by the recovery.
_RECOVERED = f""",
        recovered_events AS (
            {_insert("attempt", "worker", "error", "actor")}
            SELECT CASE WHEN u.state = 'queued' THEN 'recovered' ELSE u.state END,
                   u.id, u.name, u.queue, {{now}}, u.attempts, {_HOLDER}, u.error,
                   CASE WHEN u.state <> 'queued' THEN 'recovery' END
            FROM upd u WHERE {ON}
        )"""

# ``dead``: claimed jobs taken aside as unreadable (``upd``: id, name, queue,
# attempts, token, error).
_ASIDE = f""",
        aside_events AS (
            {_insert("attempt", "worker", "error")}
            SELECT 'dead', u.id, u.name, u.queue, {{now}}, u.attempts, {_HOLDER}, u.error
            FROM upd u WHERE {ON}
        )"""

# ``cancelled``: a job cancelled before it ran (``upd``), by whom asked ($2).
_CANCELLED = f""",
        cancelled_events AS (
            {_insert("actor")}
            SELECT 'cancelled', u.id, u.name, u.queue, {{now}}, $2::text
            FROM upd u WHERE u.state = 'cancelled' AND {ON}
        )"""


def _by_operator(kind: str, rows: str) -> str:
    """``kind`` events, ``by`` the operator, of the jobs of the CTE ``rows`` (id, name, queue)."""
    return f""",
        {kind}_events AS (
            {_insert("actor")}
            SELECT '{kind}', u.id, u.name, u.queue, {{now}}, 'operator'
            FROM {rows} u WHERE {ON}
        )"""


# ``retried``: dead jobs an operator put back; ``removed``: jobs an operator deleted.
_RETRIED = _by_operator("retried", "upd")
_REMOVED = _by_operator("removed", "gone")

# ``progress``: the job as the call left it (``upd``: id, name, queue,
# attempts, progress, progress_detail).
_PROGRESS = f""",
        progress_events AS (
            {_insert("attempt", "progress", "detail")}
            SELECT 'progress', u.id, u.name, u.queue, {{now}}, u.attempts, u.progress,
                   u.progress_detail
            FROM upd u WHERE {ON}
        )"""

# ``log``: one event per line the call stored (the last $4 of the lines $3),
# each as stored (the reader decodes it).
_LOGGED = f""",
        log_events AS (
            {_insert("line")}
            SELECT 'log', u.id, u.name, u.queue, {{now}}, l.line
            FROM upd u
            CROSS JOIN LATERAL unnest($3::text[]) WITH ORDINALITY AS l(line, seq)
            WHERE l.seq > cardinality($3::text[]) - $4 AND {ON}
            ORDER BY l.seq
        )"""

# The notice of the events above that no other notice announces (progress and
# log lines): a column of the reply of a statement changing one job (``upd``).
_TOLD = f", CASE WHEN {ON} THEN pg_notify({{events}}, '') END AS told"

#: The fragments, by the field of ``sql.Statements`` that takes each.
FRAGMENTS = {
    "enqueued_events": _ENQUEUED,
    "copied_events": _COPIED,
    "debounced_events": _DEBOUNCED,
    "started_events": _STARTED,
    "settled_events": _SETTLED,
    "recovered_events": _RECOVERED,
    "aside_events": _ASIDE,
    "cancelled_events": _CANCELLED,
    "retried_events": _RETRIED,
    "removed_events": _REMOVED,
    "progress_events": _PROGRESS,
    "log_events": _LOGGED,
    "events_told": _TOLD,
}
