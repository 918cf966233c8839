"""The PostgreSQL backend's operator statements: the templates of
``stats``, ``list_jobs``, ``retry_dead``, ``purge``, ``remove``,
``set_paused`` and ``prune``.

They are a table of their own, ``OperatorStatements``, which ``sql.Statements``
extends and fills in for a schema with its own templates (see ``sql``): an
operator statement is declared here once, and read as an attribute of
``Statements`` like every other.
"""

from __future__ import annotations

from .schema import ALIVE, EXPIRED, HOLDS, LAPSED

__all__ = ["OperatorStatements"]

# list_jobs's conditions, each followed by its parameter's number.
_LIST_FILTERS = {
    "state": "j.state = $",
    "queue": "j.queue = $",
    "name": "j.name = $",
    "after": "j.id > $",
}


# retry_dead: lock the candidates, free expired holders of their keys, and
# requeue at most one candidate per key (the oldest), skipping those whose key
# another live job holds.
def _retry_dead(where: str, limit: str) -> str:
    return (
        """
        WITH cand AS (
            SELECT id, queue, key FROM {s}.jobs
            WHERE state = 'dead' AND """
        + where
        + """
            ORDER BY id LIMIT """
        + limit
        + """ FOR UPDATE
        ),
        freed AS (
            DELETE FROM {s}.jobs h USING cand c
            WHERE h.key_held AND h.queue = c.queue AND h.key = c.key
              AND """
        + EXPIRED
        + """
            RETURNING h.id
        ),
        released AS (
            UPDATE {s}.jobs h SET key_held = false FROM cand c
            WHERE h.key_held AND h.queue = c.queue AND h.key = c.key AND h.id <> c.id AND """
        + LAPSED
        + """
            RETURNING h.id
        ),
        ok AS (
            SELECT DISTINCT ON (c.queue, coalesce(c.key, c.id)) c.id
            FROM cand c
            WHERE c.key IS NULL OR NOT EXISTS (
                SELECT FROM {s}.jobs j
                WHERE j.key_held AND j.queue = c.queue AND j.key = c.key AND j.id <> c.id
                  AND """
        + ALIVE
        + " AND "
        + HOLDS
        + """)
            ORDER BY c.queue, coalesce(c.key, c.id), c.id
        ),
        upd AS (
            UPDATE {s}.jobs j SET
                state = 'queued', attempts = 0, finished_at = NULL, scheduled_at = {now},
                key_held = j.key IS NOT NULL, lease_expires_at = NULL, worker = NULL,
                token = NULL
            FROM ok
            WHERE j.id = ok.id
              AND (SELECT count(*) FROM freed) + (SELECT count(*) FROM released) >= 0
            RETURNING j.id, j.name, j.queue
        ){retried_events}
        SELECT array_agg(id) AS ids, {s}.notify_work(array_agg(DISTINCT queue)) FROM upd
        """
    )


# A parent is kept while a child still waits for it (jobs_waiting finds one).
# ``{s}.jobs.id`` is the outer row's: the subquery's own table is ``c``.
_NO_CHILD_WAITS = """
              AND (children IS NULL OR NOT EXISTS (
                  SELECT FROM {s}.jobs c
                  WHERE c.state = 'waiting' AND c.parents @> ARRAY[{s}.jobs.id]))"""


def _prune_finished(state: str) -> str:
    """Delete up to ``$1`` jobs finished in ``state`` more than ``$2`` seconds ago.

    The state is spelled in the statement, not passed, so that the plan of
    every pool (a caller's included) reads the ``jobs_finished`` partial index.
    """
    expiring = "\n              AND expires_at IS NULL" if state == "completed" else ""
    expiring += _NO_CHILD_WAITS
    return f"""
        DELETE FROM {{s}}.jobs WHERE id IN (
            SELECT id FROM {{s}}.jobs
            WHERE state = '{state}' AND finished_at < {{now}} - $2::float8{expiring}
            ORDER BY finished_at LIMIT $1 FOR UPDATE SKIP LOCKED)
    """


def _prune_capped(state: str) -> str:
    """Delete up to ``$1`` jobs finished in ``state`` beyond the newest ``$2`` of their queue.

    It ranks the jobs of that state, which the ``jobs_finished`` partial index
    holds with their ``finished_at`` and queue: its cost grows with how many
    jobs are in the state, so it runs only for a state with a cap. Rows
    another transaction holds are skipped, as every prune statement does.
    """
    return f"""
        DELETE FROM {{s}}.jobs WHERE id IN (
            SELECT id FROM {{s}}.jobs WHERE state = '{state}' AND id IN (
                SELECT id FROM (
                    SELECT id, row_number() OVER (
                        PARTITION BY queue ORDER BY finished_at DESC, id DESC) AS rank
                    FROM {{s}}.jobs WHERE state = '{state}') ranked
                WHERE rank > $2::bigint){_NO_CHILD_WAITS}
            ORDER BY finished_at LIMIT $1 FOR UPDATE SKIP LOCKED)
    """


class OperatorStatements:
    """The templates of the operator verbs' statements (see ``sql.Statements``)."""

    prune_expired: str = (
        """
        DELETE FROM {s}.jobs WHERE id IN (
            SELECT id FROM {s}.jobs WHERE expires_at <= {now} AND state = 'completed'"""
        + _NO_CHILD_WAITS
        + """
            ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
    """
    )

    # Finished jobs go after the retention for their state (``prunable``'s
    # rule); completed ones with a result TTL only when it passes (above).
    prune_completed: str = _prune_finished("completed")
    prune_dead: str = _prune_finished("dead")
    prune_cancelled: str = _prune_finished("cancelled")
    # The count caps (``Retention.max_completed``, ...): beyond the newest N per queue.
    prune_capped_completed: str = _prune_capped("completed")
    prune_capped_dead: str = _prune_capped("dead")
    prune_capped_cancelled: str = _prune_capped("cancelled")

    # Keyed limit counters gone idle (``_limits.idle``: nothing running, the
    # bucket full) with no job set aside on them, up to $1; a claim makes
    # them again (``admit_batch``). Counters another transaction holds stay.
    prune_limits: str = """
        DELETE FROM {s}.limits WHERE slot IN (
            SELECT l.slot FROM {s}.limits l
            WHERE l.key IS NOT NULL AND l.running <= 0
              AND (l.rate IS NULL OR l.per <= 0 OR least(l.burst,
                   l.tokens + greatest(0, {now} - l.refilled_at) * l.rate / l.per) >= l.burst)
              AND NOT EXISTS (
                  SELECT FROM {s}.jobs h WHERE h.held_by = l.slot AND h.state = 'queued')
            LIMIT $1 FOR UPDATE SKIP LOCKED)
    """

    # remove: lock the jobs of $1, delete those not active, and answer each
    # found job's state (and whether its result expired: reported as no job);
    # waiters on the deleted ones are told, and find no job when they read.
    # Each deleted job's ``removed`` event is written here (see ``event_sql``).
    remove: str = """
        WITH found AS (
            SELECT id, state, (expires_at IS NOT NULL AND expires_at <= {now}
                               AND state = 'completed') AS expired
            FROM {s}.jobs WHERE id = ANY($1::text[]) FOR UPDATE
        ),
        gone AS (
            DELETE FROM {s}.jobs j USING found f
            WHERE j.id = f.id AND f.state <> 'active'
            RETURNING j.id, j.name, j.queue
        ){removed_events}
        SELECT f.id, f.state, f.expired,
               (SELECT {s}.notify_done(array_agg(id)) FROM gone) AS told
        FROM found f
    """

    # Counts come from the index each state is in (index-only scans when the
    # visibility map is current), never from job bodies: jobs_ready for the
    # pending states, jobs_lease for active, jobs_finished for the rest.
    stats: str = """
        WITH names AS (
            SELECT name, paused FROM {s}.queues
            WHERE $1::text[] IS NULL OR name = ANY($1::text[])
        ),
        counts AS (
            SELECT queue, state, count(*) AS n FROM {s}.jobs
            WHERE queue IN (SELECT name FROM names) AND state IN {pending}
              AND held_by IS NULL
            GROUP BY queue, state
            UNION ALL
            -- set aside by a limit (jobs_held)
            SELECT queue, state, count(*) AS n FROM {s}.jobs
            WHERE queue IN (SELECT name FROM names) AND held_by IS NOT NULL
              AND state IN {pending}
            GROUP BY queue, state
            UNION ALL
            SELECT queue, state, count(*) AS n FROM {s}.jobs
            WHERE queue IN (SELECT name FROM names) AND state = 'active'
            GROUP BY queue, state
            UNION ALL
            SELECT queue, state, count(*) AS n FROM {s}.jobs
            WHERE queue IN (SELECT name FROM names) AND state = 'waiting'
            GROUP BY queue, state
            UNION ALL
            SELECT queue, state, count(*) AS n FROM {s}.jobs
            WHERE queue IN (SELECT name FROM names)
              AND state IN ('completed', 'dead', 'cancelled')
            GROUP BY queue, state
        ),
        ready AS (
            SELECT queue, min(scheduled_at) AS oldest FROM {s}.jobs
            WHERE queue IN (SELECT name FROM names) AND state IN {pending}
              AND held_by IS NULL AND scheduled_at <= {now}
            GROUP BY queue
        )
        SELECT n.name, n.paused, c.state, c.n, r.oldest
        FROM names n
        LEFT JOIN counts c ON c.queue = n.name
        LEFT JOIN ready r ON r.queue = n.name
    """

    purge: str = """
        DELETE FROM {s}.jobs WHERE id IN (
            SELECT id FROM {s}.jobs
            WHERE state = ANY($1::text[]) AND finished_at < $2
              AND ($3::text IS NULL OR queue = $3)
            ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)
    """

    set_paused: str = """
        WITH upd AS (
            INSERT INTO {s}.queues (name, paused) VALUES ($1, $2)
            ON CONFLICT (name) DO UPDATE SET paused = excluded.paused
            RETURNING name, paused
        )
        SELECT {s}.notify_later(array_agg(name) FILTER (WHERE NOT paused)) FROM upd
    """

    # retry_dead by ids ($1, $2 their number) or by filters ($1 queue, $2 name, $3 limit).
    retry_dead_ids: str = _retry_dead("id = ANY($1::text[])", "$2")
    retry_dead_filter: str = _retry_dead(
        "($1::text IS NULL OR queue = $1) AND ($2::text IS NULL OR name = $2)", "$3"
    )

    # The head of every list_jobs (see there).
    list_all: str = "SELECT {cols} FROM {s}.jobs j WHERE " + ALIVE

    def list_jobs(self, filters: tuple[str, ...], newest: bool = False, meta: int = 0) -> str:
        """``list_jobs`` with a condition per given filter (``state``, ``queue``,
        ``name``, ``after``), each a parameter in that order, then ``meta``
        pairs of parameters (a key and the text its value must have), then
        the limit.

        ``newest``: by id descending, ``after`` meaning a smaller id."""
        spelled = {**_LIST_FILTERS, "after": "j.id < $"} if newest else _LIST_FILTERS
        conditions = "".join(
            f" AND {spelled[column]}{number}" for number, column in enumerate(filters, start=1)
        )
        first = len(filters) + 1
        # ->> gives a string as it is and any other value as JSON, but NULL for
        # JSON null, whose text -> gives.
        conditions += "".join(
            f" AND coalesce(j.meta ->> ${k}::text, (j.meta -> ${k}::text)::text) = ${k + 1}::text"
            for k in range(first, first + 2 * meta, 2)
        )
        order = "j.id DESC" if newest else "j.id"
        return f"{self.list_all}{conditions} ORDER BY {order} LIMIT ${first + 2 * meta}"
