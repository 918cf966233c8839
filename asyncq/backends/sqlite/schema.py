"""The SQLite backend's tables, their migrations, and how a job maps onto a row.

One row per job in ``asyncq_jobs``. The fields SQL filters or orders on are
columns; the opaque parts are blobs: ``payload`` and ``result`` as the producer
and the worker wrote them, ``headers`` as a MessagePack map, and ``errors`` as
the MessagePack encodings of ``ErrorInfo`` laid end to end, ``error_count`` of
them, so appending an attempt's error is ``errors || ?`` in SQL rather than a
decode and re-encode of the list. Two columns exist for the backend alone:
``token`` (the current lease, ``active`` only) and ``expires_at``
(``finished_at + result_ttl``, ``completed`` only), which make key holding and
pruning indexed comparisons. ``asyncq_queues`` records every queue seen and
whether it is paused; ``asyncq_meta`` the schema version; ``asyncq_events``
the job event stream.

The SQL is kept to what SQLite 3.8.4 understands (partial indexes, ``PRAGMA
data_version``): no ``RETURNING``, ``UPDATE FROM`` or upsert, since many Python
builds link the system's older SQLite.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec.structs import astuple, replace

from ..._annotations import decode_json, decode_lines, encode_line, encode_meta, meta_text
from ..._records import Breaker, Gate, JobState
from ...exceptions import BackendError
from ..base import ErrorInfo, JobRecord

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

_V1 = (
    """CREATE TABLE asyncq_queues (
        name TEXT PRIMARY KEY NOT NULL,
        paused INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE asyncq_jobs (
        id TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL,
        queue TEXT NOT NULL,
        payload BLOB NOT NULL,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL,
        timeout REAL,
        key TEXT,
        result_ttl REAL,
        enqueued_at REAL NOT NULL,
        scheduled_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        lease_expires_at REAL,
        worker TEXT,
        result BLOB,
        errors BLOB,
        error_count INTEGER NOT NULL DEFAULT 0,
        progress REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        headers BLOB,
        token TEXT,
        expires_at REAL
    )""",
    # claim: the next ready jobs of one queue, in claim order, read straight off the index
    """CREATE INDEX asyncq_jobs_ready ON asyncq_jobs (queue, priority DESC, scheduled_at, id)
        WHERE state = 'queued'""",
    # stats (counts by state), due scheduled/failed jobs, and the earliest of them
    "CREATE INDEX asyncq_jobs_queue_state ON asyncq_jobs (queue, state, scheduled_at)",
    "CREATE INDEX asyncq_jobs_key ON asyncq_jobs (queue, key) WHERE key IS NOT NULL",
    """CREATE INDEX asyncq_jobs_lease ON asyncq_jobs (lease_expires_at)
        WHERE state = 'active'""",
    # purge and retention: finished jobs by state and age
    """CREATE INDEX asyncq_jobs_finished ON asyncq_jobs (state, finished_at)
        WHERE finished_at IS NOT NULL""",
    "CREATE INDEX asyncq_jobs_expires ON asyncq_jobs (expires_at) WHERE expires_at IS NOT NULL",
)

# The worker registry (``workers``): a table of its own.
_WORKERS = (
    """CREATE TABLE asyncq_workers (
        id TEXT PRIMARY KEY NOT NULL,
        info BLOB NOT NULL,
        last_seen REAL NOT NULL,
        expires_at REAL NOT NULL
    )""",
    "CREATE INDEX asyncq_workers_expires ON asyncq_workers (expires_at)",
)

# What a job carries besides its payload: progress detail and metadata as JSON
# text, the lines its handler logged (one JSON array a text line, see
# ``_annotations``) and how many older lines were dropped. NULL while unused.
_ANNOTATIONS = (
    "ALTER TABLE asyncq_jobs ADD COLUMN progress_detail TEXT",
    "ALTER TABLE asyncq_jobs ADD COLUMN meta TEXT",
    "ALTER TABLE asyncq_jobs ADD COLUMN logs TEXT",
    "ALTER TABLE asyncq_jobs ADD COLUMN logs_dropped INTEGER NOT NULL DEFAULT 0",
)

# The job event stream (``events``): one row per event, numbered in the order
# written (the rowid: ``prune`` never deletes the newest row, so a number is
# never given twice),
# the event itself as MessagePack; and, per queue, the highest number prune
# deleted, so a reader after an older one learns it lost events.
_EVENTS = (
    """CREATE TABLE asyncq_events (
        id INTEGER PRIMARY KEY,
        queue TEXT NOT NULL,
        job_id TEXT NOT NULL,
        at REAL NOT NULL,
        body BLOB NOT NULL
    )""",
    "CREATE INDEX asyncq_events_job ON asyncq_events (job_id, id)",
    "CREATE INDEX asyncq_events_queue ON asyncq_events (queue, id)",
    "CREATE INDEX asyncq_events_at ON asyncq_events (at)",
    """CREATE TABLE asyncq_event_floors (
        queue TEXT PRIMARY KEY NOT NULL,
        pruned_through INTEGER NOT NULL
    )""",
)

# Throttled and debounced keys (``enqueue(key_ttl=..., debounce=...)``): the
# seconds a finished job keeps its key, and whether a debounced enqueue took
# the key over from this job (running or finished, it holds it no more).
_KEY_OPTIONS = (
    "ALTER TABLE asyncq_jobs ADD COLUMN key_ttl REAL",
    "ALTER TABLE asyncq_jobs ADD COLUMN key_released INTEGER NOT NULL DEFAULT 0",
)

# Dependencies between jobs (``enqueue(after=...)``): each job's parents and
# children as JSON arrays of ids (NULL: none), and its ``after_failure`` (NULL:
# "dead"). Children are found from their parent's row, by primary key.
# ``asyncq_waits`` has a row per (parent, child) while the child waits, so that
# prune keeps a parent a child still waits for with one index search.
_DEPENDENCIES = (
    "ALTER TABLE asyncq_jobs ADD COLUMN parents TEXT",
    "ALTER TABLE asyncq_jobs ADD COLUMN children TEXT",
    "ALTER TABLE asyncq_jobs ADD COLUMN after_failure TEXT",
    """CREATE TABLE asyncq_waits (
        parent TEXT NOT NULL,
        child TEXT NOT NULL,
        PRIMARY KEY (parent, child)
    ) WITHOUT ROWID""",
    "CREATE INDEX asyncq_waits_child ON asyncq_waits (child)",
)

# Flow control (``backends._limits``): a job's limits (MessagePack, NULL for a
# plain job), the slot a queued job is set aside on (out of the claim order,
# which the ready index now leaves out), whether it booked its rate token, its
# circuit breaker (MessagePack); a row per limit slot, its counter as
# MessagePack (``LimitState``), and per circuit (``CircuitState``).
_LIMITS = (
    "ALTER TABLE asyncq_jobs ADD COLUMN limits BLOB",
    "ALTER TABLE asyncq_jobs ADD COLUMN held_by TEXT",
    "ALTER TABLE asyncq_jobs ADD COLUMN rate_paid INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE asyncq_jobs ADD COLUMN circuit BLOB",
    "DROP INDEX asyncq_jobs_ready",
    """CREATE INDEX asyncq_jobs_ready ON asyncq_jobs (queue, priority DESC, scheduled_at, id)
        WHERE state = 'queued' AND held_by IS NULL""",
    """CREATE INDEX asyncq_jobs_held ON asyncq_jobs (held_by, priority DESC, scheduled_at, id)
        WHERE held_by IS NOT NULL""",
    """CREATE TABLE asyncq_limits (
        slot TEXT PRIMARY KEY NOT NULL,
        state BLOB NOT NULL
    )""",
    """CREATE TABLE asyncq_circuits (
        name TEXT PRIMARY KEY NOT NULL,
        state BLOB NOT NULL
    )""",
)

# The event stream, cheaper to write (``events``): a row holds the events of
# one write to one queue, numbered from its ``id`` to ``id + n - 1``, the
# oldest ``skip`` of them pruned; ``asyncq_event_jobs`` finds the rows holding
# a job's events, in place of the index on the job id. A row from before holds
# one event (``n`` 1).
_EVENTS_PACKED = (
    "ALTER TABLE asyncq_events ADD COLUMN n INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE asyncq_events ADD COLUMN skip INTEGER NOT NULL DEFAULT 0",
    """CREATE TABLE asyncq_event_jobs (
        job_id TEXT NOT NULL,
        event_id INTEGER NOT NULL,
        PRIMARY KEY (job_id, event_id)
    ) WITHOUT ROWID""",
    "INSERT INTO asyncq_event_jobs (job_id, event_id) SELECT job_id, id FROM asyncq_events",
    "DROP INDEX asyncq_events_job",
)

# A job a rate limit or its circuit holds back until a time: it is queued, but
# kept like a scheduled job (state 'scheduled' in the row, so the claim's
# promotion of due jobs brings it back, with no new step on the claim path):
# ``held_until`` (NULL for every other job) makes it read as queued, and
# ``hold`` says what holds it. The index counts such jobs per queue (``stats``)
# and finds them for ``list_jobs``; a promotion or a cancel clears both.
_HOLDS = (
    "ALTER TABLE asyncq_jobs ADD COLUMN held_until REAL",
    "ALTER TABLE asyncq_jobs ADD COLUMN hold TEXT",
    """CREATE INDEX asyncq_jobs_held_until ON asyncq_jobs (queue, state)
        WHERE held_until IS NOT NULL""",
)

#: ``MIGRATIONS[n]`` takes a database from schema version ``n`` to ``n + 1``.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    _V1,
    _WORKERS,
    _ANNOTATIONS,
    _EVENTS,
    _KEY_OPTIONS,
    _DEPENDENCIES,
    _LIMITS,
    _EVENTS_PACKED,
    _HOLDS,
)
#: The schema version this code writes and understands.
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The database was migrated by a newer asyncq than this one."""

    def __init__(self, found: int) -> None:
        self.found = found
        super().__init__(found)


def schema_version(conn: sqlite3.Connection, now: float = 0.0) -> int:
    """The version recorded in the database; 0 for a database asyncq never touched."""
    if (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'asyncq_meta'"
        ).fetchone()
        is None
    ):
        return 0
    row = conn.execute("SELECT value FROM asyncq_meta WHERE key = 'schema_version'").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection, now: float) -> int:
    """Bring the schema to ``SCHEMA_VERSION``; return the version found.

    Raises:
        SchemaTooNew: the database is ahead of this code.
    """
    found = schema_version(conn)
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(found)
    if found == SCHEMA_VERSION:
        return found
    encoding = conn.execute("PRAGMA encoding").fetchone()[0]
    if encoding != "UTF-8":
        msg = f"asyncq needs a UTF-8 SQLite database; this one is {encoding}"
        raise BackendError(msg)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS asyncq_meta (key TEXT PRIMARY KEY NOT NULL, value NOT NULL)"
    )
    for version in range(found, SCHEMA_VERSION):
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
    conn.execute(
        "INSERT OR REPLACE INTO asyncq_meta (key, value) VALUES ('schema_version', ?)",
        (SCHEMA_VERSION,),
    )
    conn.execute(
        "INSERT OR REPLACE INTO asyncq_meta (key, value) VALUES ('migrated_at', ?)", (now,)
    )
    return found


def drop(conn: sqlite3.Connection, now: float) -> None:
    """Drop every asyncq table (``asyncq_*``, whatever version made it); other tables stay."""
    found = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'asyncq_*'"
    ).fetchall()
    for (table,) in found:
        conn.execute(f'DROP TABLE "{table}"')


# -- rows <-> records ------------------------------------------------------------

# JobRecord's fields up to ``result`` are stored as they are, in columns of the
# same names; the rest need encoding. Deriving the list keeps the two in step:
# a new field fails loudly here or in SQL, never silently shifts.
_PLAIN = JobRecord.__struct_fields__[: JobRecord.__struct_fields__.index("result") + 1]
_NAMES = (
    *_PLAIN,
    "errors",
    "error_count",
    "progress",
    "cancel_requested",
    "headers",
    "progress_detail",
    "meta",
    "logs",
    "logs_dropped",
    "key_ttl",
    "parents",
    "children",
    "after_failure",
    "limits",
    "held_by",
    "rate_paid",
    "circuit",
    "held_until",
    "hold",
)
_COLUMNS = ", ".join(_NAMES)
#: Every job column, then the ``rowid``: a row that cannot be read is taken
#: aside by its rowid, whatever garbage its ``id`` holds.
SELECT_JOB = f"SELECT {_COLUMNS}, rowid FROM asyncq_jobs"
#: The job columns, in ``SELECT_JOB`` and ``INSERT_JOB`` order.
NAMES = _NAMES
#: Positions in a ``SELECT_JOB`` row, for what must be read without decoding it.
ID, QUEUE, ATTEMPTS, ERRORS, ERROR_COUNT, ROWID = (
    *(_NAMES.index(name) for name in ("id", "queue", "attempts", "errors", "error_count")),
    len(_NAMES),
)
_KEY_TTL = _NAMES.index("key_ttl")
#: The columns from ``key_ttl`` on of a job that uses none of what they store.
_PLAIN_TAIL = (None, None, None, None, None, None, 0, None, None, None)
INSERT_JOB = f"INSERT INTO asyncq_jobs ({_COLUMNS}) VALUES ({', '.join('?' * len(_NAMES))})"
# A job as a producer makes it sets its first fields, its headers and its
# metadata: the other columns keep their defaults (NULL, 0), so a batch of such
# jobs binds 15 values a row rather than every column (``new_row``).
_FIELDS = JobRecord.__struct_fields__
_NEW_NAMES = (*_FIELDS[: _FIELDS.index("scheduled_at") + 1], "headers", "meta")
INSERT_NEW = (
    f"INSERT INTO asyncq_jobs ({', '.join(_NEW_NAMES)}) VALUES ({', '.join('?' * len(_NEW_NAMES))})"
)
_FIRST = len(_NEW_NAMES) - 2
_HEADERS, _META = _FIELDS.index("headers"), _FIELDS.index("meta")
_DEFAULTS = JobRecord(id="", name="", queue="", payload=b"")
#: What a new job holds between its first fields and its headers, and after its metadata.
_UNSET_BEFORE = astuple(_DEFAULTS)[_FIRST:_HEADERS]
_UNSET_AFTER = astuple(_DEFAULTS)[_META + 1 :]

ENCODER = msgspec.msgpack.Encoder()
_errors_decoder = msgspec.msgpack.Decoder(tuple[ErrorInfo, ...])
_headers_decoder = msgspec.msgpack.Decoder(dict[str, str])
_meta_decoder = msgspec.json.Decoder(dict[str, Any])
_gates_decoder = msgspec.msgpack.Decoder(tuple[Gate, ...])
_breaker_decoder = msgspec.msgpack.Decoder(Breaker)
_json = msgspec.json.encode
_MISSING = object()
_convert = msgspec.convert
_BYTES = (bytes,)


def encode_errors(errors: Iterable[ErrorInfo]) -> bytes:
    return b"".join(ENCODER.encode(error) for error in errors)


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def to_record(row: Sequence[Any]) -> JobRecord:
    """Decode a row selected with ``SELECT_JOB``, checking every value's type.

    SQLite keeps whatever value a column is given, so a row written by hand
    or by another program may hold text where a number belongs: the record
    is built by ``msgspec.convert``, which checks each field in C (and costs
    less than building the Struct from keywords), so a record this returns
    is safe to use. Callers read batches through ``_poison.read_all``.

    Raises:
        Exception: the row does not hold a job this code can read
            (``msgspec.ValidationError`` naming the field, most often).
    """
    fields = dict(zip(_PLAIN, row, strict=False))
    (errors, error_count, progress, cancel_requested, headers, detail, meta, logs, dropped) = row[
        len(_PLAIN) : _KEY_TTL
    ]
    # ``errors`` is NULL until an attempt ends, b"" after one without an error
    fields["errors"] = (
        _errors_decoder.decode(_array_header(error_count) + errors) if errors is not None else ()
    )
    fields["progress"] = progress
    fields["cancel_requested"] = bool(cancel_requested)
    fields["headers"] = _headers_decoder.decode(headers) if headers is not None else {}
    if detail is not None:
        fields["progress_detail"] = decode_json(detail)
    if meta is not None:
        fields["meta"] = _meta_decoder.decode(meta)
    if logs is not None:
        fields["logs"] = decode_lines(logs)
    if dropped:
        fields["logs_dropped"] = dropped
    tail = row[_KEY_TTL : len(_NAMES)]
    if tail != _PLAIN_TAIL:  # a job using throttling, dependencies or flow control
        _read_tail(fields, tail)
    # bytes pass as they are: msgspec would otherwise take text for base64
    return _convert(fields, JobRecord, builtin_types=_BYTES)


def _read_tail(fields: dict[str, Any], tail: Sequence[Any]) -> None:
    """The columns after ``logs_dropped`` into ``fields``, those that are not their default."""
    (key_ttl, parents, children, after_failure, limits, held_by, rate_paid, circuit) = tail[:8]
    held_until, hold = tail[8:]
    if key_ttl is not None:
        fields["key_ttl"] = key_ttl
    if parents is not None:
        fields["parents"] = decode_ids(parents)
    if children is not None:
        fields["children"] = decode_ids(children)
    if after_failure is not None:
        fields["after_failure"] = after_failure
    if limits is not None or circuit is not None:
        if limits is not None:
            fields["limits"] = _gates_decoder.decode(limits)
        if circuit is not None:
            fields["circuit"] = _breaker_decoder.decode(circuit)
        fields["held_by"] = held_by
        fields["rate_paid"] = bool(rate_paid)
        if held_until is not None and fields.get("state") == "scheduled":
            # held back by a rate limit or its circuit: queued, kept as scheduled (_HOLDS)
            fields["state"] = "queued"
            fields["held_until"] = held_until
            fields["hold"] = hold


def errors_readable(row: Sequence[Any]) -> bool:
    """Whether a row's stored errors decode: a job taken aside keeps them, or else loses them."""
    errors, count = row[ERRORS], row[ERROR_COUNT]
    if type(count) is not int or count < 0:
        return False
    if errors is None:
        return count == 0
    try:
        _errors_decoder.decode(_array_header(count) + errors)
    except Exception:  # noqa: BLE001 - any failure means the errors cannot be kept
        return False
    return True


def new_row(job: JobRecord) -> tuple[Any, ...] | None:
    """``job``'s row in ``INSERT_NEW``'s columns; ``None`` if it sets any other one."""
    values = astuple(job)
    if values[_FIRST:_HEADERS] != _UNSET_BEFORE or values[_META + 1 :] != _UNSET_AFTER:
        return None
    return (
        *values[:_FIRST],
        ENCODER.encode(job.headers) if job.headers else None,
        encode_meta(job.meta).decode() if job.meta else None,
    )


def to_row(job: JobRecord) -> tuple[Any, ...]:
    if job.held_until is not None and job.state == "queued":
        job = replace(job, state=JobState.SCHEDULED)  # as a hold is kept (_HOLDS)
    return (
        *astuple(job)[: len(_PLAIN)],
        encode_errors(job.errors) if job.errors else None,
        len(job.errors),
        job.progress,
        int(job.cancel_requested),
        ENCODER.encode(job.headers) if job.headers else None,
        None if job.progress_detail is None else _json(job.progress_detail).decode(),
        encode_meta(job.meta).decode() if job.meta else None,
        "\n".join(encode_line(line).decode() for line in job.logs) if job.logs else None,
        job.logs_dropped,
        job.key_ttl,
        encode_ids(job.parents) if job.parents else None,
        encode_ids(job.children) if job.children else None,
        None if job.after_failure == "dead" else job.after_failure,
        ENCODER.encode(job.limits) if job.limits else None,
        job.held_by,
        int(job.rate_paid),
        None if job.circuit is None else ENCODER.encode(job.circuit),
        job.held_until,
        job.hold,
    )


def encode_ids(ids: Sequence[str]) -> str:
    """A ``parents`` or ``children`` column: the ids as a JSON array."""
    return _json(ids).decode()


_ids_decoder = msgspec.json.Decoder(tuple[str, ...])


def decode_ids(text: str | bytes) -> tuple[str, ...]:
    """The ids a ``parents`` or ``children`` column holds."""
    return _ids_decoder.decode(text)


def meta_value(meta: str | bytes | None, key: str) -> str | None:
    """SQL ``asyncq_meta_value(meta, key)``: the value at ``key`` as ``meta_text``, or NULL.

    Registered on each connection (deterministic): ``list_jobs`` filters on it.
    """
    if meta is None:
        return None
    try:
        value = _meta_decoder.decode(meta).get(key, _MISSING)
    except msgspec.DecodeError:
        return None
    return None if value is _MISSING else meta_text(value)
