"""The PostgreSQL backend's schema, migrations and statements.

Everything lives in one PostgreSQL schema per deployment (``asyncq`` unless
configured), so several apps, or the tests, share a database without seeing
each other. Statements are built once per schema name; the name is checked
against ``SCHEMA_NAME`` first, so nothing user-supplied is ever spliced into
SQL except that identifier. Values always travel as parameters.

Times are epoch seconds in ``double precision`` columns, the same floats the
records carry, and ``NOW`` (the server's transaction clock) is compared to them
directly, so the claim's range condition stays an index condition.

Layout of ``jobs`` by the question each index answers (as of the latest
migration):

- ``jobs_ready`` (partial, pending states): the claim. Ordered like the claim
  (queue, priority desc, scheduled_at, id); a scheduled or failed job sits in
  it from the start and is claimable as soon as ``scheduled_at <= NOW``, so no
  promotion pass exists. It carries ``state`` for the pending counts, and its
  first entry per priority bounds ``wait_for_work``.
- ``jobs_key`` (unique, partial on ``key_held``): idempotency keys. ``key``
  stays on the record for the operator; ``key_held`` says whether the job
  still holds it. Dead and cancelled jobs drop it in the statement that ends
  them. A completed job keeps it until ``expires_at`` (finish + result TTL),
  which no index predicate can express, so every statement that takes a key
  first deletes an expired holder of it.
- ``jobs_lease`` (partial, active): recovery of lapsed leases, and the active
  counts (it carries ``queue``).
- ``jobs_finished`` (partial, terminal states): retention, purge, and the
  terminal counts (it carries ``queue``).
- ``jobs_expires`` (partial): TTL expiry.

A new job so touches the primary key and ``jobs_ready`` only (and
``jobs_key`` with a key); a claim the primary key and ``jobs_lease``; a
settlement the primary key and the index of the state it ends in.

Notifications go out with ``pg_notify`` inside the statement that changes the
state, so they are sent if and only if it commits. On ``<schema>:work`` the
payload is a queue name a job is ready in now (enqueued, handed back,
recovered, retried from dead); on ``<schema>:later`` a queue name whose
earliest due time may have moved (a job enqueued for later or failed to be
retried, the queue resumed), which is what lets a worker keep the due time it
last read while only ``work`` notices arrive. On ``<schema>:done`` a JSON
array with one item per
finished job (one notification per settled batch, split to stay under the
8000-byte limit). An item is the job's id (a string), or, from a settlement,
what it changed on the job when that fits (a ``Finish``, from ``FINISH``):
a waiter, who read the job before waiting, then has it as stored without
reading it again (``read_done``).
"""

from __future__ import annotations

import re
from collections.abc import Container
from contextlib import suppress
from typing import Any

import msgspec
from msgspec.structs import replace

from .._records import TERMINAL_STATES, ErrorInfo, JobRecord, JobState
from ..exceptions import ConfigurationError

__all__ = [
    "COLUMNS",
    "COPY_COLUMNS",
    "MIGRATIONS",
    "SCHEMA_NAME",
    "Statements",
    "FINISH",
    "Finish",
    "check_versions",
    "decode",
    "read_done",
]

#: Schema names are plain lower-case identifiers, short enough that the
#: channel names derived from them stay within PostgreSQL's 63 bytes.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")

#: The server's clock as epoch seconds. ``now()`` is the transaction's start:
#: one value for the whole statement, and stable, so it can bound an index scan.
NOW = "extract(epoch from now())::float8"

#: States a job waits in before a claim (the claim index's predicate).
PENDING = "('queued', 'scheduled', 'failed')"

#: Columns read into a ``JobRecord``, in the order ``_decode`` expects.
COLUMNS = (
    "id, name, queue, payload, state, priority, attempts, max_attempts, timeout, key,"
    " result_ttl, enqueued_at, scheduled_at, started_at, finished_at, lease_expires_at,"
    " worker, result, errors, progress, cancel_requested, headers"
)

_errors = msgspec.json.Decoder(tuple[ErrorInfo, ...])
_headers = msgspec.json.Decoder(dict[str, str])


def decode(row: Any) -> JobRecord:
    """A ``JobRecord`` from a row (or record) of ``COLUMNS``."""
    errors, headers = row[18], row[21]
    return JobRecord(
        id=row[0],
        name=row[1],
        queue=row[2],
        payload=row[3],
        state=JobState(row[4]),
        priority=row[5],
        attempts=row[6],
        max_attempts=row[7],
        timeout=row[8],
        key=row[9],
        result_ttl=row[10],
        enqueued_at=row[11],
        scheduled_at=row[12],
        started_at=row[13],
        finished_at=row[14],
        lease_expires_at=row[15],
        worker=row[16],
        result=row[17],
        errors=() if errors == "[]" else _errors.decode(errors),
        progress=row[19],
        cancel_requested=row[20],
        headers={} if headers == "{}" else _headers.decode(headers),
    )


class Finish(msgspec.Struct, array_like=True, frozen=True):
    """What a settlement that finished a job left in the columns that change after enqueue.

    A done notice carries it (``FINISH``); with the job as read before, it is
    the job as stored after the settlement (``applied_to``). Every other column
    of ``COLUMNS`` is written once, by the enqueue; ``lease_expires_at`` and
    ``worker`` are empty on a finished job.
    """

    id: str
    state: JobState
    attempts: int
    scheduled_at: float
    started_at: float | None
    finished_at: float | None
    result: bytes | None
    errors: tuple[ErrorInfo, ...]
    progress: float | None
    cancel_requested: bool

    def applied_to(self, job: JobRecord) -> JobRecord:
        """``job`` (as read before it finished) as this settlement left it."""
        return replace(
            job,
            state=self.state,
            attempts=self.attempts,
            scheduled_at=self.scheduled_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            lease_expires_at=None,
            worker=None,
            result=self.result,
            errors=self.errors,
            progress=self.progress,
            cancel_requested=self.cancel_requested,
        )


#: ``Finish`` of the row ``j``, as a JSON array: bytes in base64 (without the
#: line breaks ``encode`` puts in), jsonb inline, floats in the server's
#: shortest exact form.
FINISH = (
    "json_build_array(j.id, j.state, j.attempts, j.scheduled_at, j.started_at, j.finished_at,"
    " translate(encode(j.result, 'base64'), chr(10), ''), j.errors, j.progress,"
    " j.cancel_requested)::text"
)

_items = msgspec.json.Decoder(list[msgspec.Raw])
_id = msgspec.json.Decoder(str)
_finish = msgspec.json.Decoder(Finish)


class _FirstId(msgspec.Struct, array_like=True):
    """The id at the head of a ``Finish`` (msgspec ignores what follows)."""

    id: str


_first_id = msgspec.json.Decoder(_FirstId)


def read_done(payload: str, wanted: Container[str]) -> list[tuple[str, Finish | None]]:
    """The jobs of a done notice whose ids are in ``wanted``, with their ``Finish`` if carried.

    Only those items are decoded in full. An item that is neither an id nor
    an array headed by one is skipped; a ``Finish`` that does not decode, or
    names a state that is not terminal (a notice sent by someone else), gives
    its id alone, so the waiter reads the job. Raises ``msgspec.DecodeError``
    for a payload that is not a JSON array.
    """
    found: list[tuple[str, Finish | None]] = []
    for item in _items.decode(payload):
        raw = bytes(item)
        try:
            job_id = _id.decode(raw) if raw[:1] == b'"' else _first_id.decode(raw).id
        except msgspec.DecodeError:
            continue
        if job_id not in wanted:
            continue
        finish: Finish | None = None
        if raw[:1] == b"[":
            with suppress(msgspec.DecodeError):
                finish = _finish.decode(raw)
            if finish is not None and finish.state not in TERMINAL_STATES:
                finish = None
        found.append((job_id, finish))
    return found


# Migrations: version N is MIGRATIONS[N - 1]. Append only; never edit a step
# that has shipped. Each step runs in the migrating transaction.
_V1 = """
CREATE TABLE {s}.jobs (
    id text COLLATE "C" PRIMARY KEY,
    name text NOT NULL,
    queue text NOT NULL,
    payload bytea NOT NULL,
    state text NOT NULL CHECK (state IN
        ('scheduled', 'queued', 'active', 'failed', 'completed', 'dead', 'cancelled')),
    priority integer NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 1,
    timeout double precision,
    key text,
    key_held boolean NOT NULL DEFAULT false CHECK (NOT key_held OR key IS NOT NULL),
    result_ttl double precision,
    enqueued_at double precision NOT NULL,
    scheduled_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    expires_at double precision,
    lease_expires_at double precision,
    worker text,
    token text,
    result bytea,
    errors jsonb NOT NULL DEFAULT '[]',
    progress double precision,
    cancel_requested boolean NOT NULL DEFAULT false,
    headers jsonb NOT NULL DEFAULT '{{}}'
);
-- Every claim and settle rewrites rows: vacuum and analyze a queue table
-- sooner than PostgreSQL's defaults (20% and 10% of the rows changed).
ALTER TABLE {s}.jobs SET (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05
);
CREATE INDEX jobs_ready ON {s}.jobs (queue, priority DESC, scheduled_at, id)
    WHERE state IN {pending};
CREATE INDEX jobs_queue_state ON {s}.jobs (queue, state, scheduled_at);
CREATE UNIQUE INDEX jobs_key ON {s}.jobs (queue, key) WHERE key_held;
CREATE INDEX jobs_lease ON {s}.jobs (lease_expires_at) WHERE state = 'active';
CREATE INDEX jobs_finished ON {s}.jobs (state, finished_at)
    WHERE state IN ('completed', 'dead', 'cancelled');
CREATE INDEX jobs_expires ON {s}.jobs (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE {s}.queues (
    name text PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false
);

-- One notification per queue; names too long for a payload are left to the
-- waiters' safety-net poll rather than failing the write.
CREATE FUNCTION {s}.notify_work(queues text[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    q text;
    n integer := 0;
BEGIN
    FOREACH q IN ARRAY coalesce(queues, '{{}}') LOOP
        IF octet_length(q) < 7900 THEN
            PERFORM pg_notify({work}, q);
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;

-- Finished job ids as JSON arrays, each payload under the 8000-byte limit.
CREATE FUNCTION {s}.notify_done(ids text[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    id text;
    chunk text[] := '{{}}';
    size integer := 2;
    n integer := 0;
BEGIN
    FOREACH id IN ARRAY coalesce(ids, '{{}}') LOOP
        CONTINUE WHEN octet_length(id) > 7000;
        IF size + octet_length(id) + 4 > 7900 THEN
            PERFORM pg_notify({done}, array_to_json(chunk)::text);
            n := n + 1;
            chunk := '{{}}';
            size := 2;
        END IF;
        chunk := chunk || id;
        size := size + octet_length(id) + 4;
    END LOOP;
    IF cardinality(chunk) > 0 THEN
        PERFORM pg_notify({done}, array_to_json(chunk)::text);
        n := n + 1;
    END IF;
    RETURN n;
END
$$;
"""

# Every new job paid for jobs_queue_state, and every claim and settlement
# again (the state is in its key): it only served counting and the next due
# time. Counts now come from the indexes each state is in anyway (the ready
# index for pending jobs, the lease index for active ones, the finished index
# for the rest), each carrying the column a count groups by; the next due
# time from the ready index, one probe per priority in use.
_V2 = """
DROP INDEX {s}.jobs_queue_state;
DROP INDEX {s}.jobs_ready;
CREATE INDEX jobs_ready ON {s}.jobs (queue, priority DESC, scheduled_at, id)
    INCLUDE (state) WHERE state IN {pending};
DROP INDEX {s}.jobs_lease;
CREATE INDEX jobs_lease ON {s}.jobs (lease_expires_at) INCLUDE (queue)
    WHERE state = 'active';
DROP INDEX {s}.jobs_finished;
CREATE INDEX jobs_finished ON {s}.jobs (state, finished_at) INCLUDE (queue)
    WHERE state IN ('completed', 'dead', 'cancelled');
"""

# A settlement's done notice carries the Finish of each job that fits (see
# the module's docstring), so that a waiter need not read the job again.
# ``finishes[i]`` is the Finish of ``ids[i]`` as JSON, or NULL to send the id
# alone; one too large for a payload goes as the id. notify_done stays for
# cancel and recover.
_V3 = """
CREATE FUNCTION {s}.notify_finished(ids text[], finishes text[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    item text;
    chunk text := '';
    n integer := 0;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(ids), 0) LOOP
        item := finishes[i];
        IF item IS NULL OR octet_length(item) > 7900 THEN
            item := to_json(ids[i])::text;
            CONTINUE WHEN octet_length(item) > 7900;
        END IF;
        IF chunk <> '' AND octet_length(chunk) + octet_length(item) >= 7900 THEN
            PERFORM pg_notify({done}, '[' || chunk || ']');
            n := n + 1;
            chunk := '';
        END IF;
        chunk := CASE WHEN chunk = '' THEN item ELSE chunk || ',' || item END;
    END LOOP;
    IF chunk <> '' THEN
        PERFORM pg_notify({done}, '[' || chunk || ']');
        n := n + 1;
    END IF;
    RETURN n;
END
$$;
"""

# Work that is ready now and work due later are told apart (see the module's
# docstring): notify_later is notify_work on the channel for the latter.
_V4 = """
CREATE FUNCTION {s}.notify_later(queues text[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    q text;
    n integer := 0;
BEGIN
    FOREACH q IN ARRAY coalesce(queues, '{{}}') LOOP
        IF octet_length(q) < 7900 THEN
            PERFORM pg_notify({later}, q);
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;
"""

MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("jobs, queues, notifications", _V1),
    ("counts and due times from the per-state indexes", _V2),
    ("done notices carry the finished jobs", _V3),
    ("notices of work due later on a channel of their own", _V4),
)


def check_versions(versions: set[int], *, where: str, migrating: bool = False) -> None:
    """Refuse a schema this code cannot use: newer always; missing steps unless migrating.

    Args:
        versions: the versions recorded in the schema's ``migrations`` table.
        where: the schema and server, for the message.
        migrating: the caller is about to apply the missing steps.
    """
    latest = len(MIGRATIONS)
    newest = max(versions, default=0)
    if newest > latest:
        msg = (
            f"the {where} is at version {newest}, newer than this asyncq knows "
            f"({latest}): upgrade asyncq, or point it at another schema"
        )
        raise ConfigurationError(msg)
    if migrating:
        return
    fix = "run `asyncq migrate` (or pass migrate=True)"
    if not versions:
        msg = f"the {where} has no asyncq tables: {fix}"
        raise ConfigurationError(msg)
    missing = sorted(set(range(1, latest + 1)) - versions)
    if missing:
        msg = f"the {where} is out of date (missing migrations {missing}): {fix}"
        raise ConfigurationError(msg)


class Statements:
    """Every statement of the backend, for one schema.

    Args:
        schema: a name matching ``SCHEMA_NAME`` (checked by the caller).
        carry_jobs: settlements' done notices carry what they changed on the
            jobs (``Finish``) when it fits; otherwise the ids only.
    """

    def __init__(self, schema: str, *, carry_jobs: bool = True) -> None:
        if not SCHEMA_NAME.fullmatch(schema):
            msg = f"invalid schema name {schema!r}"
            raise ValueError(msg)
        self.schema = schema
        self.work_channel = f"{schema}:work"
        self.later_channel = f"{schema}:later"
        self.done_channel = f"{schema}:done"
        fields = {
            "s": f'"{schema}"',
            "now": NOW,
            "pending": PENDING,
            "cols": COLUMNS,
            "work": f"'{self.work_channel}'",
            "later": f"'{self.later_channel}'",
            "done": f"'{self.done_channel}'",
            "finish": FINISH if carry_jobs else "NULL::text",
        }
        self.migrations = [(why, sql.format(**fields)) for why, sql in MIGRATIONS]
        for name, template in _TEMPLATES.items():
            setattr(self, name, template.format(**fields))

    def list_jobs(self, filters: tuple[str, ...]) -> str:
        """``list_jobs`` with a condition per given filter (``state``, ``queue``,
        ``name``, ``after``), each a parameter in that order, then the limit."""
        clauses = [_ALIVE.format(now=NOW)]
        for number, column in enumerate(filters, start=1):
            clauses.append(_LIST_FILTERS[column].format(number))
        return (
            f'SELECT {COLUMNS} FROM "{self.schema}".jobs j WHERE {" AND ".join(clauses)}'
            f" ORDER BY j.id LIMIT ${len(filters) + 1}"
        )

    # Filled in from _TEMPLATES; declared for type checkers.
    bootstrap: str
    versions: str
    record_version: str
    schema_exists: str
    drop: str
    enqueue: str
    enqueue_plain: str
    enqueue_one: str
    enqueue_copied: str
    clamp_copied: str
    lookup: str
    get: str
    cancel: str
    claim: str
    claim_queue: str
    wait_for_work: str
    heartbeat: str
    progress: str
    settle: str
    settle_one: str
    recover: str
    prune_expired: str
    prune_completed: str
    prune_dead: str
    stats: str
    retry_dead_ids: str
    retry_dead_filter: str
    purge: str
    set_paused: str
    whoami: str


_ALIVE = "(j.expires_at IS NULL OR j.expires_at > {now})"
_LIST_FILTERS = {
    "state": "j.state = ${}",
    "queue": "j.queue = ${}",
    "name": "j.name = ${}",
    "after": "j.id > ${}",
}


# The key a retried dead job or a new job takes is free unless a live holder
# has it; an expired completed holder is deleted in the same statement.
def _claim(picked: str) -> str:
    """The claim statement around ``picked``, a subquery of the ids to claim (see "claim")."""
    return (
        """
        WITH relaxed AS MATERIALIZED (
            SELECT set_config('synchronous_commit', 'off', true)
        ),
        claimed AS (
            UPDATE {s}.jobs j SET
                state = 'active',
                attempts = j.attempts + 1,
                started_at = {now},
                worker = $3,
                lease_expires_at = {now} + $4::float8,
                cancel_requested = false,
                token = gen_random_uuid()::text
            WHERE j.id IN ("""
        + picked
        + """            )
            RETURNING {cols}, j.token
        )
        SELECT claimed.* FROM relaxed, claimed
    """
    )


_TEMPLATES: dict[str, str] = {
    "bootstrap": """
        CREATE SCHEMA IF NOT EXISTS {s};
        CREATE TABLE IF NOT EXISTS {s}.migrations (
            version integer PRIMARY KEY,
            description text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        );
    """,
    "versions": "SELECT version FROM {s}.migrations ORDER BY version",
    "record_version": "INSERT INTO {s}.migrations (version, description) VALUES ($1, $2)",
    "schema_exists": "SELECT to_regclass('{s}.migrations') IS NOT NULL",
    "drop": "DROP SCHEMA IF EXISTS {s} CASCADE",
    # What a batch's conflicting inputs ran into, read after the fact: a holder
    # committed by another transaction after ``enqueue``'s snapshot, or an
    # input already stored by an earlier try of the same batch.
    "lookup": """
        SELECT {cols} FROM {s}.jobs j
        WHERE (j.id = ANY($1::text[]) OR (j.key_held AND (j.queue, j.key) IN (
                SELECT * FROM unnest($2::text[], $3::text[]))))
          AND """
    + _ALIVE,
    "get": "SELECT {cols} FROM {s}.jobs j WHERE j.id = $1 AND " + _ALIVE,
    "cancel": """
        WITH upd AS (
            UPDATE {s}.jobs SET
                cancel_requested = cancel_requested OR state = 'active',
                state = CASE WHEN state = 'active' THEN state ELSE 'cancelled' END,
                finished_at = CASE WHEN state = 'active' THEN finished_at ELSE {now} END,
                key_held = key_held AND state = 'active'
            WHERE id = $1 AND state IN ('scheduled', 'queued', 'failed', 'active')
            RETURNING {cols}
        ),
        woke AS (
            SELECT {s}.notify_done(array_agg(id) FILTER (WHERE state = 'cancelled')) AS n
            FROM upd
        )
        SELECT {cols} FROM upd, woke
        UNION ALL
        SELECT {cols} FROM {s}.jobs j
        WHERE j.id = $1 AND NOT EXISTS (SELECT FROM upd) AND """
    + _ALIVE,
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
    "claim": _claim("""
                SELECT c.id
                FROM unnest($1::text[]) AS q(name)
                CROSS JOIN LATERAL (
                    SELECT r.id, r.priority, r.scheduled_at
                    FROM {s}.jobs r
                    WHERE r.queue = q.name AND r.state IN {pending}
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
"""),
    # The claim from one queue (a worker's usual case), the same rows in the
    # same order: without the unnest, the LATERAL and the second sort it
    # plans and runs in ~0.05 ms less.
    "claim_queue": _claim("""
                SELECT r.id
                FROM {s}.jobs r
                WHERE r.queue = $1 AND r.state IN {pending}
                  AND r.scheduled_at <= {now}
                  AND NOT EXISTS (SELECT FROM {s}.queues p WHERE p.name = $1 AND p.paused)
                ORDER BY r.priority DESC, r.scheduled_at, r.id
                LIMIT $2
                FOR UPDATE SKIP LOCKED
"""),
    # Seconds until the earliest pending job of the unpaused queues is due
    # (<= 0: one is ready now; NULL: none pending). jobs_ready is ordered by
    # priority first, so per queue the recursion takes the earliest job of
    # each priority in use, one index probe each, and the least of those.
    "wait_for_work": """
        SELECT min(t.at) - {now}
        FROM unnest($1::text[]) AS q(name)
        CROSS JOIN LATERAL (
            WITH RECURSIVE first AS (
                (SELECT r.priority, r.scheduled_at FROM {s}.jobs r
                 WHERE r.queue = q.name AND r.state IN {pending}
                 ORDER BY r.priority DESC, r.scheduled_at LIMIT 1)
                UNION ALL
                SELECT n.priority, n.scheduled_at
                FROM first f CROSS JOIN LATERAL (
                    SELECT r.priority, r.scheduled_at FROM {s}.jobs r
                    WHERE r.queue = q.name AND r.state IN {pending}
                      AND r.priority < f.priority
                    ORDER BY r.priority DESC, r.scheduled_at LIMIT 1
                ) AS n
            )
            SELECT min(first.scheduled_at) AS at FROM first
        ) AS t
        WHERE NOT EXISTS (SELECT FROM {s}.queues p WHERE p.name = q.name AND p.paused)
    """,
    "heartbeat": """
        UPDATE {s}.jobs j SET lease_expires_at = {now} + $3::float8
        FROM unnest($1::text[], $2::text[]) AS l(id, token)
        WHERE j.id = l.id AND j.token = l.token AND j.state = 'active'
        RETURNING j.id, j.cancel_requested
    """,
    "progress": """
        UPDATE {s}.jobs SET progress = $3
        WHERE id = $1 AND token = $2 AND state = 'active'
        RETURNING true
    """,
    # The whole batch in one UPDATE ... FROM unnest; only rows still active
    # with the outcome's token match. Returns the applied ids.
    "settle": """
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
                key_held = j.key_held AND o.state NOT IN ('dead', 'cancelled'),
                lease_expires_at = NULL,
                worker = NULL,
                token = NULL
            FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::jsonb[],
                        $6::float8[]) AS o(id, token, state, result, error, retry_at)
            WHERE j.id = o.id AND j.token = o.token AND j.state = 'active'
            RETURNING j.id, j.queue, j.state,
                      CASE WHEN j.state IN ('completed', 'dead', 'cancelled') THEN {finish} END
                          AS finish
        )
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
    """,
    # One outcome, the worker's usual settlement when jobs finish one at a
    # time: the same changes as ``settle``, from scalar parameters and
    # without the join, which plan in half the time. A row if applied.
    "settle_one": """
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
            key_held = j.key_held AND $3::text NOT IN ('dead', 'cancelled'),
            lease_expires_at = NULL,
            worker = NULL,
            token = NULL
        WHERE j.id = $1 AND j.token = $2 AND j.state = 'active'
        RETURNING CASE
            WHEN j.state = 'queued' THEN {s}.notify_work(ARRAY[j.queue])
            WHEN j.state = 'failed' THEN {s}.notify_later(ARRAY[j.queue])
            ELSE {s}.notify_finished(ARRAY[j.id], ARRAY[{finish}])
        END
    """,
    # A lapsed job whose cancellation was asked for ends cancelled; others
    # go back to the queue while they have attempts left, else dead.
    "recover": """
        WITH lapsed AS (
            SELECT id, CASE WHEN cancel_requested THEN 'cancelled'
                            WHEN attempts < max_attempts THEN 'queued'
                            ELSE 'dead' END AS next
            FROM {s}.jobs
            WHERE state = 'active' AND lease_expires_at <= {now}
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
                key_held = j.key_held AND lapsed.next = 'queued',
                lease_expires_at = NULL,
                worker = NULL,
                token = NULL
            FROM lapsed WHERE j.id = lapsed.id
            RETURNING j.id, j.queue, j.state
        )
        SELECT count(*) AS n,
               {s}.notify_work(array_agg(DISTINCT queue) FILTER (WHERE state = 'queued')),
               {s}.notify_done(array_agg(id) FILTER (WHERE state <> 'queued'))
        FROM upd
    """,
    "prune_expired": """
        DELETE FROM {s}.jobs WHERE id IN (
            SELECT id FROM {s}.jobs WHERE expires_at <= {now}
            ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
    """,
    # Completed jobs kept "forever" (no result TTL) go after the retention.
    "prune_completed": """
        DELETE FROM {s}.jobs WHERE id IN (
            SELECT id FROM {s}.jobs
            WHERE state = 'completed' AND finished_at < {now} - $2::float8
              AND expires_at IS NULL
            ORDER BY finished_at LIMIT $1 FOR UPDATE SKIP LOCKED)
    """,
    "prune_dead": """
        DELETE FROM {s}.jobs WHERE id IN (
            SELECT id FROM {s}.jobs
            WHERE state IN ('dead', 'cancelled') AND finished_at < {now} - $2::float8
            ORDER BY finished_at LIMIT $1 FOR UPDATE SKIP LOCKED)
    """,
    # Counts come from the index each state is in (index-only scans when the
    # visibility map is current), never from job bodies: jobs_ready for the
    # pending states, jobs_lease for active, jobs_finished for the rest.
    "stats": """
        WITH names AS (
            SELECT name, paused FROM {s}.queues
            WHERE $1::text[] IS NULL OR name = ANY($1::text[])
        ),
        counts AS (
            SELECT queue, state, count(*) AS n FROM {s}.jobs
            WHERE queue IN (SELECT name FROM names) AND state IN {pending}
            GROUP BY queue, state
            UNION ALL
            SELECT queue, state, count(*) AS n FROM {s}.jobs
            WHERE queue IN (SELECT name FROM names) AND state = 'active'
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
              AND scheduled_at <= {now}
            GROUP BY queue
        )
        SELECT n.name, n.paused, c.state, c.n, r.oldest
        FROM names n
        LEFT JOIN counts c ON c.queue = n.name
        LEFT JOIN ready r ON r.queue = n.name
    """,
    "purge": """
        DELETE FROM {s}.jobs WHERE id IN (
            SELECT id FROM {s}.jobs
            WHERE state = ANY($1::text[]) AND finished_at < $2
              AND ($3::text IS NULL OR queue = $3)
            ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)
    """,
    "set_paused": """
        WITH upd AS (
            INSERT INTO {s}.queues (name, paused) VALUES ($1, $2)
            ON CONFLICT (name) DO UPDATE SET paused = excluded.paused
            RETURNING name, paused
        )
        SELECT {s}.notify_later(array_agg(name) FILTER (WHERE NOT paused)) FROM upd
    """,
    "whoami": """
        SELECT current_user, current_database(), host(inet_server_addr()),
               inet_server_port()
    """,
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
              AND h.expires_at <= {now}
            RETURNING h.id
        ),
        ok AS (
            SELECT DISTINCT ON (c.queue, coalesce(c.key, c.id)) c.id
            FROM cand c
            WHERE c.key IS NULL OR NOT EXISTS (
                SELECT FROM {s}.jobs j
                WHERE j.key_held AND j.queue = c.queue AND j.key = c.key AND """
        + _ALIVE
        + """)
            ORDER BY c.queue, coalesce(c.key, c.id), c.id
        ),
        upd AS (
            UPDATE {s}.jobs j SET
                state = 'queued', attempts = 0, finished_at = NULL, scheduled_at = {now},
                key_held = j.key IS NOT NULL, lease_expires_at = NULL, worker = NULL,
                token = NULL
            FROM ok
            WHERE j.id = ok.id AND (SELECT count(*) FROM freed) >= 0
            RETURNING j.id, j.queue
        )
        SELECT array_agg(id) AS ids, {s}.notify_work(array_agg(DISTINCT queue)) FROM upd
        """
    )


_TEMPLATES["retry_dead_ids"] = _retry_dead("id = ANY($1::text[])", "$2")
_TEMPLATES["retry_dead_filter"] = _retry_dead(
    "($1::text IS NULL OR queue = $1) AND ($2::text IS NULL OR name = $2)", "$3"
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
    freed = """
        freed AS (
            DELETE FROM {s}.jobs j USING b
            WHERE j.key_held AND j.queue = b.queue AND j.key = b.key
              AND j.expires_at <= {now}
            RETURNING j.id
        ),"""
    holders = (
        """
        UNION ALL
        SELECT false, b.id, h.state, h.rec
        FROM b CROSS JOIN LATERAL (
            SELECT j.state, ROW({cols}) AS rec FROM {s}.jobs j
            WHERE j.key_held AND j.queue = b.queue AND j.key = b.key AND """
        + _ALIVE
        + """
        ) AS h"""
    )
    return (
        """
        WITH b AS (
            SELECT * FROM unnest(
                $1::text[], $2::text[], $3::text[], $4::bytea[], $5::int[], $6::int[],
                $7::int[], $8::float8[], $9::text[], $10::float8[], $11::float8[],
                $12::float8[], $13::jsonb[]
            ) WITH ORDINALITY AS b(
                id, name, queue, payload, priority, attempts, max_attempts, timeout,
                key, result_ttl, enqueued_at, scheduled_at, headers, ord
            )
        ),"""
        + (freed if keyed else "")
        + """
        ins AS (
            INSERT INTO {s}.jobs AS j (
                id, name, queue, payload, state, priority, attempts, max_attempts,
                timeout, key, key_held, result_ttl, enqueued_at, scheduled_at, headers
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
                   b.headers
            FROM b"""
        + (
            "\n            WHERE (SELECT count(*) FROM freed) >= 0  -- frees keys first"
            if keyed
            else ""
        )
        + """
            ORDER BY b.ord
            ON CONFLICT DO NOTHING
            RETURNING j.id, j.queue, j.state
        ),
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


_TEMPLATES["enqueue"] = _enqueue(keyed=True)
_TEMPLATES["enqueue_plain"] = _enqueue(keyed=False)

# One job without a key: the common ``Handler.enqueue``. A VALUES row plans in
# a fraction of the time the unnest form takes (every statement is planned
# afresh, see ``PostgresBackend``), and the notification needs no function
# call. Same columns, rules and reply as ``enqueue_plain``.
_TEMPLATES["enqueue_one"] = """
    WITH ins AS (
        INSERT INTO {s}.jobs AS j (
            id, name, queue, payload, state, priority, attempts, max_attempts,
            timeout, result_ttl, enqueued_at, scheduled_at, headers
        )
        VALUES (
            $1::text, $2::text, $3::text, $4::bytea,
            CASE WHEN $11::float8 > $10::float8 AND $11::float8 > {now}
                 THEN 'scheduled' ELSE 'queued' END,
            $5::int, $6::int, $7::int, $8::float8, $9::float8, $10::float8,
            CASE WHEN $11::float8 > $10::float8 THEN $11::float8
                 ELSE least($11::float8, {now}) END,
            $12::jsonb
        )
        ON CONFLICT DO NOTHING
        RETURNING j.id, j.queue, j.state
    ),
    known AS (
        INSERT INTO {s}.queues (name) SELECT queue FROM ins
        ON CONFLICT DO NOTHING
    )
    SELECT true AS new, ins.id, ins.state, NULL AS rec,
           CASE WHEN octet_length(ins.queue) < 7900 THEN pg_notify(
               CASE WHEN ins.state = 'queued' THEN {work} ELSE {later} END, ins.queue) END
    FROM ins
"""

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
)

# After a batch was copied in, in its transaction: record its queues, notify
# them (sent at commit), and tell whether the producer's clock ran ahead of
# the server's: $1 is the batch's latest scheduled_at. Only then does
# ``clamp_copied`` pull those jobs back to now, so that they are ready
# at once (a copy cannot compute columns on the server).
_TEMPLATES["enqueue_copied"] = """
    WITH known AS (
        INSERT INTO {s}.queues (name) SELECT unnest($2::text[])
        ON CONFLICT DO NOTHING
    )
    SELECT $1::float8 > {now} AS ahead, {s}.notify_work($2::text[])
"""
_TEMPLATES["clamp_copied"] = """
    UPDATE {s}.jobs SET scheduled_at = {now}
    WHERE id = ANY($1::text[]) AND state = 'queued' AND scheduled_at > {now}
"""
