"""Job events: what happened to a job, in the order the store made it happen.

Every state change of a job is written as one ``JobEvent`` by the same
atomic step that makes the change (a Lua script, a SQL transaction, one
critical section of the memory store). A store gives each event an id that
orders its events and lets a reader resume after it. ``EventPage`` is one
read of the stream; ``EventsLost`` tells a reader that the store pruned
events it had not read yet.

The builders below are the fields each kind carries, written once: stores
that hold records in Python call them, and the SQL and Lua that write the
same events mirror them (see docs/events.md, "The schema").
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

import msgspec

from ._records import ErrorInfo, JobRecord, JobState, LogLine, Outcome

__all__ = [
    "EventFields",
    "EventKind",
    "EventPage",
    "EventsLost",
    "JobEvent",
    "debounced_event",
    "decode_event",
    "encode_event",
    "enqueued_event",
    "enqueued_fields",
    "event_fields",
    "fields_event",
    "job_event",
    "log_events",
    "outcome_fields",
    "recovered_event",
    "settled_event",
    "settled_fields",
    "started_event",
    "started_fields",
]


class EventKind(enum.StrEnum):
    """What happened to a job (the ``kind`` of a ``JobEvent``)."""

    ENQUEUED = "enqueued"  #: stored by ``enqueue`` (``due``: when it is ready, if delayed)
    STARTED = "started"  #: claimed by a worker (``attempt``, ``worker``)
    PROGRESS = "progress"  #: the handler reported progress (``progress``, ``detail``)
    LOG = "log"  #: the handler logged a line (``level``, ``message``)
    RETRYING = "retrying"  #: an attempt failed, another is due (``error``, ``due``)
    COMPLETED = "completed"  #: the handler returned (``duration``)
    DEAD = "dead"  #: out of attempts or rejected (``error``)
    CANCELLED = "cancelled"  #: cancelled (``by``, and ``error`` when it was running)
    RECOVERED = "recovered"  #: its worker's lease lapsed; queued again (``worker``, ``error``)
    RETRIED = "retried"  #: an operator put the dead job back in its queue (``by``)
    REMOVED = "removed"  #: an operator deleted it (``by``)
    #: a debounced enqueue gave the pending job a newer payload; it runs at ``due``
    DEBOUNCED = "debounced"
    #: stored ``waiting`` on its parents (``enqueue(after=...)``), right after ``enqueued``
    WAITING = "waiting"
    #: its last parent finished: it is ready (``due``: when, if delayed)
    RELEASED = "released"


class JobEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """One thing that happened to one job.

    Attributes:
        id: the store's id of the event: events of one store are ordered by
            it, and a reader resumes after it (``read_events(after=id)``).
            Opaque text: compare ids only through the store.
        kind: what happened.
        job_id, name, queue: the job.
        at: when, in epoch seconds, by the store's clock where it has one.
        attempt: the attempt the event belongs to (``started`` and after).
        worker: the worker that ran the attempt.
        error: the error that ended the attempt (``retrying``, ``dead``,
            ``cancelled`` of a running job, ``recovered``).
        due: when the job is ready next (``retrying``, ``debounced``;
            ``enqueued`` when delayed).
        progress: the fraction reported (``progress``).
        detail: what the handler said with its progress (any JSON value).
        duration: seconds from the attempt's start to its end (``completed``).
        by: who acted: for a cancel, who asked: ``api`` (``JobHandle.cancel``),
            ``operator`` (an ``Admin`` call), ``cli``, ``dashboard``, or
            ``cascade`` (a parent ended so); ``worker`` for a running job the
            worker stopped on request; ``operator`` for retries and removals;
            ``recovery`` for a job its lapsed lease ended.
        level, message: the logged line (``log``).
    """

    id: str
    kind: EventKind
    job_id: str
    name: str
    queue: str
    at: float
    attempt: int | None = None
    worker: str | None = None
    error: ErrorInfo | None = None
    due: float | None = None
    progress: float | None = None
    detail: Any = None
    duration: float | None = None
    by: str | None = None
    level: str | None = None
    message: str | None = None


# See the note in _records: annotations resolve outside this module too.
JobEvent.__annotations__.update(detail=Any)


class EventPage(msgspec.Struct, frozen=True):
    """One read of the event stream (``read_events``).

    Attributes:
        events: the events after the id asked for, in order.
        last_id: the id to read after next time: the last event's, or an id
            past the events of other queues the store looked through, or the
            id asked for when there were none (``None`` if none was given).
        lost: how many events after the id asked for the store pruned before
            they were read (0: nothing was skipped). Counted over every
            queue, so with a ``queues`` filter it is an upper bound.
    """

    events: list[JobEvent]
    last_id: str | None
    lost: int = 0


class EventsLost(msgspec.Struct, frozen=True):
    """In an event stream: the store pruned ``count`` events this reader had not read.

    The stream goes on with the oldest event still kept, after ``after``.
    A reader that needs every event reads faster, or keeps events longer
    (``Retention(events=...)``).
    """

    count: int
    after: str | None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(JobEvent)


def encode_event(event: JobEvent) -> bytes:
    """The MessagePack bytes a store keeps for ``event`` (its ``id`` left empty)."""
    return _encoder.encode(event)


def decode_event(data: bytes, event_id: str) -> JobEvent:
    """The event a store kept as ``data``, with the store's id."""
    return msgspec.structs.replace(_decoder.decode(data), id=event_id)


# -- what each kind carries ----------------------------------------------------------

#: An event's fields after ``id``, in ``JobEvent``'s order, its ``kind`` as text
#: (trailing ``None`` may be left out): ``fields_event(event_id, fields)`` is the event.
#: The memory store packs these and makes the event only when it is read: a tuple
#: costs its writer less than a struct (and text packs faster than an enum member).
EventFields = tuple[Any, ...]

_ENQUEUED = EventKind.ENQUEUED.value
_STARTED = EventKind.STARTED.value
_COMPLETED = EventKind.COMPLETED.value
_RETRYING = EventKind.RETRYING.value
_DEAD = EventKind.DEAD.value
_CANCELLED = EventKind.CANCELLED.value


def fields_event(event_id: str, fields: EventFields) -> JobEvent:
    """The event of ``fields`` (``EventFields``), with the store's id."""
    return JobEvent(event_id, EventKind(fields[0]), *fields[1:])


def event_fields(event: JobEvent) -> EventFields:
    """``event``'s ``EventFields``."""
    fields = msgspec.structs.astuple(event)
    return (event.kind.value, *fields[2:])


def enqueued_fields(job: JobRecord, now: float) -> EventFields:
    """``enqueued``: a job ``enqueue`` stored (``job`` as stored)."""
    if job.state is JobState.SCHEDULED:
        due = job.scheduled_at
        return (_ENQUEUED, job.id, job.name, job.queue, now, None, None, None, due)
    return (_ENQUEUED, job.id, job.name, job.queue, now)


def enqueued_event(job: JobRecord, now: float) -> JobEvent:
    """``enqueued_fields`` as an event."""
    return fields_event("", enqueued_fields(job, now))


def debounced_event(job: JobRecord, now: float) -> JobEvent:
    """``debounced``: a debounced enqueue gave the pending ``job`` (as it is now) a newer record."""
    return JobEvent("", EventKind.DEBOUNCED, job.id, job.name, job.queue, now, due=job.scheduled_at)


def started_fields(job: JobRecord, now: float) -> EventFields:
    """``started``: ``job`` as a claim made it (active, attempts counted)."""
    return (_STARTED, job.id, job.name, job.queue, now, job.attempts, job.worker)


def started_event(job: JobRecord, now: float) -> JobEvent:
    """``started_fields`` as an event."""
    return fields_event("", started_fields(job, now))


def outcome_fields(job: JobRecord, outcome: Outcome, now: float) -> EventFields | None:
    """The event of a settled attempt (``job`` as it was, active); ``None`` for a hand-back."""
    return settled_fields(
        job.id, job.name, job.queue, job.attempts, job.worker, job.started_at, outcome, now
    )


def settled_fields(
    job_id: str,
    name: str,
    queue: str,
    attempt: int,
    worker: str | None,
    started_at: float | None,
    outcome: Outcome,
    now: float,
) -> EventFields | None:
    """``outcome_fields`` from the job's columns, for stores that read no whole record."""
    state = outcome.state
    if state is JobState.COMPLETED:
        duration = now - started_at if started_at is not None and started_at < now else 0.0
        # ... attempt, worker, error, due, progress, detail, duration
        return (
            _COMPLETED,
            job_id,
            name,
            queue,
            now,
            attempt,
            worker,
            None,
            None,
            None,
            None,
            duration,
        )
    if state is JobState.FAILED:
        due = outcome.retry_at if outcome.retry_at is not None else now
        return (_RETRYING, job_id, name, queue, now, attempt, worker, outcome.error, due)
    if state is JobState.DEAD or state is JobState.CANCELLED:
        kind = _DEAD if state is JobState.DEAD else _CANCELLED
        by = None if state is JobState.DEAD else "worker"
        # ... attempt, worker, error, due, progress, detail, duration, by
        return (
            kind,
            job_id,
            name,
            queue,
            now,
            attempt,
            worker,
            outcome.error,
            None,
            None,
            None,
            None,
            by,
        )
    return None  # QUEUED: handed back untouched; no event


def settled_event(
    job_id: str,
    name: str,
    queue: str,
    attempt: int,
    worker: str | None,
    started_at: float | None,
    outcome: Outcome,
    now: float,
) -> JobEvent | None:
    """``settled_fields`` as an event."""
    fields = settled_fields(job_id, name, queue, attempt, worker, started_at, outcome, now)
    return None if fields is None else fields_event("", fields)


def job_event(job: JobRecord, kind: EventKind, now: float, **fields: Any) -> JobEvent:
    """An event of ``kind`` for ``job`` with ``fields`` (the kinds without a builder)."""
    return JobEvent("", kind, job.id, job.name, job.queue, now, **fields)


def dependency_event(job: JobRecord, now: float) -> JobEvent:
    """The event of ``job`` as its parents just made it (``_common.linked`` at
    enqueue, ``_common.released`` later): ``waiting``, ``released`` (``due`` when
    delayed), or its end, ``dead`` / ``cancelled`` by ``cascade`` with the
    ``dependency`` error. At enqueue, a child whose parents all completed
    already is stored ready: its ``enqueued`` says it all, so callers ask only
    for a child stored waiting or ended.
    """
    state = job.state
    if state is JobState.WAITING:
        return job_event(job, EventKind.WAITING, now)
    if state is JobState.DEAD or state is JobState.CANCELLED:
        kind = EventKind.DEAD if state is JobState.DEAD else EventKind.CANCELLED
        error = job.errors[-1] if job.errors else None
        return job_event(job, kind, now, error=error, by="cascade")
    due = job.scheduled_at if state is JobState.SCHEDULED else None
    return job_event(job, EventKind.RELEASED, now, due=due)


def recovered_event(job: JobRecord, state: JobState, error: ErrorInfo, now: float) -> JobEvent:
    """What ``recover`` made of ``job`` (active, its lease lapsed), now in ``state``."""
    fields: dict[str, Any] = {"attempt": job.attempts, "worker": job.worker, "error": error}
    if state is JobState.CANCELLED:
        return job_event(job, EventKind.CANCELLED, now, by="recovery", **fields)
    if state is JobState.DEAD:
        return job_event(job, EventKind.DEAD, now, by="recovery", **fields)
    return job_event(job, EventKind.RECOVERED, now, **fields)


def log_events(job: JobRecord, lines: Sequence[LogLine]) -> list[JobEvent]:
    """One ``log`` event per line stored."""
    return [
        job_event(
            job,
            EventKind.LOG,
            line.at,
            attempt=line.attempt,
            level=line.level,
            message=line.message,
        )
        for line in lines
    ]
