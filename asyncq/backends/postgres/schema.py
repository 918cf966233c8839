"""The PostgreSQL backend's schema: its name, its tables and functions, and migrating them.

Everything lives in one PostgreSQL schema per deployment (``asyncq`` unless
configured), so several apps, or the tests, share a database without seeing
each other. The name is checked against ``SCHEMA_NAME`` before anything is
built from it: it is the one identifier spliced into SQL. The schema is
versioned by its ``migrations`` table; ``migrate`` applies the missing steps
of ``MIGRATIONS`` in one transaction, and ``check_versions`` refuses a schema
this code cannot use.

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

Notifications go out with ``pg_notify`` inside the statement that changes the
state, through the functions defined here, so they are sent if and only if it
commits. On ``<schema>:work`` the payload is a queue name a job is ready in
now (enqueued, handed back, recovered, retried from dead); on
``<schema>:later`` a queue name whose earliest due time may have moved (a job
enqueued for later or failed to be retried, the queue resumed), which is what
lets a worker keep the due time it last read while only ``work`` notices
arrive. On ``<schema>:done`` a JSON array with one item per finished job (one
notification per settled batch, split to stay under the 8000-byte limit): see
``codec`` for the items.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from ...exceptions import ConfigurationError

if TYPE_CHECKING:
    from .listen import Connection
    from .sql import Statements

__all__ = [
    "ALIVE",
    "BOOTSTRAP",
    "DROP",
    "EXPIRED",
    "HOLDS",
    "LAPSED",
    "MIGRATIONS",
    "PENDING",
    "RECORD_VERSION",
    "SCHEMA_EXISTS",
    "SCHEMA_NAME",
    "VERSIONS",
    "check_name",
    "check_versions",
    "lock_key",
    "migrate",
    "recorded_versions",
]

#: Schema names are plain lower-case identifiers, short enough that the
#: channel names derived from them stay within PostgreSQL's 63 bytes.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")

#: States a job waits in before a claim (the claim index's predicate).
PENDING = "('queued', 'scheduled', 'failed')"

#: The key a retried dead job or a new job takes is free unless a live holder
#: has it (``ALIVE``, of a job ``j``); an expired completed holder
#: (``EXPIRED``, of a holder ``h``) is deleted in the same statement. Only a
#: completed job expires: an ``expires_at`` on any other (written by hand)
#: neither hides it nor lets it be deleted. Templates: ``{now}`` is ``sql.NOW``.
ALIVE = "(j.expires_at IS NULL OR j.expires_at > {now} OR j.state <> 'completed')"
EXPIRED = "h.expires_at <= {now} AND h.state = 'completed'"

#: A job with a ``key_ttl`` (``_common.holds_key``) keeps ``key_held`` when it
#: finishes, and holds the key while ``HOLDS`` (of a job ``j``, with ``ALIVE``)
#: says so. Once its period is over (``LAPSED``, of a holder ``h``, which
#: ``EXPIRED`` did not delete), the statement that wants the key clears
#: ``key_held`` first: the job itself stays. Jobs without a ``key_ttl`` pass.
HOLDS = (
    "(j.key_ttl IS NULL OR j.state NOT IN ('completed', 'dead', 'cancelled')"
    " OR coalesce(j.finished_at, 0) + j.key_ttl > {now})"
)
LAPSED = (
    "h.key_ttl IS NOT NULL AND h.state IN ('completed', 'dead', 'cancelled')"
    " AND coalesce(h.finished_at, 0) + h.key_ttl <= {now}"
    " AND NOT (h.state = 'completed' AND h.expires_at IS NOT NULL AND h.expires_at <= {now})"
)


def check_name(schema: str) -> None:
    """Raise ``ConfigurationError`` unless ``schema`` matches ``SCHEMA_NAME``."""
    if not SCHEMA_NAME.fullmatch(schema):
        msg = (
            f"invalid PostgreSQL schema name {schema!r}: use lower-case letters, digits "
            "and underscores, at most 48 characters, not starting with a digit"
        )
        raise ConfigurationError(msg)


def lock_key(purpose: str, schema: str) -> int:
    """A stable signed 64-bit advisory lock key for one purpose in one schema."""
    digest = hashlib.blake2b(f"asyncq:{purpose}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# The version table, as templates (``sql.Statements`` fills them in).
BOOTSTRAP = """
        CREATE SCHEMA IF NOT EXISTS {s};
        CREATE TABLE IF NOT EXISTS {s}.migrations (
            version integer PRIMARY KEY,
            description text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        );
    """
VERSIONS = "SELECT version FROM {s}.migrations ORDER BY version"
RECORD_VERSION = "INSERT INTO {s}.migrations (version, description) VALUES ($1, $2)"
SCHEMA_EXISTS = "SELECT to_regclass('{s}.migrations') IS NOT NULL"
DROP = "DROP SCHEMA IF EXISTS {s} CASCADE"


def _notify_queues(function: str, channel: str) -> str:
    """The step creating ``function``, which sends each name of an array on ``channel``.

    ``notify_work`` (version 1) and ``notify_later`` (version 4) are the same
    function on two channels.
    """
    return (
        "CREATE FUNCTION {s}."
        + function
        + """(queues text[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    q text;
    n integer := 0;
BEGIN
    FOREACH q IN ARRAY coalesce(queues, '{{}}') LOOP
        IF octet_length(q) < 7900 THEN
            PERFORM pg_notify("""
        + channel
        + """, q);
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;
"""
    )


# Migrations: version N is MIGRATIONS[N - 1]. Append only; never edit a step
# that has shipped. Each step runs in the migrating transaction.
_V1 = (
    """
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
"""
    + _notify_queues("notify_work", "{work}")
    + """
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
)

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
_V4 = "\n" + _notify_queues("notify_later", "{later}")

# The worker registry: one row per worker, its WorkerInfo as MessagePack.
_WORKERS = """
CREATE TABLE {s}.workers (
    id text PRIMARY KEY,
    info bytea NOT NULL,
    last_seen float8 NOT NULL,
    expires_at float8 NOT NULL
);
CREATE INDEX workers_expires ON {s}.workers (expires_at);
"""

# What a job carries besides its payload (see ``_annotations``): progress
# detail and metadata as jsonb (``list_jobs`` filters on ``meta ->> key``), the
# lines its handler logged, one JSON array each, and how many older ones were
# dropped. NULL while unused, so a job that uses none of them costs nothing.
_ANNOTATIONS = """
ALTER TABLE {s}.jobs
    ADD COLUMN progress_detail jsonb,
    ADD COLUMN meta jsonb,
    ADD COLUMN logs text[],
    ADD COLUMN logs_dropped integer NOT NULL DEFAULT 0;
"""

# The job event stream (``events``): one row per event, numbered by an
# identity in the order written. Statement-level triggers on ``jobs`` write
# them from the rows a statement changed (its transition tables), in the
# statement itself and with one INSERT for the batch: what changed is read
# off the old and new row (``asyncq._events`` for what each kind carries).
# ``removed`` is written by ``remove`` itself (purge and prune delete too,
# without an event). A session with ``asyncq.events = off`` writes none.
# ``written`` is the insert's wall clock: a reader holds back after a gap in
# the numbers (a transaction still open) until it is older than a grace.
# ``event_floors`` keeps, per queue, the highest number prune deleted.
_EVENTS = """
CREATE TABLE {s}.events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    job_id text COLLATE "C" NOT NULL,
    name text NOT NULL,
    queue text NOT NULL,
    at double precision NOT NULL,
    written double precision NOT NULL DEFAULT extract(epoch from clock_timestamp()),
    body jsonb NOT NULL DEFAULT '{{}}'
);
CREATE INDEX events_job ON {s}.events (job_id, id);
CREATE INDEX events_queue ON {s}.events (queue, id);
CREATE INDEX events_at ON {s}.events (at);
CREATE TABLE {s}.event_floors (
    queue text PRIMARY KEY,
    pruned_through bigint NOT NULL
);

CREATE FUNCTION {s}.events_enqueued() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('asyncq.events', true) = 'off' THEN
        RETURN NULL;
    END IF;
    INSERT INTO {s}.events (kind, job_id, name, queue, at, body)
    SELECT 'enqueued', n.id, n.name, n.queue, {now},
           CASE WHEN n.state = 'scheduled'
                THEN jsonb_build_object('due', n.scheduled_at) ELSE '{{}}' END
    FROM new_jobs n ORDER BY n.id;
    IF FOUND THEN
        PERFORM pg_notify({events}, '');
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION {s}.events_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('asyncq.events', true) = 'off' THEN
        RETURN NULL;
    END IF;
    INSERT INTO {s}.events (kind, job_id, name, queue, at, body)
    SELECT c.kind, c.id, c.name, c.queue, {now}, c.body
    FROM (
        SELECT n.id, n.name, n.queue, k.kind, 0 AS seq,
               jsonb_strip_nulls(CASE
                   WHEN k.kind = 'started' THEN jsonb_build_object(
                       'attempt', n.attempts, 'worker', n.worker)
                   WHEN k.kind = 'completed' THEN jsonb_build_object(
                       'attempt', o.attempts, 'worker', o.worker,
                       'duration', greatest(0, n.finished_at - o.started_at))
                   WHEN k.kind = 'retrying' THEN jsonb_build_object(
                       'attempt', o.attempts, 'worker', o.worker,
                       'error', e.error, 'due', n.scheduled_at)
                   WHEN k.kind IN ('dead', 'cancelled', 'recovered') AND o.state = 'active'
                   THEN jsonb_build_object(
                       'attempt', o.attempts, 'worker', o.worker, 'error', e.error,
                       'by', CASE WHEN k.kind = 'recovered' THEN NULL
                                  WHEN e.error ->> 'kind' = 'lost' THEN 'recovery'
                                  WHEN k.kind = 'cancelled' THEN 'worker' END)
                   ELSE jsonb_build_object('by', 'operator')
               END) AS body
        FROM old_jobs o JOIN new_jobs n ON n.id = o.id
        CROSS JOIN LATERAL (SELECT CASE
            WHEN n.state = 'active' AND o.state <> 'active' THEN 'started'
            WHEN o.state = 'active' AND n.state = 'completed' THEN 'completed'
            WHEN o.state = 'active' AND n.state = 'failed' THEN 'retrying'
            WHEN o.state = 'active' AND n.state = 'dead' THEN 'dead'
            WHEN o.state = 'active' AND n.state = 'cancelled' THEN 'cancelled'
            -- back in the queue with its attempt counted: recovered (a hand-back
            -- takes the attempt back, and writes no event)
            WHEN o.state = 'active' AND n.state = 'queued' AND n.attempts >= o.attempts
                THEN 'recovered'
            WHEN o.state IN ('scheduled', 'queued', 'failed') AND n.state = 'cancelled'
                THEN 'cancelled'
            WHEN o.state = 'dead' AND n.state = 'queued' THEN 'retried'
        END AS kind) AS k
        -- the error this change appended, if any (errors of another shape: none)
        CROSS JOIN LATERAL (SELECT CASE
            WHEN jsonb_typeof(n.errors) = 'array' AND jsonb_typeof(o.errors) = 'array'
                 AND jsonb_array_length(n.errors) > jsonb_array_length(o.errors)
                 AND jsonb_typeof(n.errors -> -1) = 'object'
            THEN n.errors -> -1 END AS error) AS e
        WHERE k.kind IS NOT NULL
        UNION ALL
        SELECT n.id, n.name, n.queue, 'progress', 0,
               jsonb_strip_nulls(jsonb_build_object(
                   'attempt', n.attempts, 'progress', n.progress, 'detail', n.progress_detail))
        FROM old_jobs o JOIN new_jobs n ON n.id = o.id
        WHERE n.state = 'active' AND o.state = 'active'
          AND (n.progress IS DISTINCT FROM o.progress
               OR n.progress_detail IS DISTINCT FROM o.progress_detail)
        UNION ALL
        -- each line a log call appended, as stored (the reader decodes it)
        SELECT n.id, n.name, n.queue, 'log', l.seq, jsonb_build_object('line', l.line)
        FROM old_jobs o JOIN new_jobs n ON n.id = o.id
        CROSS JOIN LATERAL (SELECT
            coalesce(cardinality(n.logs), 0) + n.logs_dropped
            - coalesce(cardinality(o.logs), 0) - o.logs_dropped AS added) AS a
        CROSS JOIN LATERAL unnest(
            n.logs[greatest(1, coalesce(cardinality(n.logs), 0) - a.added + 1):]
        ) WITH ORDINALITY AS l(line, seq)
        WHERE a.added > 0
    ) AS c
    ORDER BY c.id, c.seq;
    IF FOUND THEN
        PERFORM pg_notify({events}, '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_enqueued AFTER INSERT ON {s}.jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.events_enqueued();
CREATE TRIGGER jobs_changed AFTER UPDATE ON {s}.jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.events_changed();
"""

# Throttled keys (``enqueue(key_ttl=...)``): seconds a finished job keeps
# ``key_held`` (see ``HOLDS``). NULL for every other job.
_KEY_TTL = """
ALTER TABLE {s}.jobs ADD COLUMN key_ttl double precision;
"""

# Dependencies between jobs (``enqueue(after=...)``): a job's parents and
# children (id arrays, NULL for none), its after_failure (NULL: "dead"), and
# the state ``waiting``. ``decide`` applies ``_common.released`` to one
# waiting child, under its row lock and with a fresh snapshot of its parents,
# so two parents finishing in two transactions at once cannot both leave it
# waiting. ``link`` records the parents of jobs just inserted (in the
# enqueue's transaction) and decides them; a parent not stored in the child's
# queue raises SQLSTATE AQ001 (message: the parent, detail: the child). The
# row triggers release the children of a job that finishes or is deleted:
# their WHEN clause is false for a job without children, so a plain job's
# claim and settle pay one comparison. jobs_waiting finds the waiting
# children of a job by parent (prune's "is a child still waiting for it").
_DEPENDENCIES = """
ALTER TABLE {s}.jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE {s}.jobs ADD CONSTRAINT jobs_state_check CHECK (state IN
    ('waiting', 'scheduled', 'queued', 'active', 'failed', 'completed', 'dead', 'cancelled'))
    NOT VALID;
ALTER TABLE {s}.jobs
    ADD COLUMN parents text[],
    ADD COLUMN children text[],
    ADD COLUMN after_failure text;
CREATE INDEX jobs_waiting ON {s}.jobs USING gin (parents) WHERE state = 'waiting';

CREATE FUNCTION {s}.decide(child text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    c record;
    p record;
    pending boolean := false;
    at float8 := {now};
BEGIN
    SELECT id, queue, parents, after_failure, scheduled_at, attempts INTO c
    FROM {s}.jobs WHERE id = child AND state = 'waiting' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    FOR p IN
        SELECT j.id, j.state
        FROM unnest(c.parents) WITH ORDINALITY AS u(id, ord) JOIN {s}.jobs j ON j.id = u.id
        ORDER BY u.ord
    LOOP
        IF p.state IN ('dead', 'cancelled') AND c.after_failure IS DISTINCT FROM 'run' THEN
            UPDATE {s}.jobs SET
                state = p.state,
                finished_at = at,
                key_held = false,
                errors = errors || jsonb_build_array(jsonb_build_object(
                    'kind', 'dependency',
                    'message', 'parent ' || p.id || ' ended ' || p.state
                        || ', so this job did not run (enqueue it with'
                        || ' after_failure=''run'' to run it anyway)',
                    'attempt', c.attempts,
                    'at', at))
            WHERE id = c.id;
            PERFORM {s}.notify_done(ARRAY[c.id]);
            RETURN;
        END IF;
        IF p.state NOT IN ('completed', 'dead', 'cancelled') THEN
            pending := true;
        END IF;
    END LOOP;
    IF pending THEN
        RETURN;
    END IF;
    IF c.scheduled_at > at THEN
        UPDATE {s}.jobs SET state = 'scheduled' WHERE id = c.id;
        PERFORM {s}.notify_later(ARRAY[c.queue]);
    ELSE
        UPDATE {s}.jobs SET state = 'queued' WHERE id = c.id;
        PERFORM {s}.notify_work(ARRAY[c.queue]);
    END IF;
END
$$;

CREATE FUNCTION {s}.link(
    child_ids text[], failures text[], pair_child text[], pair_parent text[]
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    q text;
    pq text;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(pair_child), 0) LOOP
        SELECT queue INTO q FROM {s}.jobs WHERE id = pair_child[i];
        SELECT queue INTO pq FROM {s}.jobs WHERE id = pair_parent[i] FOR UPDATE;
        IF pq IS NULL OR pq <> q THEN
            RAISE EXCEPTION USING ERRCODE = 'AQ001', MESSAGE = pair_parent[i],
                DETAIL = pair_child[i];
        END IF;
        UPDATE {s}.jobs SET children = array_append(children, pair_child[i])
        WHERE id = pair_parent[i];
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(child_ids), 0) LOOP
        UPDATE {s}.jobs SET
            state = 'waiting',
            parents = ARRAY(
                SELECT pair_parent[k] FROM generate_subscripts(pair_child, 1) AS k
                WHERE pair_child[k] = child_ids[i] ORDER BY k),
            after_failure = nullif(failures[i], 'dead')
        WHERE id = child_ids[i];
        PERFORM {s}.decide(child_ids[i]);
    END LOOP;
END
$$;

CREATE FUNCTION {s}.release() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    child text;
BEGIN
    FOREACH child IN ARRAY CASE WHEN TG_OP = 'DELETE' THEN OLD.children ELSE NEW.children END
    LOOP
        PERFORM {s}.decide(child);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_release AFTER UPDATE OF state ON {s}.jobs FOR EACH ROW
    WHEN (NEW.children IS NOT NULL
          AND NEW.state IN ('completed', 'dead', 'cancelled')
          AND OLD.state NOT IN ('completed', 'dead', 'cancelled'))
    EXECUTE FUNCTION {s}.release();
CREATE TRIGGER jobs_release_removed AFTER DELETE ON {s}.jobs FOR EACH ROW
    WHEN (OLD.children IS NOT NULL)
    EXECUTE FUNCTION {s}.release();
"""

# Flow control (``backends._limits``, spelled in SQL). A job's limits (its
# ``Gate`` records as JSON arrays, NULL for a plain job); the slot a queued job
# is set aside on, which takes it out of jobs_ready (so a claim never walks
# past jobs set aside) and into jobs_held (their counts, and the order they
# are let out in); whether it booked its rate token. One row per limit slot in
# ``limits``; its circuit breaker (JSON), one row per circuit in
# ``circuits``. ``admit`` decides a picked job with limits or a circuit inside
# the claim statement, ``limits_freed`` (a row trigger whose WHEN a plain job
# fails without a call) frees the slots of a job leaving ``active``, and
# counts its end on its circuit, in the statement that moves it, whatever
# that statement is.
_LIMITS = """
ALTER TABLE {s}.jobs
    ADD COLUMN limits jsonb,
    ADD COLUMN held_by text,
    ADD COLUMN rate_paid boolean NOT NULL DEFAULT false,
    ADD COLUMN circuit jsonb;
DROP INDEX {s}.jobs_ready;
CREATE INDEX jobs_ready ON {s}.jobs (queue, priority DESC, scheduled_at, id)
    INCLUDE (state) WHERE state IN {pending} AND held_by IS NULL;
CREATE INDEX jobs_held ON {s}.jobs (held_by, priority DESC, scheduled_at, id)
    INCLUDE (queue, state) WHERE held_by IS NOT NULL;
CREATE TABLE {s}.limits (
    slot text PRIMARY KEY,
    name text NOT NULL,
    key text,
    concurrency integer,
    rate float8,
    per float8 NOT NULL DEFAULT 1,
    burst float8 NOT NULL DEFAULT 1,
    running integer NOT NULL DEFAULT 0,
    tokens float8 NOT NULL DEFAULT 0,
    refilled_at float8 NOT NULL DEFAULT 0
);
CREATE TABLE {s}.circuits (
    name text PRIMARY KEY,
    state text NOT NULL DEFAULT 'closed',
    failures float8[] NOT NULL DEFAULT '{{}}',
    opened_at float8,
    probe text,
    threshold integer NOT NULL DEFAULT 5,
    within float8 NOT NULL DEFAULT 60,
    reset_after float8 NOT NULL DEFAULT 30
);

-- _limits.circuit_ended: the circuit after job_id, behind it, left active.
CREATE FUNCTION {s}.circuit_ended(circuit jsonb, job_id text, outcome text, kind text, t float8)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cb {s}.circuits;
    c_name text := circuit ->> 0;
    c_n integer := coalesce((circuit ->> 1)::integer, 5);
    c_w float8 := coalesce((circuit ->> 2)::float8, 60);
    recent float8[];
BEGIN
    INSERT INTO {s}.circuits (name) VALUES (c_name) ON CONFLICT DO NOTHING;
    SELECT * INTO cb FROM {s}.circuits WHERE name = c_name FOR UPDATE;
    UPDATE {s}.circuits SET threshold = c_n, within = c_w,
        reset_after = coalesce((circuit ->> 3)::float8, 30)
    WHERE name = c_name;
    IF kind = 'circuit_open' THEN
        UPDATE {s}.circuits SET state = 'open', opened_at = t, probe = NULL, failures = '{{}}'
        WHERE name = c_name;
    ELSIF outcome = 'completed' THEN
        IF cb.state = 'half_open' AND cb.probe = job_id THEN
            UPDATE {s}.circuits SET state = 'closed', opened_at = NULL, probe = NULL,
                failures = '{{}}'
            WHERE name = c_name;
        END IF;
    ELSIF outcome IN ('failed', 'dead') AND coalesce(kind, '') NOT IN
            ('retry', 'cancelled', 'lost', 'unknown_job', 'decode', 'undecodable') THEN
        IF cb.state = 'half_open' AND cb.probe = job_id THEN
            UPDATE {s}.circuits SET state = 'open', opened_at = t, probe = NULL
            WHERE name = c_name;
        ELSIF cb.state = 'closed' THEN
            recent := ARRAY(SELECT f FROM unnest(cb.failures) AS f WHERE f > t - c_w ORDER BY f)
                      || t;
            IF cardinality(recent) > c_n THEN
                recent := recent[cardinality(recent) - c_n + 1:];
            END IF;
            IF cardinality(recent) >= c_n THEN
                UPDATE {s}.circuits SET state = 'open', opened_at = t, probe = NULL,
                    failures = '{{}}'
                WHERE name = c_name;
            ELSE
                UPDATE {s}.circuits SET failures = recent WHERE name = c_name;
            END IF;
        END IF;
    ELSIF cb.probe = job_id THEN
        UPDATE {s}.circuits SET probe = NULL WHERE name = c_name;
    END IF;
END
$$;

CREATE FUNCTION {s}.gates_of(gates jsonb) RETURNS TABLE (
    ord bigint, slot text, name text, key text, concurrency integer, rate float8,
    per float8, burst float8
) LANGUAGE sql IMMUTABLE AS $$
    SELECT x.o,
           CASE WHEN x.e ->> 1 IS NULL THEN x.e ->> 0
                ELSE (x.e ->> 0) || '[' || (x.e ->> 1) || ']' END,
           x.e ->> 0, x.e ->> 1, (x.e ->> 2)::integer, (x.e ->> 3)::float8,
           coalesce((x.e ->> 4)::float8, 1), coalesce((x.e ->> 5)::float8, 1)
    FROM jsonb_array_elements(gates) WITH ORDINALITY AS x(e, o)
$$;

-- Put the first job set aside on a slot back in the claim order (and say so).
CREATE FUNCTION {s}.let_out(v_slot text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    q text;
BEGIN
    UPDATE {s}.jobs SET held_by = NULL
    WHERE id = (SELECT h.id FROM {s}.jobs h WHERE h.held_by = v_slot AND h.state = 'queued'
                ORDER BY h.priority DESC, h.scheduled_at, h.id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING queue INTO q;
    IF q IS NULL THEN
        RETURN false;
    END IF;
    PERFORM {s}.notify_work(ARRAY[q]);
    RETURN true;
END
$$;

-- _limits.admit for a job picked by a claim (queued or due, locked): true to
-- claim it; false when it is set aside or booked ahead (the job's row changed
-- here, so the claim leaves it), waking claimers to look past it.
CREATE FUNCTION {s}.admit(
    job_id text, job_queue text, gates jsonb, circuit jsonb, paid boolean, t float8
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    full_slot text;
    wait float8;
    cb {s}.circuits;
    c_name text;
    c_r float8;
    wait_until float8;
BEGIN
    IF circuit IS NOT NULL THEN
        -- _limits.circuit_admit
        c_name := circuit ->> 0;
        c_r := coalesce((circuit ->> 3)::float8, 30);
        INSERT INTO {s}.circuits (name) VALUES (c_name) ON CONFLICT DO NOTHING;
        SELECT * INTO cb FROM {s}.circuits WHERE name = c_name FOR UPDATE;
        UPDATE {s}.circuits SET threshold = coalesce((circuit ->> 1)::integer, 5),
            within = coalesce((circuit ->> 2)::float8, 60), reset_after = c_r
        WHERE name = c_name;
        IF cb.state = 'open' THEN
            IF t < coalesce(cb.opened_at, t) + c_r THEN
                wait_until := coalesce(cb.opened_at, t) + c_r;
            ELSE
                UPDATE {s}.circuits SET state = 'half_open', probe = job_id WHERE name = c_name;
            END IF;
        ELSIF cb.state = 'half_open' THEN
            IF cb.probe IS NULL OR cb.probe = job_id THEN
                UPDATE {s}.circuits SET probe = job_id WHERE name = c_name;
            ELSE
                wait_until := t + c_r;
            END IF;
        END IF;
        IF wait_until IS NOT NULL THEN
            UPDATE {s}.jobs SET state = 'scheduled', scheduled_at = wait_until WHERE id = job_id;
            PERFORM {s}.notify_later(ARRAY[job_queue]);
            PERFORM {s}.notify_work(ARRAY[job_queue]);
            RETURN false;
        END IF;
        IF gates IS NULL THEN
            RETURN true;
        END IF;
    END IF;
    INSERT INTO {s}.limits (slot, name, key, burst, tokens, refilled_at)
    SELECT g.slot, g.name, g.key, g.burst, g.burst, t FROM {s}.gates_of(gates) g
    ORDER BY g.slot
    ON CONFLICT DO NOTHING;
    -- the counters, locked in one order by every claimer
    PERFORM 1 FROM {s}.limits l
    WHERE l.slot IN (SELECT g.slot FROM {s}.gates_of(gates) g)
    ORDER BY l.slot FOR UPDATE;
    SELECT g.slot INTO full_slot FROM {s}.gates_of(gates) g JOIN {s}.limits l USING (slot)
    WHERE g.concurrency IS NOT NULL AND l.running >= g.concurrency
    ORDER BY g.ord LIMIT 1;
    IF full_slot IS NOT NULL THEN
        UPDATE {s}.jobs SET held_by = full_slot WHERE id = job_id;
        -- Its other slots may have room it was let out to use: pass it on.
        PERFORM {s}.let_out(g.slot)
        FROM {s}.gates_of(gates) g JOIN {s}.limits l USING (slot)
        WHERE g.slot <> full_slot AND g.concurrency IS NOT NULL AND l.running < g.concurrency;
        PERFORM {s}.notify_work(ARRAY[job_queue]);
        RETURN false;
    END IF;
    UPDATE {s}.limits l SET concurrency = g.concurrency, rate = g.rate, per = g.per,
                            burst = g.burst
    FROM {s}.gates_of(gates) g WHERE l.slot = g.slot;
    IF NOT paid THEN
        SELECT max(CASE WHEN a.tokens < 1 THEN (1 - a.tokens) * a.per / a.rate ELSE 0 END)
        INTO wait
        FROM (SELECT g.per, g.rate, least(g.burst, l.tokens
                     + greatest(0, t - l.refilled_at) * g.rate / g.per) AS tokens
              FROM {s}.gates_of(gates) g JOIN {s}.limits l USING (slot)
              WHERE g.rate IS NOT NULL) AS a;
        UPDATE {s}.limits l
        SET tokens = least(g.burst, l.tokens + greatest(0, t - l.refilled_at) * g.rate / g.per) - 1,
            refilled_at = t
        FROM {s}.gates_of(gates) g WHERE l.slot = g.slot AND g.rate IS NOT NULL;
        IF coalesce(wait, 0) > 0 THEN
            UPDATE {s}.jobs SET state = 'scheduled', scheduled_at = t + wait, rate_paid = true
            WHERE id = job_id;
            PERFORM {s}.notify_later(ARRAY[job_queue]);
            PERFORM {s}.notify_work(ARRAY[job_queue]);
            RETURN false;
        END IF;
    END IF;
    UPDATE {s}.limits l SET running = l.running + 1
    FROM {s}.gates_of(gates) g WHERE l.slot = g.slot AND g.concurrency IS NOT NULL;
    RETURN true;
EXCEPTION WHEN data_exception OR not_null_violation OR check_violation THEN
    -- limits no asyncq wrote (by hand): claim the job, whose record then
    -- fails to decode and is taken aside; the claim of the others goes on
    RETURN true;
END
$$;

CREATE FUNCTION {s}.limits_freed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.circuit IS NOT NULL THEN
        PERFORM {s}.circuit_ended(
            OLD.circuit, OLD.id, NEW.state,
            CASE WHEN jsonb_typeof(NEW.errors) = 'array' AND jsonb_typeof(OLD.errors) = 'array'
                      AND jsonb_array_length(NEW.errors) > jsonb_array_length(OLD.errors)
                 THEN NEW.errors -> -1 ->> 'kind' END,
            {now});
    END IF;
    IF OLD.limits IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE {s}.limits l SET running = greatest(l.running - 1, 0)
    FROM {s}.gates_of(OLD.limits) g
    WHERE l.slot = g.slot AND g.concurrency IS NOT NULL;
    PERFORM {s}.let_out(g.slot) FROM {s}.gates_of(OLD.limits) g
    WHERE g.concurrency IS NOT NULL ORDER BY g.slot;
    RETURN NULL;
EXCEPTION WHEN data_exception OR not_null_violation OR check_violation THEN
    RETURN NULL;  -- limits no asyncq wrote: nothing was counted for them
END
$$;

CREATE TRIGGER jobs_limits_freed AFTER UPDATE OF state ON {s}.jobs
    FOR EACH ROW
    WHEN (OLD.state = 'active' AND NEW.state <> 'active'
          AND (OLD.limits IS NOT NULL OR OLD.circuit IS NOT NULL))
    EXECUTE FUNCTION {s}.limits_freed();
"""

# The functions called per job (``admit``, ``decide``, the row triggers) and the
# event triggers keep the plans of their own statements (``plan_cache_mode``
# ``auto``), whatever their caller's connection says: the pool's connections
# plan each statement for the table as it is (``force_custom_plan``, see the
# transport), which inside a function planned every statement of it again on
# every call: a claim of 100 limited jobs took 87 ms instead of 18.
_FUNCTION_PLANS = """
ALTER FUNCTION {s}.admit(text, text, jsonb, jsonb, boolean, float8) SET plan_cache_mode = auto;
ALTER FUNCTION {s}.circuit_ended(jsonb, text, text, text, float8) SET plan_cache_mode = auto;
ALTER FUNCTION {s}.let_out(text) SET plan_cache_mode = auto;
ALTER FUNCTION {s}.limits_freed() SET plan_cache_mode = auto;
ALTER FUNCTION {s}.decide(text) SET plan_cache_mode = auto;
ALTER FUNCTION {s}.link(text[], text[], text[], text[]) SET plan_cache_mode = auto;
ALTER FUNCTION {s}.release() SET plan_cache_mode = auto;
ALTER FUNCTION {s}.events_enqueued() SET plan_cache_mode = auto;
ALTER FUNCTION {s}.events_changed() SET plan_cache_mode = auto;
"""

# Flow control, a batch at a time. A claim decides every picked job with limits
# or a circuit in one call (``admit_batch``, ``_limits.admit`` and
# ``circuit_admit`` in claim order): each counter and each circuit is read and
# locked once and written once per claim, whatever the batch holds (a counter
# row changed once a job made a version of it per start and per end, which
# every later claim walked, and held its lock while it did). Jobs held until a
# time (a booked rate token, a circuit) stay ``queued``, claimable once
# ``scheduled_at`` (that time) comes, like any pending job: ``held_until`` and
# ``hold`` say until when and why, and the claim clears them. The jobs that
# leave ``active`` in a statement are counted by one statement trigger
# (``limits_ended``: one look at the old rows for a plain statement) through
# ``ended_batch``: each circuit and each counter written once, and per counter
# as many jobs set aside let out as ended. A batch whose limits or circuits no
# asyncq wrote (by hand) is decided job by job, each such job claimed as a
# plain one (its record fails to decode and is taken aside) or not counted.
_FLOW_BATCHES = """
ALTER TABLE {s}.jobs ADD COLUMN held_until float8, ADD COLUMN hold text;

CREATE FUNCTION {s}.admit_batch(
    ids text[], queues text[], gates jsonb[], breakers jsonb[], paid boolean[], t float8
) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    -- the batch's gates in claim order: job, slot, name, key, numbers
    g_job bigint[]; g_slot text[]; g_name text[]; g_key text[]; g_conc integer[];
    g_rate float8[]; g_per float8[]; g_burst float8[];
    -- one counter per slot, locked
    c_slot text[]; c_run integer[]; c_tok float8[]; c_at float8[]; c_conc integer[];
    c_rate float8[]; c_per float8[]; c_burst float8[];
    -- one circuit per name, locked
    b_name text[]; b_state text[]; b_opened float8[]; b_probe text[]; b_n integer[];
    b_w float8[]; b_r float8[];
    admitted text[] := '{{}}';
    aside_id text[] := '{{}}';
    aside_slot text[] := '{{}}';
    pass_on text[] := '{{}}';
    held_id text[] := '{{}}';
    held_at float8[] := '{{}}';
    held_on text[] := '{{}}';
    held_paid boolean[] := '{{}}';
    quiet text[] := '{{}}';
    lo integer;
    hi integer := 0;
    c integer;
    b integer;
    full_slot text;
    wait float8;
    wait_slot text;
    tok float8;
    until float8;
    -- per slot of the batch: its jobs, those to book a token, its numbers
    f_slot text[]; f_name text[]; f_key text[]; f_n integer[]; f_unpaid integer[];
    f_conc integer[]; f_rate float8[]; f_per float8[]; f_burst float8[]; f_one boolean[];
    fits boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM unnest(breakers) AS x(cb) WHERE x.cb IS NOT NULL) THEN
        -- A batch its limits let through whole (room for all on every counter,
        -- as when a limit never binds) is decided at once: each distinct set
        -- of limits parsed once, each counter changed by its number of jobs.
        SELECT array_agg(u.slot), array_agg(u.name), array_agg(u.key), array_agg(u.n),
               array_agg(u.unpaid), array_agg(u.conc), array_agg(u.rate), array_agg(u.per),
               array_agg(u.burst), array_agg(u.one)
        INTO f_slot, f_name, f_key, f_n, f_unpaid, f_conc, f_rate, f_per, f_burst, f_one
        FROM (SELECT g.slot, min(g.name) AS name, min(g.key) AS key, sum(d.n)::integer AS n,
                     sum(d.unpaid)::integer AS unpaid, min(g.concurrency) AS conc,
                     min(g.rate) AS rate, min(g.per) AS per, min(g.burst) AS burst,
                     count(DISTINCT ROW(g.concurrency, g.rate, g.per, g.burst)) = 1 AS one
              FROM (SELECT x.lim, count(*) AS n, count(*) FILTER (WHERE NOT x.paid) AS unpaid
                    FROM unnest(gates, paid) AS x(lim, paid) WHERE x.lim IS NOT NULL
                    GROUP BY x.lim) AS d
              CROSS JOIN LATERAL {s}.gates_of(d.lim) AS g
              GROUP BY g.slot ORDER BY g.slot) AS u;
        IF f_slot IS NOT NULL AND (SELECT bool_and(o) FROM unnest(f_one) AS o) THEN
            -- (a prune may delete an idle counter between the insert and the
            -- lock: then the insert makes it again)
            LOOP
                INSERT INTO {s}.limits (slot, name, key, burst, tokens, refilled_at)
                SELECT u.slot, u.name, u.key, u.burst, u.burst, t
                FROM unnest(f_slot, f_name, f_key, f_burst) AS u(slot, name, key, burst)
                ON CONFLICT DO NOTHING;
                EXIT WHEN (SELECT count(*) FROM (
                    SELECT FROM {s}.limits WHERE slot = ANY (f_slot) ORDER BY slot FOR UPDATE
                ) AS l) = cardinality(f_slot);
            END LOOP;
            SELECT bool_and(
                       (u.conc IS NULL OR l.running + u.n <= u.conc)
                       AND (u.rate IS NULL OR u.unpaid = 0 OR least(u.burst,
                            l.tokens + greatest(0, t - l.refilled_at) * u.rate / u.per)
                            >= u.unpaid))
            INTO fits
            FROM {s}.limits AS l
            JOIN unnest(f_slot, f_n, f_unpaid, f_conc, f_rate, f_per, f_burst)
                AS u(slot, n, unpaid, conc, rate, per, burst) ON u.slot = l.slot;
            IF fits THEN
                UPDATE {s}.limits AS l SET
                    running = l.running + CASE WHEN u.conc IS NULL THEN 0 ELSE u.n END,
                    tokens = CASE WHEN u.rate IS NULL OR u.unpaid = 0 THEN l.tokens
                                  ELSE least(u.burst, l.tokens
                                       + greatest(0, t - l.refilled_at) * u.rate / u.per)
                                       - u.unpaid END,
                    refilled_at = CASE WHEN u.rate IS NULL OR u.unpaid = 0 THEN l.refilled_at
                                       ELSE t END,
                    concurrency = u.conc, rate = u.rate, per = u.per, burst = u.burst
                FROM unnest(f_slot, f_n, f_unpaid, f_conc, f_rate, f_per, f_burst)
                    AS u(slot, n, unpaid, conc, rate, per, burst)
                WHERE l.slot = u.slot;
                RETURN ids;
            END IF;
        END IF;
    END IF;
    -- Job by job, in claim order.
    SELECT array_agg(x.i ORDER BY x.i, g.ord), array_agg(g.slot ORDER BY x.i, g.ord),
           array_agg(g.name ORDER BY x.i, g.ord), array_agg(g.key ORDER BY x.i, g.ord),
           array_agg(g.concurrency ORDER BY x.i, g.ord), array_agg(g.rate ORDER BY x.i, g.ord),
           array_agg(g.per ORDER BY x.i, g.ord), array_agg(g.burst ORDER BY x.i, g.ord)
    INTO g_job, g_slot, g_name, g_key, g_conc, g_rate, g_per, g_burst
    FROM unnest(gates) WITH ORDINALITY AS x(lim, i)
    CROSS JOIN LATERAL {s}.gates_of(x.lim) AS g
    WHERE x.lim IS NOT NULL;
    -- circuits, then counters, each locked in name order: as ended_batch does
    IF EXISTS (SELECT FROM unnest(breakers) AS x(cb) WHERE x.cb IS NOT NULL) THEN
        INSERT INTO {s}.circuits (name)
        SELECT DISTINCT x.cb ->> 0 FROM unnest(breakers) AS x(cb) WHERE x.cb IS NOT NULL
        ORDER BY 1 ON CONFLICT DO NOTHING;
        SELECT array_agg(cs.name), array_agg(cs.state), array_agg(cs.opened_at),
               array_agg(cs.probe), array_agg(cs.threshold), array_agg(cs.within),
               array_agg(cs.reset_after)
        INTO b_name, b_state, b_opened, b_probe, b_n, b_w, b_r
        FROM (SELECT * FROM {s}.circuits
              WHERE name IN (SELECT x.cb ->> 0 FROM unnest(breakers) AS x(cb))
              ORDER BY name FOR UPDATE) AS cs;
    END IF;
    IF g_slot IS NOT NULL THEN
        LOOP
            INSERT INTO {s}.limits (slot, name, key, burst, tokens, refilled_at)
            SELECT DISTINCT ON (u.slot) u.slot, u.name, u.key, u.burst, u.burst, t
            FROM unnest(g_slot, g_name, g_key, g_burst) AS u(slot, name, key, burst)
            ORDER BY u.slot ON CONFLICT DO NOTHING;
            SELECT array_agg(l.slot), array_agg(l.running), array_agg(l.tokens),
                   array_agg(l.refilled_at), array_agg(l.concurrency), array_agg(l.rate),
                   array_agg(l.per), array_agg(l.burst)
            INTO c_slot, c_run, c_tok, c_at, c_conc, c_rate, c_per, c_burst
            FROM (SELECT * FROM {s}.limits WHERE slot = ANY (g_slot)
                  ORDER BY slot FOR UPDATE) AS l;
            EXIT WHEN cardinality(c_slot) = (SELECT count(DISTINCT u) FROM unnest(g_slot) AS u);
        END LOOP;
    END IF;
    FOR i IN 1 .. cardinality(ids) LOOP
        -- this job's gates are g_*[lo .. hi]
        lo := hi + 1;
        WHILE hi < coalesce(cardinality(g_job), 0) AND g_job[hi + 1] = i LOOP
            hi := hi + 1;
        END LOOP;
        IF breakers[i] IS NOT NULL THEN
            -- _limits.circuit_admit
            b := array_position(b_name, breakers[i] ->> 0);
            b_n[b] := coalesce((breakers[i] ->> 1)::integer, 5);
            b_w[b] := coalesce((breakers[i] ->> 2)::float8, 60);
            b_r[b] := coalesce((breakers[i] ->> 3)::float8, 30);
            until := NULL;
            IF b_state[b] = 'open' THEN
                IF t < coalesce(b_opened[b], t) + b_r[b] THEN
                    until := coalesce(b_opened[b], t) + b_r[b];
                ELSE
                    b_state[b] := 'half_open';
                    b_probe[b] := ids[i];
                END IF;
            ELSIF b_state[b] = 'half_open' THEN
                IF b_probe[b] IS NULL OR b_probe[b] = ids[i] THEN
                    b_probe[b] := ids[i];
                ELSE
                    until := t + b_r[b];
                END IF;
            END IF;
            IF until IS NOT NULL THEN
                held_id := held_id || ids[i];
                held_at := held_at || until;
                held_on := held_on || ('circuit:' || (breakers[i] ->> 0));
                held_paid := held_paid || paid[i];
                quiet := quiet || queues[i];
                CONTINUE;
            END IF;
        END IF;
        IF hi < lo THEN
            admitted := admitted || ids[i];
            CONTINUE;
        END IF;
        -- _limits.admit: concurrency first, so a job set aside books no token
        full_slot := NULL;
        FOR e IN lo .. hi LOOP
            c := array_position(c_slot, g_slot[e]);
            IF g_conc[e] IS NOT NULL AND c_run[c] >= g_conc[e] THEN
                full_slot := g_slot[e];
                EXIT;
            END IF;
        END LOOP;
        IF full_slot IS NOT NULL THEN
            aside_id := aside_id || ids[i];
            aside_slot := aside_slot || full_slot;
            quiet := quiet || queues[i];
            -- Its other slots may have room it was let out to use: pass it on.
            FOR e IN lo .. hi LOOP
                c := array_position(c_slot, g_slot[e]);
                IF g_slot[e] <> full_slot AND g_conc[e] IS NOT NULL AND c_run[c] < g_conc[e] THEN
                    pass_on := pass_on || g_slot[e];
                END IF;
            END LOOP;
            CONTINUE;
        END IF;
        -- the numbers of the job being claimed are the limit's numbers now
        FOR e IN lo .. hi LOOP
            c := array_position(c_slot, g_slot[e]);
            c_conc[c] := g_conc[e];
            c_rate[c] := g_rate[e];
            c_per[c] := g_per[e];
            c_burst[c] := g_burst[e];
        END LOOP;
        IF NOT paid[i] THEN
            wait := 0;
            FOR e IN lo .. hi LOOP
                IF g_rate[e] IS NOT NULL THEN
                    c := array_position(c_slot, g_slot[e]);
                    tok := least(g_burst[e],
                                 c_tok[c] + greatest(0, t - c_at[c]) * g_rate[e] / g_per[e]);
                    IF tok < 1 AND (1 - tok) * g_per[e] / g_rate[e] > wait THEN
                        wait := (1 - tok) * g_per[e] / g_rate[e];
                        wait_slot := g_slot[e];
                    END IF;
                    c_tok[c] := tok - 1;
                    c_at[c] := t;
                END IF;
            END LOOP;
            IF wait > 0 THEN
                held_id := held_id || ids[i];
                held_at := held_at || (t + wait);
                held_on := held_on || ('rate:' || wait_slot);
                held_paid := held_paid || true;
                quiet := quiet || queues[i];
                CONTINUE;
            END IF;
        END IF;
        FOR e IN lo .. hi LOOP
            IF g_conc[e] IS NOT NULL THEN
                c := array_position(c_slot, g_slot[e]);
                c_run[c] := c_run[c] + 1;
            END IF;
        END LOOP;
        admitted := admitted || ids[i];
    END LOOP;
    IF b_name IS NOT NULL THEN
        UPDATE {s}.circuits AS cs SET state = u.state, probe = u.probe, threshold = u.n,
            within = u.w, reset_after = u.r
        FROM unnest(b_name, b_state, b_probe, b_n, b_w, b_r) AS u(name, state, probe, n, w, r)
        WHERE cs.name = u.name;
    END IF;
    IF c_slot IS NOT NULL THEN
        UPDATE {s}.limits AS l SET running = u.run, tokens = u.tok, refilled_at = u.at,
            concurrency = u.conc, rate = u.rate, per = u.per, burst = u.burst
        FROM unnest(c_slot, c_run, c_tok, c_at, c_conc, c_rate, c_per, c_burst)
            AS u(slot, run, tok, at, conc, rate, per, burst)
        WHERE l.slot = u.slot;
    END IF;
    IF cardinality(aside_id) > 0 THEN
        UPDATE {s}.jobs AS j SET held_by = u.slot
        FROM unnest(aside_id, aside_slot) AS u(id, slot) WHERE j.id = u.id;
        PERFORM {s}.let_out(p.slot) FROM unnest(pass_on) WITH ORDINALITY AS p(slot, o)
        ORDER BY p.o;
    END IF;
    IF cardinality(held_id) > 0 THEN
        UPDATE {s}.jobs AS j SET state = 'queued', scheduled_at = u.at, held_until = u.at,
            hold = u.hold, rate_paid = u.paid
        FROM unnest(held_id, held_at, held_on, held_paid) AS u(id, at, hold, paid)
        WHERE j.id = u.id;
        PERFORM {s}.notify_later(ARRAY(
            SELECT DISTINCT j.queue FROM {s}.jobs AS j WHERE j.id = ANY (held_id)));
    END IF;
    IF cardinality(quiet) > 0 THEN
        -- claimers look past the jobs held back
        PERFORM {s}.notify_work(ARRAY(SELECT DISTINCT q FROM unnest(quiet) AS q));
    END IF;
    RETURN admitted;
EXCEPTION WHEN data_exception OR not_null_violation OR check_violation THEN
    -- limits or a circuit no asyncq wrote (by hand): decide the jobs one by
    -- one; such a job is claimed as a plain one (its record fails to decode
    -- and is taken aside), and the claim of the others goes on
    IF cardinality(ids) = 1 THEN
        RETURN ids;
    END IF;
    admitted := '{{}}';
    FOR i IN 1 .. cardinality(ids) LOOP
        admitted := admitted || {s}.admit_batch(
            ids[i:i], queues[i:i], gates[i:i], breakers[i:i], paid[i:i], t);
    END LOOP;
    RETURN admitted;
END
$$;

-- The jobs of ids, with limits gates or a circuit, left active as outcomes
-- (their errors' kinds): _limits.circuit_ended per job, circuit by circuit;
-- each counter's running down by its jobs that ended, and as many jobs set
-- aside on it back in the claim order.
CREATE FUNCTION {s}.ended_batch(
    ids text[], gates jsonb[], breakers jsonb[], outcomes text[], kinds text[], t float8
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cname text;
    found_cb {s}.circuits;
    st text;
    fl float8[];
    oa float8;
    pb text;
    n integer;
    w float8;
    r float8;
    f_slot text[];
    f_n integer[];
    woke text[];
BEGIN
    FOR cname IN
        SELECT DISTINCT x.cb ->> 0 FROM unnest(breakers) AS x(cb) WHERE x.cb IS NOT NULL ORDER BY 1
    LOOP
        INSERT INTO {s}.circuits (name) VALUES (cname) ON CONFLICT DO NOTHING;
        SELECT * INTO found_cb FROM {s}.circuits WHERE name = cname FOR UPDATE;
        st := found_cb.state;
        fl := found_cb.failures;
        oa := found_cb.opened_at;
        pb := found_cb.probe;
        n := NULL;
        w := NULL;
        r := found_cb.reset_after;
        FOR i IN 1 .. cardinality(ids) LOOP
            CONTINUE WHEN breakers[i] IS NULL OR breakers[i] ->> 0 IS DISTINCT FROM cname;
            n := coalesce((breakers[i] ->> 1)::integer, 5);
            w := coalesce((breakers[i] ->> 2)::float8, 60);
            r := coalesce((breakers[i] ->> 3)::float8, 30);
            IF kinds[i] = 'circuit_open' THEN
                st := 'open'; oa := t; pb := NULL; fl := '{{}}';
            ELSIF outcomes[i] = 'completed' THEN
                IF st = 'half_open' AND pb = ids[i] THEN
                    st := 'closed'; oa := NULL; pb := NULL; fl := '{{}}';
                END IF;
            ELSIF outcomes[i] IN ('failed', 'dead') AND coalesce(kinds[i], '') NOT IN
                    ('retry', 'cancelled', 'lost', 'unknown_job', 'decode', 'undecodable') THEN
                IF st = 'half_open' AND pb = ids[i] THEN
                    st := 'open'; oa := t; pb := NULL;
                ELSIF st = 'closed' THEN
                    fl := ARRAY(SELECT f FROM unnest(fl) AS f WHERE f > t - w ORDER BY f) || t;
                    IF cardinality(fl) > n THEN
                        fl := fl[cardinality(fl) - n + 1:];
                    END IF;
                    IF cardinality(fl) >= n THEN
                        st := 'open'; oa := t; pb := NULL; fl := '{{}}';
                    END IF;
                END IF;
            ELSIF pb = ids[i] THEN
                pb := NULL;
            END IF;
        END LOOP;
        UPDATE {s}.circuits SET state = st, failures = fl, opened_at = oa, probe = pb,
            threshold = coalesce(n, threshold), within = coalesce(w, within), reset_after = r
        WHERE name = cname;
    END LOOP;
    -- each distinct set of limits parsed once
    SELECT array_agg(f.slot ORDER BY f.slot), array_agg(f.n ORDER BY f.slot) INTO f_slot, f_n
    FROM (SELECT g.slot, sum(d.n)::integer AS n
          FROM (SELECT x.lim, count(*) AS n FROM unnest(gates) AS x(lim)
                WHERE x.lim IS NOT NULL GROUP BY x.lim) AS d
          CROSS JOIN LATERAL {s}.gates_of(d.lim) AS g
          WHERE g.concurrency IS NOT NULL
          GROUP BY g.slot) AS f;
    IF f_slot IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM {s}.limits WHERE slot = ANY (f_slot) ORDER BY slot FOR UPDATE;
    UPDATE {s}.limits AS l SET running = greatest(l.running - u.n, 0)
    FROM unnest(f_slot, f_n) AS u(slot, n) WHERE l.slot = u.slot;
    IF NOT EXISTS (
        SELECT FROM {s}.jobs AS x WHERE x.held_by = ANY (f_slot) AND x.state = 'queued'
    ) THEN
        RETURN;  -- none set aside (an UPDATE of no row would still run the statement triggers)
    END IF;
    WITH out AS (
        UPDATE {s}.jobs AS j SET held_by = NULL
        WHERE j.id IN (
            SELECT h.id FROM unnest(f_slot, f_n) AS u(slot, n)
            CROSS JOIN LATERAL (
                SELECT x.id FROM {s}.jobs AS x WHERE x.held_by = u.slot AND x.state = 'queued'
                ORDER BY x.priority DESC, x.scheduled_at, x.id LIMIT u.n
                FOR UPDATE SKIP LOCKED) AS h)
        RETURNING j.queue
    )
    SELECT array_agg(DISTINCT out.queue) INTO woke FROM out;
    IF woke IS NOT NULL THEN
        PERFORM {s}.notify_work(woke);
    END IF;
EXCEPTION WHEN data_exception OR not_null_violation OR check_violation THEN
    -- limits or a circuit no asyncq wrote: that job's end counts for nothing
    IF cardinality(ids) > 1 THEN
        FOR i IN 1 .. cardinality(ids) LOOP
            PERFORM {s}.ended_batch(
                ids[i:i], gates[i:i], breakers[i:i], outcomes[i:i], kinds[i:i], t);
        END LOOP;
    END IF;
END
$$;

-- Every UPDATE statement on jobs: the ones with limits or a circuit that
-- left active in it, counted at once (a plain statement looks at its old
-- rows, and returns).
CREATE FUNCTION {s}.limits_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids text[];
    gates jsonb[];
    breakers jsonb[];
    outcomes text[];
    kinds text[];
BEGIN
    IF NOT EXISTS (
        SELECT FROM old_jobs AS o
        WHERE o.state = 'active' AND (o.limits IS NOT NULL OR o.circuit IS NOT NULL)
    ) THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(o.id ORDER BY o.id), array_agg(o.limits ORDER BY o.id),
           array_agg(o.circuit ORDER BY o.id), array_agg(n.state ORDER BY o.id),
           array_agg(CASE WHEN jsonb_typeof(n.errors) = 'array'
                               AND jsonb_typeof(o.errors) = 'array'
                               AND jsonb_array_length(n.errors) > jsonb_array_length(o.errors)
                          THEN n.errors -> -1 ->> 'kind' END ORDER BY o.id)
    INTO ids, gates, breakers, outcomes, kinds
    FROM old_jobs AS o JOIN new_jobs AS n ON n.id = o.id
    WHERE o.state = 'active' AND n.state <> 'active'
      AND (o.limits IS NOT NULL OR o.circuit IS NOT NULL);
    IF ids IS NOT NULL THEN
        PERFORM {s}.ended_batch(ids, gates, breakers, outcomes, kinds, {now});
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER jobs_limits_freed ON {s}.jobs;
DROP FUNCTION {s}.limits_freed();
DROP FUNCTION {s}.admit(text, text, jsonb, jsonb, boolean, float8);
DROP FUNCTION {s}.circuit_ended(jsonb, text, text, text, float8);
CREATE TRIGGER jobs_limits_ended AFTER UPDATE ON {s}.jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.limits_ended();
ALTER FUNCTION {s}.admit_batch(text[], text[], jsonb[], jsonb[], boolean[], float8)
    SET plan_cache_mode = auto;
ALTER FUNCTION {s}.ended_batch(text[], jsonb[], jsonb[], text[], text[], float8)
    SET plan_cache_mode = auto;
ALTER FUNCTION {s}.limits_ended() SET plan_cache_mode = auto;
"""

# Job events are written by the statements that change the jobs (see
# ``event_sql``), no longer by the triggers of ``_EVENTS``: those copied every
# row a statement changed into transition tables, heartbeats' included, and
# sent a notice with every claim, whose commits then queued for the notice
# lock behind the settlements'. The stream is read by number (the primary
# key); ``events_queue`` and ``events_at`` cost every event an index entry
# for reads that now go by number (a read's page, and prune by age, which
# deletes the oldest numbers while they are old). A job's history is found
# by ``events_job``, now a hash index: a claim's and a settlement's events
# go into the middle of a B-tree on the job's id (next to the job's earlier
# ones), splitting its pages, and a hash entry is smaller and cheaper.
#
# An event's fields are columns of their own (``by`` is ``actor``; a log
# event's raw line is ``line``), NULL where the kind has none: building a
# JSON body for every event cost its statement more than the insert, and
# readers, who are few, build it instead. ``body`` stays for the events
# written before.
#
# A run: one row holds the events of one kind in one queue that one
# statement wrote for many jobs, under one number: the ``enqueued`` events of
# a batch copied in, the ``started`` events of a claim. The jobs' ids are in
# ``job_ids`` (found by ``events_jobs``), their names in ``names`` unless
# they share ``name``, their attempts in ``attempts``; ``job_id`` is NULL.
# A row per job cost a batch copied in about as much again as copying the
# jobs in, and a claim three times what a run does. The arrays are stored
# out of line uncompressed (ids compress little, and compressing them costs
# more than it saves).
_EVENTS_WRITTEN = """
DROP TRIGGER jobs_enqueued ON {s}.jobs;
DROP TRIGGER jobs_changed ON {s}.jobs;
DROP FUNCTION {s}.events_enqueued();
DROP FUNCTION {s}.events_changed();
DROP INDEX {s}.events_queue;
DROP INDEX {s}.events_at;
DROP INDEX {s}.events_job;
CREATE INDEX events_job ON {s}.events USING hash (job_id);
ALTER TABLE {s}.events
    ALTER COLUMN job_id DROP NOT NULL,
    ALTER COLUMN name DROP NOT NULL,
    ALTER COLUMN body DROP NOT NULL,
    ALTER COLUMN body DROP DEFAULT,
    ADD COLUMN attempt integer,
    ADD COLUMN worker text,
    ADD COLUMN error jsonb,
    ADD COLUMN due double precision,
    ADD COLUMN duration double precision,
    ADD COLUMN actor text,
    ADD COLUMN progress double precision,
    ADD COLUMN detail jsonb,
    ADD COLUMN line text,
    ADD COLUMN job_ids text[] COLLATE "C",
    ADD COLUMN names text[],
    ADD COLUMN attempts integer[];
ALTER TABLE {s}.events
    ALTER COLUMN job_ids SET STORAGE EXTERNAL,
    ALTER COLUMN names SET STORAGE EXTERNAL,
    ALTER COLUMN attempts SET STORAGE EXTERNAL;
CREATE INDEX events_jobs ON {s}.events USING gin (job_ids) WHERE job_ids IS NOT NULL;
"""

# Dependency events: the functions that decide a child write its events in the
# same step (``decide``: ``released``, or its end by ``cascade`` with the
# ``dependency`` error; ``waiting`` when ``link`` stored it waiting at enqueue),
# unless the session says ``asyncq.events = off`` (the backend's own sessions
# with events off, see ``PostgresBackend.events``).
_DEPENDENCY_EVENTS = """
DROP FUNCTION {s}.decide(text);
CREATE FUNCTION {s}.decide(child text, linking boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = auto AS $$
DECLARE
    c record;
    p record;
    pending boolean := false;
    at float8 := {now};
    err jsonb;
    noted boolean := current_setting('asyncq.events', true) IS DISTINCT FROM 'off';
BEGIN
    SELECT id, name, queue, parents, after_failure, scheduled_at, attempts INTO c
    FROM {s}.jobs WHERE id = child AND state = 'waiting' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    FOR p IN
        SELECT j.id, j.state
        FROM unnest(c.parents) WITH ORDINALITY AS u(id, ord) JOIN {s}.jobs j ON j.id = u.id
        ORDER BY u.ord
    LOOP
        IF p.state IN ('dead', 'cancelled') AND c.after_failure IS DISTINCT FROM 'run' THEN
            err := jsonb_build_object(
                'kind', 'dependency',
                'message', 'parent ' || p.id || ' ended ' || p.state
                    || ', so this job did not run (enqueue it with'
                    || ' after_failure=''run'' to run it anyway)',
                'attempt', c.attempts,
                'at', at);
            IF noted THEN  -- before its own children's, which the update releases
                INSERT INTO {s}.events (kind, job_id, name, queue, at, error, actor)
                VALUES (p.state, c.id, c.name, c.queue, at, err, 'cascade');
            END IF;
            UPDATE {s}.jobs SET
                state = p.state,
                finished_at = at,
                key_held = false,
                errors = errors || jsonb_build_array(err)
            WHERE id = c.id;
            PERFORM {s}.notify_done(ARRAY[c.id]);
            RETURN;
        END IF;
        IF p.state NOT IN ('completed', 'dead', 'cancelled') THEN
            pending := true;
        END IF;
    END LOOP;
    IF pending THEN
        IF linking AND noted THEN
            INSERT INTO {s}.events (kind, job_id, name, queue, at)
            VALUES ('waiting', c.id, c.name, c.queue, at);
        END IF;
        RETURN;
    END IF;
    IF c.scheduled_at > at THEN
        UPDATE {s}.jobs SET state = 'scheduled' WHERE id = c.id;
        PERFORM {s}.notify_later(ARRAY[c.queue]);
    ELSE
        UPDATE {s}.jobs SET state = 'queued' WHERE id = c.id;
        PERFORM {s}.notify_work(ARRAY[c.queue]);
    END IF;
    -- A child stored ready at enqueue (its parents finished): its enqueued says it all.
    IF noted AND NOT linking THEN
        INSERT INTO {s}.events (kind, job_id, name, queue, at, due)
        VALUES ('released', c.id, c.name, c.queue, at,
                CASE WHEN c.scheduled_at > at THEN c.scheduled_at END);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION {s}.link(
    child_ids text[], failures text[], pair_child text[], pair_parent text[]
) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = auto AS $$
DECLARE
    q text;
    pq text;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(pair_child), 0) LOOP
        SELECT queue INTO q FROM {s}.jobs WHERE id = pair_child[i];
        SELECT queue INTO pq FROM {s}.jobs WHERE id = pair_parent[i] FOR UPDATE;
        IF pq IS NULL OR pq <> q THEN
            RAISE EXCEPTION USING ERRCODE = 'AQ001', MESSAGE = pair_parent[i],
                DETAIL = pair_child[i];
        END IF;
        UPDATE {s}.jobs SET children = array_append(children, pair_child[i])
        WHERE id = pair_parent[i];
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(child_ids), 0) LOOP
        UPDATE {s}.jobs SET
            state = 'waiting',
            parents = ARRAY(
                SELECT pair_parent[k] FROM generate_subscripts(pair_child, 1) AS k
                WHERE pair_child[k] = child_ids[i] ORDER BY k),
            after_failure = nullif(failures[i], 'dead')
        WHERE id = child_ids[i];
        PERFORM {s}.decide(child_ids[i], true);
    END LOOP;
END
$$;
"""

MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("jobs, queues, notifications", _V1),
    ("counts and due times from the per-state indexes", _V2),
    ("done notices carry the finished jobs", _V3),
    ("notices of work due later on a channel of their own", _V4),
    ("the worker registry", _WORKERS),
    ("job annotations: progress detail, metadata, logged lines", _ANNOTATIONS),
    ("the job event stream", _EVENTS),
    ("keys held for a while after the job finished (key_ttl)", _KEY_TTL),
    ("dependencies between jobs: parents, children, the waiting state", _DEPENDENCIES),
    ("flow control: limits on when jobs start", _LIMITS),
    ("functions keep their own statements' plans", _FUNCTION_PLANS),
    ("flow control a batch at a time; held jobs stay queued", _FLOW_BATCHES),
    ("job events written by the statements, not by triggers", _EVENTS_WRITTEN),
    ("events of jobs with parents: waiting, released, ended by cascade", _DEPENDENCY_EVENTS),
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


async def recorded_versions(conn: Connection, statements: Statements) -> set[int]:
    """The versions recorded in the schema (none if it has no version table)."""
    if not await conn.fetchval(statements.schema_exists):
        return set()
    return {r[0] for r in await conn.fetch(statements.versions)}


async def migrate(conn: Connection, statements: Statements, *, where: str) -> list[int]:
    """Apply the steps missing from the schema through ``conn``; return their versions.

    Safe to run from many processes at once: the migrating transaction holds
    an advisory lock on the schema's name.

    Raises:
        ConfigurationError: the schema is newer than this asyncq.
    """
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1)", lock_key("migrate", statements.schema)
        )
        await conn.execute(statements.bootstrap)
        versions = {r[0] for r in await conn.fetch(statements.versions)}
        check_versions(versions, where=where, migrating=True)
        applied = []
        for version, (description, step) in enumerate(statements.migrations, start=1):
            if version not in versions:
                await conn.execute(step)
                await conn.execute(statements.record_version, version, description)
                applied.append(version)
        return applied
