"""The storage protocol every asyncq backend implements, and its semantics.

This docstring and the method docstrings below are the specification; the
memory backend (``asyncq.backends.memory``) is its reference implementation and
``tests/backends/test_conformance.py`` its executable form. Implementations do
not repeat these docs.

Model
-----
A backend stores ``JobRecord``\\ s. Each job is in exactly one ``JobState``;
every transition below is atomic in the store (one Lua script, one SQL
statement or transaction, one critical section), never a read-modify-write
from Python. The life of a job::

    enqueue ─▶ scheduled ──(scheduled_at reached)──▶ queued ─▶ active ─▶ completed
                                                       ▲          │
                                 failed ◀──────────────┼──────────┤ (retry_at)
                                   └─(retry_at reached)┘          ├─▶ dead
                 cancel (scheduled/queued/failed) ─▶ cancelled ◀──┘ (cancel while active)

"Ready" means: state ``queued`` (and not set aside by a limit, ``held_by``), or
state ``scheduled``/``failed`` with ``scheduled_at <= now``. A backend may keep
due jobs in ``scheduled``/``failed`` until it claims them, or promote them to
``queued``; readers must not care.

Times are epoch seconds (float). ``now`` is the backend's clock: the store's
own clock where it has one (PostgreSQL ``now()``, Redis ``TIME``), otherwise
``time.time()``. Producers set ``enqueued_at`` and ``scheduled_at``; backends
set every other timestamp.

Leases and at-least-once
------------------------
``claim`` hands out leases. A lease is exclusive until it lapses
(``lease_for`` seconds after the claim or the last ``heartbeat``). ``recover``
puts jobs with lapsed leases back to ``queued`` (or ``dead`` when out of
attempts), after which a new claim gets a new token. ``settle`` applies an
outcome only for the current token, so a job is completed at most once, while
a job whose worker died runs again: at-least-once.

Ordering
--------
Within a queue, ``claim`` returns ready jobs by ``priority`` descending, then
``scheduled_at`` ascending, then ``id`` ascending (ids sort by creation).
Across the queues of one claim the backend may interleave as it likes.

Idempotency keys
----------------
``key`` is unique per queue among jobs that are scheduled, queued, active or
failed, or completed less than ``result_ttl`` ago (forever when ``result_ttl``
is ``None``). A dead or cancelled job frees its key. A job with a ``key_ttl``
holds it, whatever its end (completed, dead, cancelled), until ``key_ttl``
seconds after ``finished_at``, and no longer, even with its result kept; a
finished job deleted (``remove``, ``purge``, ``prune``) frees it at once.

A job submitted with ``debounce`` (``_common.debounced``): when the job holding
its key is pending and was never claimed (``_common.is_pending``), that job
takes the submitted record (payload, metadata, options, ``enqueued_at``,
``scheduled_at``), keeping its id, key and attempts, and its slot in the
result is that job as changed (with events on, a ``debounced`` event); when
the holder is running, retrying or finished, or there is none, the submitted
job is stored and takes the key over (the old holder holds it no more). A
stored record never carries ``debounce``.

Flow control
------------
A job with ``limits`` (``Gate`` records) is claimed only if its limits let it
start, decided in the claim's atomic step by ``asyncq.backends._limits.admit``:
a job whose concurrency slot is full stays ``queued`` but is set aside
(``held_by``) and skipped, and one short of a rate token is scheduled for its
booked token (``rate_paid``); neither uses an attempt, and the jobs behind it
are claimed as usual. Whatever takes a limited job out of ``active``
(``settle``, ``recover``) frees its slots and puts the first job set aside on
each back in the claim order, in the same atomic step. A job behind a
``circuit`` (a ``Breaker``) is claimed only while the circuit lets it
(``_limits.circuit_admit``: otherwise it is scheduled for when the circuit may
half-open), and its end is counted by the circuit in the step that ends it
(``_limits.circuit_ended``). Jobs without limits or circuit cost the claim
nothing more than the ``held_by`` test. Memory, SQLite and
PostgreSQL keep one counter per slot for the store; Redis keeps them per
queue (a script touches the keys of one queue's hash tag).

Notifications
-------------
``wait_for_work`` and ``wait_finished`` are woken by the store (blocking pop,
pub/sub, LISTEN/NOTIFY, an in-process event), not by a sleep loop; polling is
allowed only as a safety net with a long interval, or across processes where
the store has no push (SQLite).

Retention
---------
``prune`` deletes a completed job once its ``result_ttl`` has passed, and
otherwise what ``Retention`` says is old: the same three settings, in seconds
after ``finished_at``, with the same defaults, on every store
(``retention_completed``, ``retention_dead``, ``retention_cancelled`` as
keyword or URL options). ``Retention`` may also cap how many finished jobs of
each state a queue keeps (``retention_max_completed``, ``retention_max_dead``,
``retention_max_cancelled``): beyond the cap, the oldest by ``finished_at``
go first, whatever their age.

Dependencies
------------
A job with ``parents`` (ids of jobs of its own queue) is stored ``waiting``
by ``enqueue``, which appends its id to each parent's ``children`` in the
same atomic step; a parent that is not stored in the child's queue makes
``enqueue`` raise ``UnknownParent`` and store nothing of the batch (a batch
may name a parent stored earlier in it). Whenever a job with children
finishes (``settle``, ``recover``, ``cancel``) or is removed, each waiting
child is decided by ``_common.released`` in that same atomic step: ended
like its first parent that ended ``dead`` or ``cancelled`` (an error of kind
``dependency``) unless its ``after_failure`` is ``"run"``; else ready
(``queued``, or ``scheduled`` while ``scheduled_at`` is ahead) once every
parent finished; else still waiting. A child that ends so releases its own
children in turn. ``enqueue`` applies the same rule at once, so a parent
already finished counts. ``prune`` keeps a job while a child waits for it.

Removal
-------
``remove`` deletes jobs in any state but ``active`` (a running job is
refused: cancel it first). A removed job is gone as if purged: its id and key
are free, and its waiters wake and find no job.

Optional features
-----------------
What only some stores (or some instances of one store) can do is a
``Capability``: a typed key naming a protocol of its own (``SettlesOnClaim``,
``EnqueuesWaited``, ``Migrates``, ``Drops``). An instance lists the ones it
offers in ``capabilities``, and callers ask ``SETTLE_ON_CLAIM.of(backend)``,
which returns the backend typed as that protocol, or ``None``.

Errors
------
A store that cannot be reached raises ``BackendUnavailable``; one that answers
wrongly raises ``BackendError``. No driver exception escapes a backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar, cast, runtime_checkable

import anyio
import msgspec
from anyio.abc import TaskStatus

from .._events import EventPage, JobEvent
from .._records import (
    TERMINAL_STATES,
    CircuitState,
    ErrorInfo,
    ErrorKind,
    JobRecord,
    JobState,
    Lease,
    LimitState,
    LogLine,
    Outcome,
    QueueStats,
    WorkerInfo,
)
from ._retention import Retention

__all__ = [
    "DROP",
    "ENQUEUE_WAITED",
    "EVENTS",
    "MIGRATE",
    "OUTCOME_STATES",
    "PUSHES_CANCEL",
    "SETTLE_ON_CLAIM",
    "SIZES_POOL",
    "TERMINAL_STATES",
    "TRANSACTIONAL_ENQUEUE",
    "Backend",
    "Capability",
    "CircuitState",
    "Drops",
    "EnqueuesWaited",
    "ErrorInfo",
    "EventPage",
    "HasEvents",
    "JobEvent",
    "ErrorKind",
    "HeartbeatReply",
    "JobRecord",
    "JobState",
    "Lease",
    "LimitState",
    "LogLine",
    "Migrates",
    "Outcome",
    "PushesCancel",
    "QueueStats",
    "Retention",
    "SettlesOnClaim",
    "SizesPool",
    "WorkerInfo",
    "check_outcomes",
    "purgeable",
    "stored_as_given",
]

_P = TypeVar("_P")

#: The states an ``Outcome`` may ask for.
OUTCOME_STATES = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED, JobState.QUEUED}
)


def stored_as_given(submitted: JobRecord, returned: JobRecord) -> bool:
    """Whether ``enqueue`` stored ``submitted``, rather than return a job it found.

    ``returned`` is the slot of ``submitted`` in ``enqueue``'s result. A job
    holding the key has another id; a job stored under the same (caller-chosen)
    id has another ``enqueued_at``, since the producer stamps it on each call.
    """
    return returned.id == submitted.id and returned.enqueued_at == submitted.enqueued_at


def check_outcomes(outcomes: Sequence[Outcome]) -> None:
    """Refuse a ``settle`` batch before any of it is applied, if an outcome has no meaning.

    Raises:
        ValueError: an outcome's state is not one of ``OUTCOME_STATES``.
    """
    for outcome in outcomes:
        if outcome.state not in OUTCOME_STATES:
            msg = f"settle: {outcome.state.value!r} is not an outcome (job {outcome.job_id})"
            raise ValueError(msg)


def purgeable(states: Sequence[JobState]) -> frozenset[JobState]:
    """The states ``purge`` was given, checked: only finished jobs may be purged.

    Raises:
        ValueError: a state is not terminal.
    """
    wanted = frozenset(states)
    if not wanted <= TERMINAL_STATES:
        bad = ", ".join(sorted(s.value for s in wanted - TERMINAL_STATES))
        msg = f"purge only removes finished jobs (completed, dead, cancelled), not {bad}"
        raise ValueError(msg)
    return wanted


class HeartbeatReply(msgspec.Struct, frozen=True):
    """What ``Backend.heartbeat`` found.

    Attributes:
        lost: ids of jobs whose lease this worker no longer holds; the worker
            must stop them and discard their outcome.
        cancel: ids of held jobs that an operator asked to cancel; the worker
            cancels them and settles them as ``cancelled``.
    """

    lost: frozenset[str] = frozenset()
    cancel: frozenset[str] = frozenset()


@runtime_checkable
class Backend(Protocol):
    """Storage for jobs. See the module docstring for the model all methods share."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Backend:
        """Make an unopened backend from its URL; keyword ``options`` win over the URL's.

        Options in the URL's query are parsed with their types (see
        ``asyncq.backends._common.parse_url_options``); a name the store does
        not know raises ``ConfigurationError`` listing the known ones, with
        any password in the URL masked. Every store knows the ``Retention``
        options. ``asyncq.backends.from_url`` picks the class by scheme.

        Raises:
            ConfigurationError: not this store's URL, or an unknown or malformed option.
        """
        ...

    @property
    def capabilities(self) -> frozenset[Capability[Any]]:
        """The optional features this instance offers (see ``Capability``).

        Answered by the instance, not the class: one store may offer a feature
        in one configuration and not in another (a Redis Cluster does not
        settle and claim in one round trip). It does not change while the
        instance lives.
        """
        ...

    @property
    def url(self) -> str:
        """Where the store is, for messages and logs, with any password masked."""
        ...

    async def open(self) -> None:
        """Connect, and create or check the schema. Called once before any other method."""
        ...

    async def close(self) -> None:
        """Release connections and wake every pending ``wait_*`` call. Idempotent."""
        ...

    # -- producers ---------------------------------------------------------

    async def enqueue(
        self, jobs: Sequence[JobRecord], *, connection: object | None = None, fresh: bool = False
    ) -> list[JobRecord]:
        """Store new jobs; return, for each input in order, the job as stored.

        Each input has ``attempts == 0``, an ``id``, ``enqueued_at`` and
        ``scheduled_at`` set by the producer. A job asked for now
        (``scheduled_at <= enqueued_at``) is stored ``queued`` and ready at
        once whatever the clocks say: a backend whose clock is behind the
        producer's (another host, or PostgreSQL's ``now()`` inside an open
        transaction) stores ``scheduled_at = min(scheduled_at, now)``. A
        delayed job is stored ``scheduled`` when ``scheduled_at`` is after
        now, else ``queued``.

        A job whose ``key`` is held (see "Idempotency keys") is not stored: its
        slot in the result is the existing job, so callers tell the two apart
        by ``returned.id != submitted.id``. Two inputs with the same queue and
        key in one batch behave as if enqueued in order.

        The ``id`` is fresh, or chosen by the caller. A job whose ``id`` is
        already stored, in any state and any queue (until ``purge``,
        ``prune`` or a removal deletes it; a Redis Cluster checks its queue
        only), is not stored either, nor anything of it changed, and
        its key is not taken: its slot is the existing job, found in the same
        atomic step as the insert. The id is checked before the key. Since its
        id is the submitted one, callers tell it apart by its ``enqueued_at``,
        which the producer stamps on each call and every store returns as
        given: ``stored_as_given(submitted, returned)`` is the one test for
        both cases. Two inputs with the same id in one batch: the first is
        stored, the second's slot is the first (as stored, so it passes that
        test: a caller sending a repeated id tells the later ones apart
        itself, as ``Handler.enqueue_many`` does).

        The batch is one round trip, and atomic where the store allows it
        (memory, SQLite, PostgreSQL: all or nothing). A ``queued`` job wakes
        ``wait_for_work`` on its queue.

        Args:
            jobs: records to store.
            connection: a driver connection to write through, inside the
                caller's transaction (PostgreSQL). Backends without
                transactions raise ``ConfigurationError`` when it is given.
            fresh: the producer made every id of ``jobs`` just now with
                ``new_job_id`` (the caller chose none), so none can be stored
                already, but by a replay of this same call into the same
                queue. A store whose look for an id stored in another queue
                costs a read (Redis) may skip that look; the others ignore it.
        """
        ...

    async def get(self, job_id: str) -> JobRecord | None:
        """The job as stored now, or ``None`` if unknown, purged or expired."""
        ...

    async def cancel(self, job_id: str, *, by: str = "api") -> JobRecord | None:
        """Cancel a job; return it after the change, or ``None`` if unknown.

        ``by`` names who asked (``api``: a ``JobHandle``; ``operator``: an
        ``Admin`` call; ``cli``; ``dashboard``): the ``cancelled`` event of a
        job cancelled at once carries it (a running job's says ``worker``).

        - ``scheduled``, ``queued``, ``failed``: becomes ``cancelled`` at once
          (``finished_at`` set, waiters woken, key freed); it never runs.
        - ``active``: ``cancel_requested`` is set; the worker holding it learns
          so from its next ``heartbeat`` and settles it ``cancelled`` (unless it
          settles first with another outcome, which then stands).
        - terminal states: unchanged.
        """
        ...

    async def wait_finished(self, job_id: str) -> JobRecord | None:
        """Return the job once it is terminal (completed, dead or cancelled).

        Returns at once if it already is; ``None`` if the job is unknown. It
        subscribes before it reads, so a job that finishes at any moment
        during the call is never missed. It waits without a deadline: callers
        bound it with ``anyio.fail_after``. Cancelling the call leaves nothing
        behind.
        """
        ...

    # -- workers -----------------------------------------------------------

    async def claim(
        self, queues: Sequence[str], limit: int, *, worker: str, lease_for: float
    ) -> list[Lease]:
        """Lease up to ``limit`` ready jobs from ``queues``, in one round trip.

        Paused queues are skipped. Each claimed job becomes ``active`` with
        ``attempts`` incremented, ``started_at = now``, ``worker`` set,
        ``lease_expires_at = now + lease_for``, ``cancel_requested`` false, and
        a new lease token. Returns fewer (or no) leases when fewer are ready;
        never blocks waiting for work.
        """
        ...

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Block until a job may be ready in ``queues``, or ``timeout`` seconds pass.

        Returns early when a job is enqueued, handed back or retried into one
        of the queues, or a queue is resumed; and no later than the earliest
        known ``scheduled_at`` among them. Spurious returns are allowed; the
        caller claims and waits again. Does not raise on timeout.
        """
        ...

    async def heartbeat(self, leases: Sequence[Lease], *, lease_for: float) -> HeartbeatReply:
        """Extend every lease still held to ``now + lease_for``, in one round trip.

        A lease is held while its job is ``active`` with the same token. The
        reply lists the jobs not held any more, and the held jobs with
        ``cancel_requested`` set.
        """
        ...

    async def progress(self, lease: Lease, value: float, detail: bytes | None = None) -> bool:
        """Record a running job's progress (0.0 to 1.0); ``False`` if the lease is not held.

        ``detail`` is the JSON encoding of what the handler said with it
        (``JobRecord.progress_detail``), or ``None``, which clears the
        previous one. One round trip.
        """
        ...

    async def log(self, lease: Lease, lines: Sequence[LogLine]) -> bool:
        """Append lines to a running job's ``logs``; ``False`` if the lease is not held.

        Append and trim are one atomic step: the job keeps its last
        ``MAX_LOG_LINES`` lines and counts the ones dropped in
        ``logs_dropped``. Lines stay with the job across attempts and go with
        it (purge, prune, result expiry). One round trip.
        """
        ...

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Apply how attempts ended, in one round trip; return which were applied.

        An outcome is applied only if its lease is held (job ``active`` with
        the same token); otherwise it is ignored and reported ``False``. The
        lease is released either way. By ``outcome.state``:

        - ``completed``: store ``result``, set ``finished_at``; wake waiters.
          The key stays held for ``result_ttl``.
        - ``failed``: append ``error``; ``scheduled_at = retry_at``; the job is
          ready again at ``retry_at`` (waking ``wait_for_work`` then).
        - ``dead``: append ``error``, set ``finished_at``; wake waiters; free the key.
        - ``cancelled``: as ``dead``, but state ``cancelled``.
        - ``queued``: hand the job back untouched by this attempt (graceful
          shutdown): ``attempts`` decremented, ready at once, claimers woken.
        """
        ...

    async def recover(self) -> int:
        """Release every ``active`` job whose lease lapsed; return how many.

        A job whose cancellation was requested goes ``cancelled`` (the request
        is honoured, not lost with the worker); otherwise a job with attempts
        left (``attempts < max_attempts``) goes back to ``queued`` and one
        without goes ``dead``. In every case an error of kind ``lost`` is
        appended, and waiters are woken for the terminal ones. Safe to run
        from many workers at once: each lapsed lease is recovered once.
        """
        ...

    async def prune(self) -> int:
        """Delete what retention says is old; return how many jobs went.

        Removes completed jobs whose ``result_ttl`` has passed, the finished
        jobs older than the backend's ``Retention`` allows, and, for a state
        with a count cap (``Retention.max_dead``, ...), the oldest finished
        jobs of that state (by ``finished_at``, then id) beyond the cap in each
        queue, in bounded batches. Workers call it now and then, so it must be
        cheap when there is nothing to do and safe from many workers at once:
        two prunes at the same moment never delete more than the rules say.
        Backends that expire data by themselves (Redis TTLs) may return 0.
        """
        ...

    # -- operations ----------------------------------------------------------

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts by state for each queue (every known queue when ``None``), sorted by name.

        Every ``JobState`` appears in ``counts``, zero included. Counting is
        cheap (kept counters or an index), never a scan of job bodies.
        """
        ...

    async def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 100,
        after: str | None = None,
        newest: bool = False,
        meta: Mapping[str, str] | None = None,
    ) -> list[JobRecord]:
        """Jobs matching every filter given, oldest first (by id), at most ``limit``.

        ``meta``: a job matches when, for every pair, its metadata has the key
        with that value: the string itself, or a non-string value whose JSON
        text is that string. The store filters, so ``limit`` and ``after``
        page through matching jobs only.

        ``after`` is a job id: only jobs with a greater id are returned, so the
        last id of one page fetches the next. ``state`` is the stored state
        (a due ``scheduled`` job may show as ``scheduled`` or ``queued``).
        With ``newest``, the order is by id descending and ``after`` pages on
        downward: only jobs with a smaller id are returned.
        """
        ...

    async def retry_dead(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 1000,
    ) -> list[str]:
        """Put dead jobs back in their queue with fresh attempts; return their ids.

        With ``job_ids``, those of them that are dead; otherwise up to
        ``limit`` dead jobs matching ``queue``/``name``, oldest first. Each
        becomes ``queued`` with ``attempts = 0``, ``finished_at`` cleared,
        errors kept, its key held again (a job that cannot take its key back
        because another live job holds it stays dead), and wakes claimers.
        """
        ...

    async def purge(
        self,
        *,
        states: Sequence[JobState],
        older_than: float,
        queue: str | None = None,
        limit: int = 10_000,
    ) -> int:
        """Delete up to ``limit`` terminal jobs in ``states`` that finished before ``older_than``.

        ``older_than`` is an epoch time. Non-terminal states in ``states``
        raise ``ValueError``. Returns how many were deleted; their keys are
        freed.
        """
        ...

    async def remove(self, job_ids: Sequence[str]) -> list[JobState | None]:
        """Delete jobs in any state but ``active``; return, per id, the state each was in.

        A job in ``active`` is refused and left untouched (its slot says
        ``active``); a job in any other state is deleted, as ``purge`` deletes
        it: its id and key are free at once, and its ``wait_finished`` callers
        wake and find no job (``None``). ``None`` in a slot: no such job (an
        expired result counts as none). Each job is removed atomically; the
        batch is one round trip where the store allows it. An id given twice
        is looked at once, and both its slots say the same.
        """
        ...

    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue. A paused queue accepts jobs but ``claim`` skips it.

        Resuming wakes ``wait_for_work`` on the queue.
        """
        ...

    async def limit_states(self) -> list[LimitState]:
        """The flow-control counters this store keeps (``app.limit``), sorted by slot.

        One per limit, or per key value of a keyed limit, once a job with it
        was claimed; ``held`` counts its queued jobs set aside now. See
        ``asyncq.backends._limits`` for the rule every store applies.
        """
        ...

    async def circuit_states(self) -> list[CircuitState]:
        """The circuit breakers this store keeps (``app.circuit``), sorted by name.

        One per circuit once a job behind it was claimed or ended (per queue
        on Redis), or once an operator set it.
        """
        ...

    async def set_circuit(self, name: str, *, open_: bool) -> list[CircuitState]:
        """Open a circuit now (``open_``) or close it, as an operator; return it as set.

        Closing forgets the failures counted; the jobs that wait for the circuit
        run at the time they were scheduled for. On Redis, the circuit of that
        name in every queue is set.
        """
        ...

    # -- the worker registry -------------------------------------------------------

    async def put_worker(self, info: WorkerInfo) -> None:
        """Register or renew a worker (an upsert by ``info.id``).

        The store stamps ``last_seen`` with its own clock where it has one
        (otherwise it keeps the worker's), and deletes the entries whose
        ``WorkerInfo.expires_at`` has passed, so the registry never grows.
        """
        ...

    async def workers(self) -> list[WorkerInfo]:
        """The registered workers, by id: those running, and those stopped or
        lost whose entry has not expired (``WORKERS_KEPT_FOR``); expired
        entries are deleted."""
        ...


@runtime_checkable
class SettlesOnClaim(Protocol):
    """An optional capability: settle finished attempts and claim new ones in one call.

    A worker acknowledges what finished with the claim that refills the freed
    slots, so a busy worker pays one round trip (and, on SQLite, one commit)
    for both. Workers ask ``SETTLE_ON_CLAIM.of(backend)`` and fall back to
    ``settle`` then ``claim`` on backends that do not offer it.
    """

    async def settle_and_claim(
        self,
        outcomes: Sequence[Outcome],
        queues: Sequence[str],
        limit: int,
        *,
        worker: str,
        lease_for: float,
    ) -> tuple[list[bool], list[Lease]]:
        """``settle(outcomes)``, then ``claim(queues, limit, ...)``, in one round trip.

        The outcomes are applied first with ``settle``'s semantics, then the
        claim with ``claim``'s semantics, in one round trip; same results as
        the two calls in that order. So a job handed back or retried by one
        of the outcomes may be claimed again by the same call, and an
        outcome ``settle`` refuses (``ValueError``) is refused before
        anything is applied or claimed. Returns ``(applied, leases)``:
        ``applied`` as ``settle`` returns it, ``leases`` as ``claim`` does.
        """
        ...


@runtime_checkable
class EnqueuesWaited(Protocol):
    """An optional capability: enqueue jobs whose caller waits for them next.

    ``enqueue_and_wait`` stores its job with it when the backend offers it. A
    backend whose ``wait_finished`` would first read the job (to arrange to
    hear of its end) prepares that before the job is stored instead, so the
    wait that follows costs no read: on Redis, the notice channel is
    subscribed and the job stored marked as waited for.
    """

    async def enqueue_waited(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        """``enqueue(jobs)`` (without a ``connection``), for a caller about to wait for them.

        Same results as ``enqueue``. ``wait_finished`` on a returned job
        behaves as always, only faster when it comes soon after.
        """
        ...


@runtime_checkable
class Migrates(Protocol):
    """An optional capability: a versioned schema that operators upgrade (``asyncq migrate``)."""

    async def migrate(self) -> list[int]:
        """Apply the schema migrations not applied yet; return their versions, in order.

        Returns an empty list when the schema is up to date. Safe to run from
        many processes at once: each migration is applied once.
        """
        ...


@runtime_checkable
class SizesPool(Protocol):
    """An optional capability: size the client's connection pool for a worker."""

    def fit_concurrency(self, concurrency: int) -> None:
        """Make room for a worker running ``concurrency`` jobs at once.

        Jobs share the backend with the worker (a job that enqueues takes a
        connection), so a pool smaller than the worker's concurrency would
        make them queue for connections. A pool whose size the user chose is
        left as it is. Called once, when a worker starts.
        """
        ...


@runtime_checkable
class Drops(Protocol):
    """An optional capability: delete everything this instance stored (tests, teardown)."""

    async def drop(self) -> None:
        """Delete every job, queue and setting this instance stored, and nothing else.

        A Redis namespace, a PostgreSQL schema, the asyncq tables of a SQLite
        file, the memory of a memory backend. Works before ``open`` and after
        ``close``; a backend still open is unusable after it until reopened.
        """
        ...


@runtime_checkable
class PushesCancel(Protocol):
    """An optional capability: tell workers at once that a running job was cancelled.

    ``cancel`` of an active job, once ``cancel_requested`` is stored, pushes a
    notice of its id (pub/sub, NOTIFY, an in-process call). Notices are best
    effort: one lost (a reconnect) is made up for by the next ``heartbeat``,
    whose reply lists the job in ``cancel``.
    """

    async def watch_cancels(
        self,
        callback: Callable[[str], None],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``callback(job_id)`` for every cancel notice, until cancelled.

        ``task_status.started()`` is called once notices are listened for
        (``await task_group.start(backend.watch_cancels, callback)``).

        Notices come for every active job cancelled in the store, not only
        the caller's: the callback ignores the ids it does not hold. It may
        be called more than once for one job. A notice that cannot be
        listened for raises ``BackendError``; the caller retries.
        """
        ...


@runtime_checkable
class HasEvents(Protocol):
    """An optional capability: the job event stream (``asyncq._events``).

    Every store offers it. Each state change of a job writes one
    ``JobEvent`` in the same atomic step as the change: ``enqueue``
    (``enqueued``), ``claim`` (``started``), ``progress``, ``log`` (one
    per line), a debounced ``enqueue`` that replaced a pending job
    (``debounced``, its ``due`` the new run time), ``settle`` (``completed``,
    ``retrying``, ``dead``, ``cancelled``; a hand-back writes none), ``recover`` (``recovered``, or
    ``dead``/``cancelled`` by ``recovery``), ``cancel`` of a job not running
    (``cancelled`` by ``operator``), ``retry_dead`` (``retried``) and
    ``remove`` (``removed``). ``purge`` and ``prune`` write none.

    Event ids are the store's: they order its events (per queue at least;
    across queues as the store can), and a reader resumes after the last one
    it read. ``prune`` deletes events older than ``Retention.events`` and,
    per queue, beyond ``Retention.max_events``, in bounded batches.

    ``events`` is whether the store writes events (the ``events`` store
    option, ``App(events=False)``); set it before ``open``. Off, nothing is
    written and the reads find nothing new.
    """

    events: bool

    async def read_events(
        self, *, after: str | None, queues: Sequence[str] | None, limit: int
    ) -> EventPage:
        """Up to ``limit`` events with an id after ``after`` (from the oldest kept when
        ``None``), of ``queues`` (every queue when ``None``), in order.

        When the store pruned events after ``after`` that were never read,
        ``lost`` says how many and the page starts with the oldest event kept.

        Raises:
            ValueError: ``after`` is not an event id of this store.
        """
        ...

    async def wait_for_events(
        self, queues: Sequence[str] | None, after: str | None, timeout: float
    ) -> None:
        """Block until an event after ``after`` may be stored in ``queues``, or ``timeout`` passes.

        Woken by the store (a blocking stream read, NOTIFY, an in-process
        event), with a poll only where the store has no push across
        processes (SQLite). Spurious returns are allowed; no raise on timeout.
        """
        ...

    async def job_events(self, job_id: str) -> list[JobEvent]:
        """The events of one job still kept, in order (``[]`` for an unknown job)."""
        ...

    async def latest_event_id(self, queues: Sequence[str] | None) -> str:
        """An id to read after for the events from now on (a reader after it is told
        of events pruned since, which one from the start, ``after=None``, is not)."""
        ...


class Capability(Generic[_P]):
    """A typed key for an optional feature, answered per backend instance.

    A backend lists the capabilities it offers in ``Backend.capabilities``;
    callers ask the key, which types the answer::

        fused = SETTLE_ON_CLAIM.of(backend)  # SettlesOnClaim | None
        if fused is not None:
            applied, leases = await fused.settle_and_claim(...)

    Define a new one next to its protocol, as the ones below are:
    ``NAME: Capability[Proto] = Capability("name", Proto)``.

    Args:
        name: the feature's name, for messages and ``repr``.
        protocol: the ``runtime_checkable`` protocol a backend offering the
            feature implements.
    """

    __slots__ = ("name", "protocol")

    def __init__(self, name: str, protocol: type[Any]) -> None:
        self.name = name
        self.protocol = protocol

    def of(self, backend: Backend) -> _P | None:
        """``backend`` typed as the feature's protocol if it offers the feature, else ``None``.

        An instance offers it when it lists it in ``capabilities`` and has
        the protocol's methods (a subclass may take one away by setting it
        to ``None``).
        """
        if self in backend.capabilities and isinstance(backend, self.protocol):
            return cast("_P", backend)
        return None

    def __repr__(self) -> str:
        return f"Capability({self.name!r})"


#: Settle finished attempts and claim new ones in one round trip.
SETTLE_ON_CLAIM: Capability[SettlesOnClaim] = Capability("settle_on_claim", SettlesOnClaim)
#: Prepare, while enqueueing, for the caller's wait that follows.
ENQUEUE_WAITED: Capability[EnqueuesWaited] = Capability("enqueue_waited", EnqueuesWaited)
#: A versioned schema upgraded by ``migrate()``.
MIGRATE: Capability[Migrates] = Capability("migrate", Migrates)
#: ``drop()`` deletes everything the instance stored.
DROP: Capability[Drops] = Capability("drop", Drops)
#: ``fit_concurrency()`` sizes the connection pool for a worker.
SIZES_POOL: Capability[SizesPool] = Capability("sizes_pool", SizesPool)
#: ``enqueue(jobs, connection=...)`` writes inside the caller's transaction.
TRANSACTIONAL_ENQUEUE: Capability[Backend] = Capability("transactional_enqueue", Backend)
#: ``watch_cancels()`` hears of cancelled running jobs at once.
PUSHES_CANCEL: Capability[PushesCancel] = Capability("pushes_cancel", PushesCancel)
#: The job event stream: ``read_events``, ``wait_for_events``, ``job_events``.
EVENTS: Capability[HasEvents] = Capability("events", HasEvents)
