"""The records a backend stores and returns.

These msgspec Structs are the whole vocabulary between asyncq's core and a
storage backend: a backend never sees user objects, only these records and the
MessagePack bytes inside them (``payload``, ``result``). Times are seconds since
the Unix epoch (UTC) as floats, so records encode compactly and compare cheaply
in every store.
"""

from __future__ import annotations

import enum
import os
import time
from typing import Any

import msgspec

__all__ = [
    "TERMINAL_STATES",
    "WORKERS_KEPT_FOR",
    "Breaker",
    "CircuitState",
    "ErrorInfo",
    "ErrorKind",
    "Gate",
    "JobRecord",
    "LimitState",
    "JobState",
    "Lease",
    "LogLine",
    "Outcome",
    "QueueStats",
    "WorkerInfo",
    "WorkerStatus",
    "new_job_id",
]


class JobState(enum.StrEnum):
    """Where a job is in its life. A job is in exactly one state at a time.

    ``waiting``
        waits for its parents (``enqueue(after=[...])``) to finish; then it is
        ``queued`` (or ``scheduled`` if its ``scheduled_at`` is still ahead).
    ``scheduled``
        waits for its ``scheduled_at`` time (``delay=``/``at=``), then is ready.
    ``queued``
        ready to be claimed; or held back by its limits or its circuit, without
        using an attempt: set aside until a running job of a full limit ends
        (``held_by``), or until a rate limit's booked token or an open circuit
        lets it start (``held_until``, ``hold``).
    ``active``
        claimed by a worker that holds its lease.
    ``failed``
        an attempt failed and another one is due at ``scheduled_at``.
    ``completed``
        the handler returned; the result is kept for ``result_ttl``.
    ``dead``
        out of attempts, rejected, or undecodable: a dead letter, kept until
        retried or purged.
    ``cancelled``
        cancelled before it could complete.
    """

    WAITING = "waiting"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    ACTIVE = "active"
    FAILED = "failed"
    COMPLETED = "completed"
    DEAD = "dead"
    CANCELLED = "cancelled"


#: States a job never leaves by itself (only an operator's retry or purge moves it).
TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED})


class ErrorKind(enum.StrEnum):
    """Why an attempt did not complete."""

    ERROR = "error"  #: the handler raised an exception
    RETRY = "retry"  #: the handler raised ``Retry``
    TIMEOUT = "timeout"  #: the handler ran past its timeout
    REJECT = "reject"  #: the handler raised ``Reject``
    DECODE = "decode"  #: the payload did not decode against the handler's schema
    #: no handler with this name in the worker's app: handed back for another
    #: worker during the app's ``unknown_job_grace``, dead after it
    UNKNOWN_JOB = "unknown_job"
    #: the handler raised an exception classified fatal: the worker stopped after it
    FATAL = "fatal"
    LOST = "lost"  #: the lease lapsed (worker killed or stalled)
    CANCELLED = "cancelled"  #: cancelled on request after a worker claimed it
    #: the stored record itself could not be read; the store took the job aside
    UNDECODABLE = "undecodable"
    #: a parent (``enqueue(after=...)``) ended dead or cancelled, so this job never ran
    DEPENDENCY = "dependency"
    #: the handler raised ``CircuitOpen``: the service behind its circuit is down
    CIRCUIT_OPEN = "circuit_open"


class ErrorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """One failed attempt, kept on the job for the operator."""

    kind: ErrorKind
    message: str
    attempt: int
    at: float
    type: str | None = None
    traceback: str | None = None

    def one_line(self) -> str:
        """The error as one line: ``ValueError: width must be > 0``."""
        first = self.message.splitlines()[0] if self.message else ""
        return f"{self.type}: {first}" if self.type else first


class LogLine(msgspec.Struct, frozen=True, array_like=True):
    """One line a handler logged with ``ctx.log``, kept on the job.

    ``attempt`` is the attempt that wrote it (lines survive retries);
    ``level`` one of ``debug``, ``info``, ``warning``, ``error``.
    """

    at: float
    attempt: int
    level: str
    message: str


class Gate(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """One limit a job passes before it starts (``app.limit``), as stored with the job.

    The numbers travel with each job, so every worker and every store knows
    them without a registry; ``key`` is the keyed limit's value for this job,
    computed at enqueue. ``slot`` names the counter the store keeps: one per
    limit, or one per key value of a keyed limit.
    """

    name: str
    key: str | None = None
    concurrency: int | None = None
    rate: float | None = None
    per: float = 1.0
    burst: float = 1.0

    @property
    def slot(self) -> str:
        """The counter's name: ``smtp``, or ``tenant[acme]`` for a keyed limit."""
        return self.name if self.key is None else f"{self.name}[{self.key}]"


class LimitState(msgspec.Struct, frozen=True, omit_defaults=True):
    """One limit counter as the store keeps it (``Backend.limit_states``).

    ``tokens`` is what the rate's bucket holds at ``refilled_at`` (negative
    while starts are booked ahead); ``held`` counts the queued jobs set aside
    until a running one of this counter ends.
    """

    slot: str
    name: str
    key: str | None = None
    concurrency: int | None = None
    rate: float | None = None
    per: float = 1.0
    burst: float = 1.0
    running: int = 0
    tokens: float = 0.0
    refilled_at: float = 0.0
    held: int = 0
    #: the queue the counter belongs to where the store counts per queue (Redis)
    queue: str | None = None


class Breaker(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """A job's circuit breaker (``app.circuit``), as stored with the job."""

    name: str
    failures: int = 5
    within: float = 60.0
    reset_after: float = 30.0


class CircuitState(msgspec.Struct, frozen=True, omit_defaults=True):
    """One circuit as the store keeps it (``Backend.circuit_states``).

    ``state``: ``closed`` (jobs run; ``failures`` holds the recent failure
    times), ``open`` (since ``opened_at``: jobs behind it wait until
    ``opened_at + reset_after``), or ``half_open`` (one job, ``probe``, runs;
    its success closes the circuit, its failure opens it again).
    """

    name: str
    state: str = "closed"
    failures: tuple[float, ...] = ()
    opened_at: float | None = None
    probe: str | None = None
    threshold: int = 5
    within: float = 60.0
    reset_after: float = 30.0
    #: the queue the circuit belongs to where the store keeps it per queue (Redis)
    queue: str | None = None


class JobRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """A job as stored by a backend.

    The producer fills in the identity, payload and options; the backend owns
    ``state``, ``attempts``, the timestamps after ``enqueued_at``, ``result``,
    ``errors`` and ``progress`` from then on.
    """

    id: str
    name: str
    queue: str
    payload: bytes
    state: JobState = JobState.QUEUED
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 1
    timeout: float | None = None
    key: str | None = None
    result_ttl: float | None = None
    enqueued_at: float = 0.0
    #: when the job is (or becomes) ready: the enqueue time, a delay, or a retry's due time
    scheduled_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    #: when the current lease lapses (``active`` only)
    lease_expires_at: float | None = None
    #: the worker holding the lease (``active`` only)
    worker: str | None = None
    result: bytes | None = None
    errors: tuple[ErrorInfo, ...] = ()
    progress: float | None = None
    cancel_requested: bool = False
    #: propagation headers (W3C trace context, baggage) written by the producer
    headers: dict[str, str] = {}
    #: what the handler said with its last progress (any JSON value), ``None`` if nothing
    progress_detail: Any = None
    #: the producer's metadata (``enqueue(meta=...)``): string keys, JSON values
    meta: dict[str, Any] = {}
    #: the last lines the handler logged with ``ctx.log``, oldest first (bounded)
    logs: tuple[LogLine, ...] = ()
    #: how many older lines were dropped to keep ``logs`` bounded
    logs_dropped: int = 0
    #: seconds the ``key`` stays held after the job finished (``enqueue(key_ttl=...)``)
    key_ttl: float | None = None
    #: ``enqueue(debounce=...)``: an instruction to ``Backend.enqueue``, which
    #: stores the job without it (a stored record never carries it)
    debounce: float | None = None
    #: the jobs this one waits for (``enqueue(after=...)``), in the order given
    parents: tuple[str, ...] = ()
    #: the jobs that wait for this one, in the order they were enqueued (kept by the store)
    children: tuple[str, ...] = ()
    #: what a parent ending dead or cancelled does to this job: ``"dead"`` (it
    #: ends as its parent did, with an error of kind ``dependency``) or
    #: ``"run"`` (it runs once every parent finished, in any way)
    after_failure: str = "dead"
    #: the limits the job passes before it starts (``@app.job(limits=...)``)
    limits: tuple[Gate, ...] = ()
    #: the limit counter a queued job waits on, set aside until one of its jobs ends
    held_by: str | None = None
    #: the job already booked its start on its rate limits (it was held until then)
    rate_paid: bool = False
    #: the circuit breaker it runs behind (``@app.job(circuit=...)``)
    circuit: Breaker | None = None
    #: a queued job a rate limit or its circuit holds back is not claimed before
    #: then (its ``scheduled_at`` is the same time); ``None`` otherwise
    held_until: float | None = None
    #: what holds it back until ``held_until``: ``rate:<counter>`` (the rate
    #: limit whose token it booked, ``rate:smtp``) or ``circuit:<name>``
    hold: str | None = None

    @property
    def last_error(self) -> ErrorInfo | None:
        """The most recent failure, if any."""
        return self.errors[-1] if self.errors else None


class Lease(msgspec.Struct, frozen=True):
    """A worker's exclusive claim on one active job.

    ``token`` is unique per claim: a job recovered from a lapsed lease and
    claimed again gets a new token, so the old holder can no longer settle it.
    ``job`` is the record as it was when claimed (state ``active``, attempts
    already counting this attempt).
    """

    job: JobRecord
    token: str
    expires_at: float


class Outcome(msgspec.Struct, frozen=True):
    """How one attempt ended, as the worker reports it to ``Backend.settle``.

    ``state`` is the job's next state:

    - ``completed``: with ``result`` (MessagePack bytes);
    - ``failed``: with ``error`` and ``retry_at`` (epoch seconds) for the next attempt;
    - ``dead``: with ``error``;
    - ``cancelled``: with ``error`` of kind ``cancelled``;
    - ``queued``: handed back untouched by this attempt: the worker shut down
      before starting it, or stopped it when the shutdown timeout ran out.
    """

    job_id: str
    token: str
    state: JobState
    result: bytes | None = None
    error: ErrorInfo | None = None
    retry_at: float | None = None


class QueueStats(msgspec.Struct, frozen=True):
    """Counts for one queue."""

    queue: str
    counts: dict[JobState, int]
    paused: bool = False
    #: ``scheduled_at`` of the oldest job that is ready now, if any
    oldest_ready_at: float | None = None


# Annotations are read (by msgspec, typing.get_type_hints) in the module a
# class's __module__ names, which the package renames to "asyncq": its
# namespace has no ``Any``. These two are objects, not strings, so they resolve
# wherever they are read.
JobRecord.__annotations__.update(progress_detail=Any, meta=dict[str, Any])

_last_ms = 0
_seq = 0


def new_job_id() -> str:
    """A 32-hex-digit id that sorts by creation time (48-bit ms, 16-bit counter, 64 random bits).

    Ids from one process are strictly increasing; across processes they are
    ordered to the millisecond. Hex keeps string order equal to numeric order
    and costs a single C call.
    """
    global _last_ms, _seq
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:
        ms = _last_ms
        _seq = (_seq + 1) & 0xFFFF
        if _seq == 0:  # 65,536 ids in one millisecond: borrow the next one
            ms += 1
    else:
        _seq = 0
    _last_ms = ms
    raw = ms.to_bytes(6, "big") + _seq.to_bytes(2, "big") + os.urandom(8)
    return raw.hex()


# -- the worker registry ---------------------------------------------------------

#: Seconds a store keeps a worker that stopped or was lost, after it was last
#: seen; older entries are deleted (lazily, when workers are put or listed).
WORKERS_KEPT_FOR = 300.0


class WorkerStatus(enum.StrEnum):
    """What a registered worker is doing, as any reader can tell (``WorkerInfo.status``)."""

    RUNNING = "running"  #: renewing its registration
    STOPPED = "stopped"  #: said goodbye on a graceful stop
    LOST = "lost"  #: not stopped, and not seen for longer than its lease


class WorkerInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """A worker as registered in the store, renewed with its heartbeat.

    ``last_seen`` is stamped by the store's clock where it has one; counts are
    since the worker started. ``running`` holds the ids of the jobs it holds
    (running, or claimed ahead).
    """

    id: str
    host: str
    pid: int
    app: str
    queues: tuple[str, ...]
    concurrency: int
    started_at: float
    last_seen: float
    #: seconds a lease lasts without a heartbeat: not seen for longer, the worker is lost
    lease_for: float
    version: str
    running: tuple[str, ...] = ()
    processed: int = 0
    failed: int = 0
    dead: int = 0
    #: when it said goodbye on a graceful stop
    stopped_at: float | None = None

    def status(self, now: float | None = None) -> WorkerStatus:
        """Running, stopped, or lost at ``now`` (default: this machine's clock)."""
        if self.stopped_at is not None:
            return WorkerStatus.STOPPED
        if self.last_seen + self.lease_for < (time.time() if now is None else now):
            return WorkerStatus.LOST
        return WorkerStatus.RUNNING

    def expires_at(self) -> float:
        """When a store deletes the entry: ``WORKERS_KEPT_FOR`` after it was last
        seen, or later while the worker still counts as running."""
        keep = (
            WORKERS_KEPT_FOR
            if self.stopped_at is not None
            else max(WORKERS_KEPT_FOR, self.lease_for)
        )
        return self.last_seen + keep
