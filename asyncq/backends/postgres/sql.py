"""The PostgreSQL backend's statements, for one schema.

Statements are built once per schema name (``Statements``): the class body
is the table of templates, each declared once (the operator verbs' in the
table it extends, ``admin_sql.OperatorStatements``), and the constructor the
one place they are filled in for a schema, the migrations (``schema``) with
them. The schema name is checked against ``schema.SCHEMA_NAME`` first, so
nothing user-supplied is ever spliced into SQL except that identifier.
Values always travel as parameters.

Times are epoch seconds in ``double precision`` columns, the same floats the
records carry, and ``NOW`` (the server's transaction clock) is compared to them
directly, so the claim's range condition stays an index condition.

State changes send their notifications (see ``schema``) with ``pg_notify``
inside the statement that makes them, so they are sent if and only if it
commits; they write their job events the same way (see ``event_sql``).
"""

from __future__ import annotations

from . import schema
from .admin_sql import OperatorStatements
from .codec import COLUMNS, FINISH
from .event_sql import FRAGMENTS, token
from .schema import ALIVE, EXPIRED, HOLDS, LAPSED

__all__ = ["COPY_COLUMNS", "NOW", "Statements"]

#: The server's clock as epoch seconds. ``now()`` is the transaction's start:
#: one value for the whole statement, and stable, so it can bound an index scan.
NOW = "extract(epoch from now())::float8"

#: The columns a batch is copied into (``COPY ... FROM STDIN``); ``key`` and
#: ``key_held`` keep their defaults (a copied batch has no keys).
COPY_COLUMNS = (
    "id",
    "name",
    "queue",
    "payload",
    "state",
    "priority",
    "attempts",
    "max_attempts",
    "timeout",
    "result_ttl",
    "enqueued_at",
    "scheduled_at",
    "headers",
    "meta",
)


# The picked jobs with limits or a circuit are decided in one call, in claim
# order (``admit_batch``, which sets aside or holds those that do not start);
# plain jobs never reach it, and a batch of plain jobs makes no call (the
# aggregate has no row). ``picked`` and ``admitted`` are MATERIALIZED CTEs,
# computed once: a subquery in the UPDATE's WHERE may be run again per row.
_ADMITTED = """
        admitted AS MATERIALIZED (
            SELECT id FROM picked WHERE limits IS NULL AND circuit IS NULL
            UNION ALL
            SELECT unnest({s}.admit_batch(
                array_agg(id ORDER BY priority DESC, scheduled_at, id),
                array_agg(queue ORDER BY priority DESC, scheduled_at, id),
                array_agg(limits ORDER BY priority DESC, scheduled_at, id),
                array_agg(circuit ORDER BY priority DESC, scheduled_at, id),
                array_agg(rate_paid ORDER BY priority DESC, scheduled_at, id),
                {now}))
            FROM picked WHERE limits IS NOT NULL OR circuit IS NOT NULL
            HAVING count(*) > 0
        ),"""


def _claim(picked: str) -> str:
    """The claim statement around ``picked``, a subquery of the jobs to claim (see "claim")."""
    return (
        """
        WITH relaxed AS MATERIALIZED (
            SELECT set_config('synchronous_commit', 'off', true)
        ),
        picked AS MATERIALIZED ("""
        + picked
        + """        ),"""
        + _ADMITTED
        + """
        claimed AS (
            UPDATE {s}.jobs j SET
                state = 'active',
                -- least(): a count at the integer's maximum (written by hand)
                -- must not fail the claim of the whole batch.
                attempts = least(j.attempts, 2147483646) + 1,
                started_at = {now},
                worker = $3,
                lease_expires_at = {now} + $4::float8,
                cancel_requested = false,
                held_by = NULL,
                rate_paid = false,
                held_until = NULL,
                hold = NULL,
                token = """
        + token("$3")
        + """
            WHERE j.id IN (SELECT id FROM admitted)
            RETURNING {cols}, j.token
        ){started_events}
        SELECT claimed.* FROM relaxed, claimed
    """
    )


def _enqueue(keyed: bool) -> str:
    """One statement: insert the batch in input order, record its queue names,
    notify, and return the inserted ids with their state.

    With keys (``keyed``) it first frees expired holders of the batch's keys
    and also returns the live holders it ran into; a later input with the same
    key as an earlier one conflicts with it. ON CONFLICT has no target, so a
    retried batch (same ids) is a no-op instead of an error. Batches without
    keys take the lean form, which never reads the table.
    """
    freed = (
        """
        freed AS (
            DELETE FROM {s}.jobs h USING b
            WHERE h.key_held AND h.queue = b.queue AND h.key = b.key
              AND """
        + EXPIRED
        + """
            RETURNING h.id
        ),
        released AS (
            UPDATE {s}.jobs h SET key_held = false FROM b
            WHERE h.key_held AND h.queue = b.queue AND h.key = b.key AND """
        + LAPSED
        + """
            RETURNING h.id
        ),"""
    )
    holders = (
        """
        UNION ALL
        SELECT false, b.id, h.state, h.rec
        FROM b CROSS JOIN LATERAL (
            SELECT j.state, ROW({cols}) AS rec FROM {s}.jobs j
            WHERE j.key_held AND j.queue = b.queue AND j.key = b.key AND """
        + ALIVE
        + " AND "
        + HOLDS
        + """
        ) AS h"""
    )
    # The batch's columns; keyed batches also carry each job's key_ttl ($15).
    ttl_array = ", $15::float8[]" if keyed else ""
    ttl_name = ", key_ttl" if keyed else ""
    return (
        """
        WITH b AS (
            SELECT * FROM unnest(
                $1::text[], $2::text[], $3::text[], $4::bytea[], $5::int[], $6::int[],
                $7::int[], $8::float8[], $9::text[], $10::float8[], $11::float8[],
                $12::float8[], $13::jsonb[], $14::jsonb[]"""
        + ttl_array
        + """
            ) WITH ORDINALITY AS b(
                id, name, queue, payload, priority, attempts, max_attempts, timeout,
                key, result_ttl, enqueued_at, scheduled_at, headers, meta"""
        + ttl_name
        + """, ord
            )
        ),"""
        + (freed if keyed else "")
        + """
        ins AS (
            INSERT INTO {s}.jobs AS j (
                id, name, queue, payload, state, priority, attempts, max_attempts,
                timeout, key, key_held, result_ttl, enqueued_at, scheduled_at, headers, meta"""
        + ttl_name
        + """
            )
            SELECT b.id, b.name, b.queue, b.payload,
                   -- A job asked for now is ready now, even when now() is behind
                   -- the producer's clock (an open transaction, another host).
                   CASE WHEN b.scheduled_at > b.enqueued_at AND b.scheduled_at > {now}
                        THEN 'scheduled' ELSE 'queued' END,
                   b.priority, b.attempts, b.max_attempts, b.timeout, b.key,
                   b.key IS NOT NULL, b.result_ttl, b.enqueued_at,
                   CASE WHEN b.scheduled_at > b.enqueued_at THEN b.scheduled_at
                        ELSE least(b.scheduled_at, {now}) END,
                   b.headers, b.meta"""
        + (", b.key_ttl" if keyed else "")
        + """
            FROM b"""
        + (
            "\n            WHERE (SELECT count(*) FROM freed) + (SELECT count(*) FROM released)"
            " >= 0  -- frees keys first"
            if keyed
            else ""
        )
        + """
            ORDER BY b.ord
            ON CONFLICT DO NOTHING
            RETURNING j.id, j.name, j.queue, j.state, j.scheduled_at
        ){enqueued_events},
        known AS (
            INSERT INTO {s}.queues (name)
            SELECT DISTINCT queue FROM ins
            ON CONFLICT DO NOTHING
        ),
        woke AS (
            SELECT {s}.notify_work(array_agg(DISTINCT queue) FILTER (WHERE state = 'queued'))
                       AS ready,
                   {s}.notify_later(array_agg(DISTINCT queue) FILTER (WHERE state = 'scheduled'))
                       AS later
            FROM ins
        )
        SELECT true AS new, ins.id, ins.state, NULL AS rec
        FROM ins, woke"""
        + (holders if keyed else "")
    )


class Statements(OperatorStatements):
    """Every statement of the backend, for one schema.

    The class attributes, with ``OperatorStatements``'s, are the templates;
    an instance has the same attributes filled in for its schema: ``{s}`` the
    quoted schema name, ``{now}`` ``NOW``, ``{pending}`` ``schema.PENDING``,
    ``{cols}`` ``codec.COLUMNS``, ``{work}``, ``{later}`` and ``{done}`` the
    channels' names as literals, ``{finish}`` ``codec.FINISH`` (or ``NULL``),
    and each field of ``event_sql.FRAGMENTS`` its fragment (or nothing).

    Args:
        schema_name: a name matching ``schema.SCHEMA_NAME`` (checked by the caller).
        carry_jobs: settlements' done notices carry what they changed on the
            jobs (``Finish``) when it fits; otherwise the ids only.
        events: the statements write job events (see ``event_sql``).
    """

    # The version table (see ``schema``).
    bootstrap: str = schema.BOOTSTRAP
    versions: str = schema.VERSIONS
    record_version: str = schema.RECORD_VERSION
    schema_exists: str = schema.SCHEMA_EXISTS
    drop: str = schema.DROP

    # Producers.
    enqueue: str = _enqueue(keyed=True)
    enqueue_plain: str = _enqueue(keyed=False)

    # One job without a key: the common ``Handler.enqueue``. A VALUES row plans in
    # a fraction of the time the unnest form takes (every statement is planned
    # afresh, see ``PostgresBackend``), and the notification needs no function
    # call. Same columns, rules and reply as ``enqueue_plain``.
    enqueue_one: str = """
        WITH ins AS (
            INSERT INTO {s}.jobs AS j (
                id, name, queue, payload, state, priority, attempts, max_attempts,
                timeout, result_ttl, enqueued_at, scheduled_at, headers, meta
            )
            VALUES (
                $1::text, $2::text, $3::text, $4::bytea,
                CASE WHEN $11::float8 > $10::float8 AND $11::float8 > {now}
                     THEN 'scheduled' ELSE 'queued' END,
                $5::int, $6::int, $7::int, $8::float8, $9::float8, $10::float8,
                CASE WHEN $11::float8 > $10::float8 THEN $11::float8
                     ELSE least($11::float8, {now}) END,
                $12::jsonb, $13::jsonb
            )
            ON CONFLICT DO NOTHING
            RETURNING j.id, j.name, j.queue, j.state, j.scheduled_at
        ){enqueued_events},
        known AS (
            INSERT INTO {s}.queues (name) SELECT queue FROM ins
            ON CONFLICT DO NOTHING
        )
        SELECT true AS new, ins.id, ins.state, NULL AS rec,
               CASE WHEN octet_length(ins.queue) < 7900 THEN pg_notify(
                   CASE WHEN ins.state = 'queued' THEN {work} ELSE {later} END, ins.queue) END
        FROM ins
    """

    # A debounced enqueue of one job (``enqueue(debounce=...)``), the params of
    # ``enqueue_one`` with its key ($14). The job holding the key, locked: if
    # pending and never claimed, it takes this job's record (its id and key
    # kept) and run time (a ``debounced`` event, not ``enqueued``); if
    # running or finished, it lets the key go and this job is stored, as is
    # a job whose key nobody holds. Replies as ``enqueue`` does; no row when
    # another transaction stored a holder meanwhile (the caller runs it again).
    enqueue_debounced: str = """
        WITH h AS (
            SELECT id, state, attempts,
                   state IN ('scheduled', 'queued') AND attempts = 0
                       AND held_by IS NULL AND NOT rate_paid AS pending
            FROM {s}.jobs
            WHERE key_held AND queue = $3::text AND key = $14::text
            FOR UPDATE
        ),
        replaced AS (
            UPDATE {s}.jobs SET
                name = $2::text, payload = $4::bytea, priority = $5::int,
                max_attempts = $7::int, timeout = $8::float8, result_ttl = $9::float8,
                enqueued_at = $10::float8, scheduled_at = $11::float8,
                state = CASE WHEN $11::float8 > {now} THEN 'scheduled' ELSE 'queued' END,
                headers = $12::jsonb, meta = $13::jsonb, key_ttl = NULL,
                held_until = NULL, hold = NULL
            WHERE id = (SELECT id FROM h WHERE pending)
            RETURNING {cols}
        ){debounced_events},
        released AS (
            UPDATE {s}.jobs SET key_held = false
            WHERE id = (SELECT id FROM h WHERE NOT pending)
            RETURNING id
        ),
        ins AS (
            INSERT INTO {s}.jobs AS j (
                id, name, queue, payload, state, priority, attempts, max_attempts,
                timeout, key, key_held, result_ttl, enqueued_at, scheduled_at, headers, meta
            )
            SELECT $1::text, $2::text, $3::text, $4::bytea,
                   CASE WHEN $11::float8 > {now} THEN 'scheduled' ELSE 'queued' END,
                   $5::int, $6::int, $7::int, $8::float8, $14::text, true, $9::float8,
                   $10::float8, $11::float8, $12::jsonb, $13::jsonb
            WHERE NOT EXISTS (SELECT FROM replaced) AND (SELECT count(*) FROM released) >= 0
            ON CONFLICT DO NOTHING
            RETURNING j.id, j.name, j.queue, j.state, j.scheduled_at
        ){enqueued_events},
        known AS (
            INSERT INTO {s}.queues (name) SELECT queue FROM ins
            ON CONFLICT DO NOTHING
        )
        SELECT true AS new, ins.id, ins.state, NULL AS rec,
               CASE WHEN octet_length(ins.queue) < 7900 THEN pg_notify(
                   CASE WHEN ins.state = 'queued' THEN {work} ELSE {later} END, ins.queue) END
        FROM ins
        UNION ALL
        SELECT false, $1::text, replaced.state, ROW({cols}),
               CASE WHEN octet_length(replaced.queue) < 7900 THEN pg_notify(
                   CASE WHEN replaced.state = 'queued' THEN {work} ELSE {later} END,
                   replaced.queue) END
        FROM replaced
    """

    # After a batch was copied in, in its transaction: record its queues, notify
    # them (sent at commit), and tell whether the producer's clock ran ahead of
    # the server's: $1 is the batch's latest scheduled_at. Only then does
    # ``clamp_copied`` pull those jobs back to now, so that they are ready
    # at once (a copy cannot compute columns on the server). With events,
    # $3 to $7 describe the batch's runs (``event_sql``, ``enqueue._runs``).
    enqueue_copied: str = """
        WITH known AS (
            INSERT INTO {s}.queues (name) SELECT unnest($2::text[])
            ON CONFLICT DO NOTHING
        ){copied_events}
        SELECT $1::float8 > {now} AS ahead, {s}.notify_work($2::text[])
    """

    clamp_copied: str = """
        UPDATE {s}.jobs SET scheduled_at = {now}
        WHERE id = ANY($1::text[]) AND state = 'queued' AND scheduled_at > {now}
    """

    # What a batch's conflicting inputs ran into, read after the fact: a holder
    # committed by another transaction after ``enqueue``'s snapshot, or an
    # input already stored by an earlier try of the same batch.
    lookup: str = (
        """
        SELECT {cols} FROM {s}.jobs j
        WHERE (j.id = ANY($1::text[]) OR (j.key_held AND (j.queue, j.key) IN (
                SELECT * FROM unnest($2::text[], $3::text[])) AND """
        + HOLDS
        + """))
          AND """
        + ALIVE
    )

    get: str = "SELECT {cols} FROM {s}.jobs j WHERE j.id = $1 AND " + ALIVE

    # The parents of jobs just inserted, in the enqueue's transaction (see
    # ``schema``, "dependencies"); then the jobs as they are after it.
    link: str = "SELECT {s}.link($1::text[], $2::text[], $3::text[], $4::text[])"
    linked: str = "SELECT {cols} FROM {s}.jobs j WHERE j.id = ANY($1::text[])"

    cancel: str = (
        """
        WITH upd AS (
            UPDATE {s}.jobs SET
                cancel_requested = cancel_requested OR state = 'active',
                state = CASE WHEN state = 'active' THEN state ELSE 'cancelled' END,
                finished_at = CASE WHEN state = 'active' THEN finished_at ELSE {now} END,
                key_held = key_held AND (state = 'active' OR key_ttl IS NOT NULL)
            WHERE id = $1 AND state IN ('waiting', 'scheduled', 'queued', 'failed', 'active')
            RETURNING {cols}
        ){cancelled_events},
        woke AS (
            -- $2, who asked, goes in the events; named here for the variant without them.
            SELECT {s}.notify_done(array_agg(id) FILTER (WHERE state = 'cancelled')) AS n,
                   $2::text AS by
            FROM upd
        )
        SELECT {cols} FROM upd, woke
        UNION ALL
        SELECT {cols} FROM {s}.jobs j
        WHERE j.id = $1 AND NOT EXISTS (SELECT FROM upd) AND """
        + ALIVE
    )

    # Per queue, the first ``limit`` ready jobs in claim order straight off
    # jobs_ready (a LATERAL per queue keeps the index order, which a
    # ``queue = ANY(...)`` scan would lose), then the best ``limit`` of those.
    # SKIP LOCKED makes concurrent claimers pass each other's rows; a row
    # claimed and committed meanwhile fails the re-checked WHERE.
    #
    # A claim commits without waiting for its WAL to reach the disk
    # (synchronous_commit off for its own transaction only, through
    # ``relaxed``): a claim lost to a server crash leaves its jobs queued, to
    # be claimed and run again, which at-least-once allows; and the settle
    # that follows it, durable, flushes the WAL up to and past the claim.
    # Producers' and settlements' commits stay durable.
    claim: str = _claim(
        """
                SELECT c.id, c.queue, c.limits, c.circuit, c.rate_paid, c.priority,
                       c.scheduled_at
                FROM unnest($1::text[]) AS q(name)
                CROSS JOIN LATERAL (
                    SELECT r.id, r.priority, r.scheduled_at, r.queue, r.limits, r.circuit,
                           r.rate_paid
                    FROM {s}.jobs r
                    WHERE r.queue = q.name AND r.state IN {pending} AND r.held_by IS NULL
                      AND r.scheduled_at <= {now}
                    ORDER BY r.priority DESC, r.scheduled_at, r.id
                    LIMIT $2
                    FOR UPDATE SKIP LOCKED
                ) AS c
                WHERE NOT EXISTS (
                    SELECT FROM {s}.queues p WHERE p.name = q.name AND p.paused
                )
                ORDER BY c.priority DESC, c.scheduled_at, c.id
                LIMIT $2
"""
    )

    # The claim from one queue (a worker's usual case), the same rows in the
    # same order: without the unnest, the LATERAL and the second sort it
    # plans and runs in ~0.05 ms less.
    claim_queue: str = _claim(
        """
                SELECT r.id, r.queue, r.limits, r.circuit, r.rate_paid, r.priority,
                       r.scheduled_at
                FROM {s}.jobs r
                WHERE r.queue = $1 AND r.state IN {pending} AND r.held_by IS NULL
                  AND r.scheduled_at <= {now}
                  AND NOT EXISTS (SELECT FROM {s}.queues p WHERE p.name = $1 AND p.paused)
                ORDER BY r.priority DESC, r.scheduled_at, r.id
                LIMIT $2
                FOR UPDATE SKIP LOCKED
"""
    )

    # Seconds until the earliest pending job of the unpaused queues is due
    # (<= 0: one is ready now; NULL: none pending). jobs_ready is ordered by
    # priority first, so per queue the recursion takes the earliest job of
    # each priority in use, one index probe each, and the least of those.
    wait_for_work: str = """
        SELECT min(t.at) - {now}
        FROM unnest($1::text[]) AS q(name)
        CROSS JOIN LATERAL (
            WITH RECURSIVE first AS (
                (SELECT r.priority, r.scheduled_at FROM {s}.jobs r
                 WHERE r.queue = q.name AND r.state IN {pending} AND r.held_by IS NULL
                 ORDER BY r.priority DESC, r.scheduled_at LIMIT 1)
                UNION ALL
                SELECT n.priority, n.scheduled_at
                FROM first f CROSS JOIN LATERAL (
                    SELECT r.priority, r.scheduled_at FROM {s}.jobs r
                    WHERE r.queue = q.name AND r.state IN {pending} AND r.held_by IS NULL
                      AND r.priority < f.priority
                    ORDER BY r.priority DESC, r.scheduled_at LIMIT 1
                ) AS n
            )
            SELECT min(first.scheduled_at) AS at FROM first
        ) AS t
        WHERE NOT EXISTS (SELECT FROM {s}.queues p WHERE p.name = q.name AND p.paused)
    """

    # A batch's limits, written in the transaction that inserted it (only
    # batches with limits: the insert statements know nothing of them).
    set_limits: str = """
        UPDATE {s}.jobs j SET limits = x.limits, circuit = x.circuit
        FROM unnest($1::text[], $2::jsonb[], $3::jsonb[]) AS x(id, limits, circuit)
        WHERE j.id = x.id AND j.limits IS NULL AND j.circuit IS NULL
    """

    circuit_states: str = """
        SELECT name, state, failures, opened_at, probe, threshold, within, reset_after
        FROM {s}.circuits ORDER BY name
    """

    # An operator opens (``$2``) or closes a circuit.
    set_circuit: str = """
        INSERT INTO {s}.circuits AS c (name, state, opened_at)
        VALUES ($1, CASE WHEN $2 THEN 'open' ELSE 'closed' END,
                CASE WHEN $2 THEN {now} END)
        ON CONFLICT (name) DO UPDATE SET
            state = excluded.state, opened_at = excluded.opened_at, probe = NULL,
            failures = '{{}}'
        RETURNING name, state, failures, opened_at, probe, threshold, within, reset_after
    """

    limit_states: str = """
        SELECT l.slot, l.name, l.key, l.concurrency, l.rate, l.per, l.burst, l.running,
               l.tokens, l.refilled_at,
               (SELECT count(*) FROM {s}.jobs h WHERE h.held_by = l.slot AND h.state = 'queued')
        FROM {s}.limits l ORDER BY l.slot
    """

    heartbeat: str = """
        UPDATE {s}.jobs j SET lease_expires_at = {now} + $3::float8
        FROM unnest($1::text[], $2::text[]) AS l(id, token)
        WHERE j.id = l.id AND j.token = l.token AND j.state = 'active'
        RETURNING j.id, j.cancel_requested
    """

    progress: str = """
        WITH upd AS (
            UPDATE {s}.jobs SET progress = $3, progress_detail = $4::jsonb
            WHERE id = $1 AND token = $2 AND state = 'active'
            RETURNING id, name, queue, attempts, progress, progress_detail
        ){progress_events}
        SELECT true{events_told} FROM upd
    """

    # Append lines ($3) and keep the last $4, counting the ones dropped: the
    # right-hand sides all read the row as it was.
    log: str = """
        WITH upd AS (
            UPDATE {s}.jobs SET
                logs = (coalesce(logs, '{{}}') || $3::text[])[greatest(1,
                    coalesce(cardinality(logs), 0) + cardinality($3::text[]) - $4 + 1):],
                logs_dropped = logs_dropped
                    + greatest(0, coalesce(cardinality(logs), 0) + cardinality($3::text[]) - $4)
            WHERE id = $1 AND token = $2 AND state = 'active'
            RETURNING id, name, queue
        ){log_events}
        SELECT true{events_told} FROM upd
    """

    # The whole batch in one UPDATE ... FROM unnest; only rows still active
    # with the outcome's token match. Returns the applied ids.
    settle: str = """
        WITH upd AS (
            UPDATE {s}.jobs j SET
                state = o.state,
                result = CASE WHEN o.state = 'completed' THEN o.result ELSE j.result END,
                errors = CASE WHEN o.error IS NULL THEN j.errors
                              ELSE j.errors || jsonb_build_array(o.error) END,
                finished_at = CASE WHEN o.state IN ('completed', 'dead', 'cancelled')
                                   THEN {now} ELSE j.finished_at END,
                expires_at = CASE WHEN o.state = 'completed'
                                  THEN {now} + j.result_ttl END,
                scheduled_at = CASE WHEN o.state = 'failed'
                                    THEN coalesce(o.retry_at, {now})
                                    ELSE j.scheduled_at END,
                attempts = CASE WHEN o.state = 'queued' THEN greatest(j.attempts - 1, 0)
                                ELSE j.attempts END,
                key_held = j.key_held
                    AND (o.state NOT IN ('dead', 'cancelled') OR j.key_ttl IS NOT NULL),
                lease_expires_at = NULL,
                worker = NULL,
                token = NULL
            FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::jsonb[],
                        $6::float8[]) AS o(id, token, state, result, error, retry_at)
            WHERE j.id = o.id AND j.token = o.token AND j.state = 'active'
            RETURNING j.id, j.name, j.queue, j.state, j.attempts, j.started_at, j.finished_at,
                      j.scheduled_at, o.token, o.error,
                      CASE WHEN j.state IN ('completed', 'dead', 'cancelled') THEN {finish} END
                          AS finish
        ){settled_events}
        SELECT array_agg(id) AS applied,
               {s}.notify_work(array_agg(DISTINCT queue) FILTER (WHERE state = 'queued'))
                   AS woke,
               {s}.notify_later(array_agg(DISTINCT queue) FILTER (WHERE state = 'failed'))
                   AS later,
               {s}.notify_finished(
                   array_agg(id) FILTER (WHERE state IN ('completed', 'dead', 'cancelled')),
                   array_agg(finish) FILTER (WHERE state IN ('completed', 'dead', 'cancelled'))
               ) AS done
        FROM upd
    """

    # One outcome, the worker's usual settlement when jobs finish one at a
    # time: the same changes as ``settle``, from scalar parameters and
    # without the join, which plan in half the time. A row if applied.
    settle_one: str = """
        WITH upd AS (
            UPDATE {s}.jobs j SET
                state = $3::text,
                result = CASE WHEN $3::text = 'completed' THEN $4::bytea ELSE j.result END,
                errors = CASE WHEN $5::jsonb IS NULL THEN j.errors
                              ELSE j.errors || jsonb_build_array($5::jsonb) END,
                finished_at = CASE WHEN $3::text IN ('completed', 'dead', 'cancelled')
                                   THEN {now} ELSE j.finished_at END,
                expires_at = CASE WHEN $3::text = 'completed' THEN {now} + j.result_ttl END,
                scheduled_at = CASE WHEN $3::text = 'failed' THEN coalesce($6::float8, {now})
                                    ELSE j.scheduled_at END,
                attempts = CASE WHEN $3::text = 'queued' THEN greatest(j.attempts - 1, 0)
                                ELSE j.attempts END,
                key_held = j.key_held
                    AND ($3::text NOT IN ('dead', 'cancelled') OR j.key_ttl IS NOT NULL),
                lease_expires_at = NULL,
                worker = NULL,
                token = NULL
            WHERE j.id = $1 AND j.token = $2 AND j.state = 'active'
            RETURNING j.id, j.name, j.queue, j.state, j.attempts, j.started_at, j.finished_at,
                      j.scheduled_at, $2::text AS token, $5::jsonb AS error,
                      CASE WHEN j.state IN ('completed', 'dead', 'cancelled') THEN {finish} END
                          AS finish
        ){settled_events}
        SELECT CASE
            WHEN state = 'queued' THEN {s}.notify_work(ARRAY[queue])
            WHEN state = 'failed' THEN {s}.notify_later(ARRAY[queue])
            ELSE {s}.notify_finished(ARRAY[id], ARRAY[finish])
        END
        FROM upd
    """

    # Claimed jobs whose records cannot be read (``codec.leases``), taken
    # aside as dead letters: ids, the claim's tokens (a job recovered and
    # claimed by another worker meanwhile is left alone), the errors to
    # append, and whether the stored errors must be replaced instead (they
    # are what cannot be read). Their keys are freed and waiters told.
    take_aside: str = """
        WITH upd AS (
            UPDATE {s}.jobs j SET
                state = 'dead',
                errors = CASE WHEN b.fresh THEN jsonb_build_array(b.error)
                              ELSE j.errors || jsonb_build_array(b.error) END,
                finished_at = {now},
                expires_at = NULL,
                key_held = false,
                lease_expires_at = NULL,
                worker = NULL,
                token = NULL
            FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::bool[])
                AS b(id, token, error, fresh)
            WHERE j.id = b.id AND j.token = b.token AND j.state = 'active'
            RETURNING j.id, j.name, j.queue, j.attempts, b.token, b.error
        ){aside_events}
        SELECT array_agg(id) AS dead, {s}.notify_done(array_agg(id)) FROM upd
    """

    # A lapsed job whose cancellation was asked for ends cancelled; others
    # go back to the queue while they have attempts left, else dead. An
    # active job without a lease time (NULL or NaN: written by hand) has
    # lapsed too, or it would stay active for ever.
    recover: str = """
        WITH lapsed AS (
            SELECT id, token, CASE WHEN cancel_requested THEN 'cancelled'
                                   WHEN attempts < max_attempts THEN 'queued'
                                   ELSE 'dead' END AS next
            FROM {s}.jobs
            WHERE state = 'active' AND (lease_expires_at <= {now}
                OR lease_expires_at IS NULL OR lease_expires_at = 'NaN')
            FOR UPDATE SKIP LOCKED
        ),
        upd AS (
            UPDATE {s}.jobs j SET
                state = lapsed.next,
                errors = j.errors || jsonb_build_array(jsonb_build_object(
                    'kind', 'lost',
                    'message', 'lease held by worker ' || coalesce(j.worker, 'None')
                               || ' lapsed before the attempt finished',
                    'attempt', j.attempts,
                    'at', {now})),
                finished_at = CASE WHEN lapsed.next = 'queued' THEN j.finished_at
                                   ELSE {now} END,
                key_held = j.key_held AND (lapsed.next = 'queued' OR j.key_ttl IS NOT NULL),
                lease_expires_at = NULL,
                worker = NULL,
                token = NULL
            FROM lapsed WHERE j.id = lapsed.id
            RETURNING j.id, j.name, j.queue, j.state, j.attempts, lapsed.token,
                      j.errors -> -1 AS error
        ){recovered_events}
        SELECT count(*) AS n,
               {s}.notify_work(array_agg(DISTINCT queue) FILTER (WHERE state = 'queued')),
               {s}.notify_done(array_agg(id) FILTER (WHERE state <> 'queued'))
        FROM upd
    """

    whoami: str = """
        SELECT current_user, current_database(), host(inet_server_addr()),
               inet_server_port()
    """

    def __init__(self, schema_name: str, *, carry_jobs: bool = True, events: bool = True) -> None:
        if not schema.SCHEMA_NAME.fullmatch(schema_name):
            msg = f"invalid schema name {schema_name!r}"
            raise ValueError(msg)
        self.schema = schema_name
        self.events = events
        self.work_channel = f"{schema_name}:work"
        self.later_channel = f"{schema_name}:later"
        self.done_channel = f"{schema_name}:done"
        self.events_channel = f"{schema_name}:events"
        fields = {
            "s": f'"{schema_name}"',
            "now": NOW,
            "pending": schema.PENDING,
            "cols": COLUMNS,
            "work": f"'{self.work_channel}'",
            "later": f"'{self.later_channel}'",
            "done": f"'{self.done_channel}'",
            "events": f"'{self.events_channel}'",
            "finish": FINISH if carry_jobs else "NULL::text",
        }
        self.migrations = [(why, step.format(**fields)) for why, step in schema.MIGRATIONS]
        for name, fragment in FRAGMENTS.items():
            fields[name] = fragment.format(**fields) if events else ""
        for name, template in _TEMPLATES.items():
            setattr(self, name, template.format(**fields))


#: The templates, by the name of the attribute they fill (the operator verbs' too).
_TEMPLATES = {
    name: value
    for table in (OperatorStatements, Statements)
    for name, value in vars(table).items()
    if isinstance(value, str) and not name.startswith("_")
}
