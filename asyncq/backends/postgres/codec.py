"""How the PostgreSQL backend's rows and notices map onto records.

Rows are read in the column order of ``COLUMNS`` and decoded by ``decode``;
jobs travel to the server as parameter arrays, one per column (``columns``),
or as ``COPY`` records (``copy_records``); claimed rows become leases
(``leases``) and outcomes the settle statement's arrays (``outcome_columns``).

A done notice (see ``schema``) is a JSON array with one item per finished
job: the job's id (a string), or, from a settlement, what it changed on the
job when that fits (a ``Finish``, built on the server by ``FINISH``): a
waiter, who read the job before waiting, then has it as stored without
reading it again (``read_done``).
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from contextlib import suppress
from typing import Any, NamedTuple

import msgspec
from msgspec.structs import replace

from ..._annotations import decode_json
from ..._records import (
    TERMINAL_STATES,
    Breaker,
    ErrorInfo,
    Gate,
    JobRecord,
    JobState,
    LogLine,
)
from .._poison import Unreadable, read_all, stand_in, unreadable_error
from ..base import Lease, Outcome

__all__ = [
    "COLUMNS",
    "FINISH",
    "JSON",
    "Aside",
    "Finish",
    "aside_columns",
    "columns",
    "copy_records",
    "decode",
    "headers_json",
    "limits_json",
    "meta_json",
    "leases",
    "outcome_columns",
    "read_done",
    "records",
]

#: Columns read into a ``JobRecord``, in the order ``decode`` expects.
COLUMNS = (
    "id, name, queue, payload, state, priority, attempts, max_attempts, timeout, key,"
    " result_ttl, enqueued_at, scheduled_at, started_at, finished_at, lease_expires_at,"
    " worker, result, errors, progress, cancel_requested, headers,"
    " progress_detail, meta, logs, logs_dropped, key_ttl, parents, children, after_failure,"
    " limits, held_by, rate_paid, circuit, held_until, hold"
)

#: The encoder of the JSON the backend sends (headers, errors).
JSON = msgspec.json.Encoder()
_errors = msgspec.json.Decoder(tuple[ErrorInfo, ...])
_headers = msgspec.json.Decoder(dict[str, str])
_meta = msgspec.json.Decoder(dict[str, Any])
_line = msgspec.json.Decoder(LogLine).decode
_gates = msgspec.json.Decoder(tuple[Gate, ...])
_breaker = msgspec.json.Decoder(Breaker)
#: Where the lease token follows ``COLUMNS`` in a claimed row.
TOKEN = 36


def decode(row: Any) -> JobRecord:
    """A ``JobRecord`` from a row (or record) of ``COLUMNS``.

    Raises (``ValueError``, ``msgspec.ValidationError``) for a row that does
    not make a record: ``errors`` or ``headers`` of another JSON shape, a
    state no ``JobState`` names, or a ``timeout`` that is NaN, which no
    deadline can be made of. The typed columns keep every other value in
    range.
    """
    errors, headers, timeout = row[18], row[21], row[8]
    if timeout != timeout:  # NaN: the one float a worker cannot use
        msg = "timeout is NaN"
        raise ValueError(msg)
    if row[30] is not None or row[33] is not None:
        # held until a time (``admit_batch``): only a queued job is; another
        # kept the columns from before its claim
        held = row[4] == "queued" and row[34] is not None
        return _record(
            row,
            errors,
            headers,
            timeout,
            limits=() if row[30] is None else _gates.decode(row[30]),
            held_by=row[31],
            rate_paid=row[32],
            circuit=None if row[33] is None else _breaker.decode(row[33]),
            held_until=row[34] if held else None,
            hold=row[35] if held else None,
        )
    return _record(row, errors, headers, timeout)


def _record(
    row: Any, errors: str, headers: str, timeout: float | None, **limited: Any
) -> JobRecord:
    return JobRecord(
        id=row[0],
        name=row[1],
        queue=row[2],
        payload=row[3],
        state=JobState(row[4]),
        priority=row[5],
        attempts=row[6],
        max_attempts=row[7],
        timeout=timeout,
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
        progress_detail=None if row[22] is None else decode_json(row[22]),
        meta={} if row[23] is None else _meta.decode(row[23]),
        logs=() if row[24] is None else tuple(map(_line, row[24])),
        logs_dropped=row[25],
        key_ttl=row[26],
        parents=_ids(row[27]),
        children=_ids(row[28]),
        after_failure=row[29] or "dead",
        **limited,
    )


def _ids(ids: list[str | None] | None) -> tuple[str, ...]:
    """A ``parents`` or ``children`` column; a NULL in it (written by hand) is no job."""
    return () if ids is None else tuple(i for i in ids if i is not None)


def limits_json(
    jobs: Sequence[JobRecord],
) -> tuple[list[str], list[str | None], list[str | None]]:
    """The ids, limits and circuits (``jsonb`` parameters) of the jobs of a batch that have
    limits or a circuit."""
    gated = [job for job in jobs if job.limits or job.circuit is not None]
    return (
        [job.id for job in gated],
        [JSON.encode(job.limits).decode() if job.limits else None for job in gated],
        [None if job.circuit is None else JSON.encode(job.circuit).decode() for job in gated],
    )


def meta_json(job: JobRecord) -> str | None:
    """``job``'s metadata as the ``jsonb`` parameter the insert statements take (NULL if none)."""
    return JSON.encode(job.meta).decode() if job.meta else None


def headers_json(job: JobRecord) -> str:
    """``job``'s headers as the ``jsonb`` parameter the insert statements take."""
    return JSON.encode(job.headers).decode() if job.headers else "{}"


def columns(jobs: Sequence[JobRecord], *, keyed: bool) -> list[list[Any]]:
    """The batch as the insert statements' parameter arrays, one per column
    (``keyed``: the statement for jobs with keys, which also takes their ``key_ttl``)."""
    arrays: list[list[Any]] = [
        [j.id for j in jobs],
        [j.name for j in jobs],
        [j.queue for j in jobs],
        [j.payload for j in jobs],
        [j.priority for j in jobs],
        [j.attempts for j in jobs],
        [j.max_attempts for j in jobs],
        [j.timeout for j in jobs],
        [j.key for j in jobs] if keyed else [None] * len(jobs),
        [j.result_ttl for j in jobs],
        [j.enqueued_at for j in jobs],
        [j.scheduled_at for j in jobs],
        [headers_json(j) for j in jobs],
        [meta_json(j) for j in jobs],
    ]
    if keyed:
        arrays.append([j.key_ttl for j in jobs])
    return arrays


def copy_records(jobs: Sequence[JobRecord]) -> list[tuple[Any, ...]]:
    """The batch as ``COPY`` records, in the order of ``sql.COPY_COLUMNS``, every job ``queued``."""
    return [
        (
            j.id,
            j.name,
            j.queue,
            j.payload,
            "queued",
            j.priority,
            j.attempts,
            j.max_attempts,
            j.timeout,
            j.result_ttl,
            j.enqueued_at,
            j.scheduled_at,
            headers_json(j),
            meta_json(j),
        )
        for j in jobs
    ]


def _lease(row: Any) -> Lease:
    return Lease(job=decode(row), token=row[TOKEN], expires_at=row[15])


#: The columns of ``COLUMNS`` by name, and the order ``identify`` shows them
#: in: the ones a reader gets wrong first, the bulky bytes last.
_NAMES = tuple(name.strip() for name in COLUMNS.split(","))
_SHOWN = sorted(range(len(_NAMES)), key=lambda i: _NAMES[i] in ("payload", "result"))
#: At most this many characters of one column are kept in the raw text.
_VALUE_SHOWN = 512


def identify(row: Any) -> tuple[str, str | None, bytes]:
    """A row's id, queue and every column as text, read without decoding.

    ``id`` and ``queue`` are text columns (never NULL), so they are as stored.
    """
    lines = []
    for i in _SHOWN:
        value = repr(row[i])
        if len(value) > _VALUE_SHOWN:
            value = f"{value[:_VALUE_SHOWN]}... ({len(value)} characters)"
        lines.append(f"{_NAMES[i]}={value}")
    return str(row[0]), str(row[2]), "\n".join(lines).encode()


def _state(row: Any) -> JobState:
    """The row's state if it names one, else ``dead`` (the stand-in's default)."""
    try:
        return JobState(row[4])
    except ValueError:
        return JobState.DEAD


def records(rows: Sequence[Any], *, at: float) -> list[JobRecord]:
    """Records from rows of ``COLUMNS``, in their order; a ``stand_in`` for each unreadable one.

    A stand-in keeps the stored state when it is one (a queued job whose
    headers are garbage is still queued until a claim takes it aside).
    """
    found, bad = read_all(rows, decode, identify)
    if not bad:
        return found
    read = {record.id: record for record in found}
    states = {str(row[0]): _state(row) for row in rows}
    read.update((u.job_id, stand_in(u, at=at, state=states[u.job_id])) for u in bad)
    return [read[str(row[0])] for row in rows]


class Aside(NamedTuple):
    """A claimed job whose record cannot be read, to be taken aside (``aside_columns``)."""

    unreadable: Unreadable
    token: str
    attempt: int
    #: the stored ``errors`` themselves do not decode: replace them, do not append
    errors_unreadable: bool


def leases(rows: Sequence[Any]) -> tuple[list[Lease], list[Aside]]:
    """Leases from claimed rows (``COLUMNS``, then the token), in claim order.

    Also what to take aside: each claimed row that does not decode (only
    looked for when the batch as a whole does not).
    """
    try:
        # read_all's first pass, inline: a claim pays no call per row for it.
        found = [Lease(job=decode(row), token=row[TOKEN], expires_at=row[15]) for row in rows]
        bad: list[Unreadable] = []
    except Exception:  # noqa: BLE001 - any failure: find the bad rows one by one
        found, bad = read_all(rows, _lease, identify)
    found.sort(key=lambda lease: (-lease.job.priority, lease.job.scheduled_at, lease.job.id))
    if not bad:
        return found, []
    by_id = {str(row[0]): row for row in rows}
    aside = []
    for unreadable in bad:
        row = by_id[unreadable.job_id]
        try:
            _errors.decode(row[18])
            errors_unreadable = False
        except Exception:  # noqa: BLE001 - whatever fails, they cannot be appended to
            errors_unreadable = True
        aside.append(Aside(unreadable, row[TOKEN], row[6], errors_unreadable))
    return found, aside


def aside_columns(aside: Sequence[Aside], *, at: float) -> list[list[Any]]:
    """What to take aside as the ``take_aside`` statement's parameter arrays."""
    return [
        [a.unreadable.job_id for a in aside],
        [a.token for a in aside],
        [
            JSON.encode(unreadable_error(a.unreadable, attempt=a.attempt, at=at)).decode()
            for a in aside
        ],
        [a.errors_unreadable for a in aside],
    ]


def outcome_columns(outcomes: Sequence[Outcome]) -> list[list[Any]]:
    """Outcomes as the settle statements' parameter arrays, one per column."""
    return [
        [o.job_id for o in outcomes],
        [o.token for o in outcomes],
        [o.state.value for o in outcomes],
        [o.result for o in outcomes],
        [None if o.error is None else JSON.encode(o.error).decode() for o in outcomes],
        [o.retry_at for o in outcomes],
    ]


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
