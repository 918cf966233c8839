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

from collections.abc import Container, Iterable, Sequence
from contextlib import suppress
from typing import Any

import msgspec
from msgspec.structs import replace

from ..._records import TERMINAL_STATES, ErrorInfo, JobRecord, JobState
from ..base import Lease, Outcome

__all__ = [
    "COLUMNS",
    "FINISH",
    "JSON",
    "Finish",
    "columns",
    "copy_records",
    "decode",
    "headers_json",
    "leases",
    "outcome_columns",
    "read_done",
]

#: Columns read into a ``JobRecord``, in the order ``decode`` expects.
COLUMNS = (
    "id, name, queue, payload, state, priority, attempts, max_attempts, timeout, key,"
    " result_ttl, enqueued_at, scheduled_at, started_at, finished_at, lease_expires_at,"
    " worker, result, errors, progress, cancel_requested, headers"
)

#: The encoder of the JSON the backend sends (headers, errors).
JSON = msgspec.json.Encoder()
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


def headers_json(job: JobRecord) -> str:
    """``job``'s headers as the ``jsonb`` parameter the insert statements take."""
    return JSON.encode(job.headers).decode() if job.headers else "{}"


def columns(jobs: Sequence[JobRecord], *, keyed: bool) -> list[list[Any]]:
    """The batch as the insert statements' parameter arrays, one per column."""
    return [
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
    ]


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
        )
        for j in jobs
    ]


def leases(rows: Iterable[Any]) -> list[Lease]:
    """Leases from claimed rows (``COLUMNS``, then the token), in claim order."""
    found = [Lease(job=decode(row), token=row[22], expires_at=row[15]) for row in rows]
    found.sort(key=lambda lease: (-lease.job.priority, lease.job.scheduled_at, lease.job.id))
    return found


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
