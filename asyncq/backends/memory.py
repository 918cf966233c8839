"""The in-process backend: the reference semantics of ``Backend``, and the test double.

Everything lives in this process's memory and is lost when it exits. Every
method runs without awaiting in the middle, so each is atomic with respect to
the event loop: the critical sections other stores get from Lua or SQL come
free here. Ready jobs sit in a heap per queue; delayed and retrying jobs in a
second heap per queue, promoted when due. Heap entries are invalidated
lazily: an entry is live only while its sequence number is the job's current one.

The rules the stores share (when a key is held, when a result expires, what
``prune`` deletes, the waiters and their wakeups) come from ``_common``.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import anyio
from msgspec.structs import replace

from .._annotations import decode_json, keep_lines, meta_matches
from .._events import (
    EventFields,
    EventKind,
    EventPage,
    JobEvent,
    debounced_event,
    dependency_event,
    enqueued_fields,
    event_fields,
    job_event,
    log_events,
    outcome_fields,
    recovered_event,
    started_fields,
)
from .._records import (
    TERMINAL_STATES,
    CircuitState,
    JobRecord,
    JobState,
    Lease,
    LimitState,
    LogLine,
    Outcome,
    QueueStats,
    WorkerInfo,
)
from ..exceptions import UnknownParent
from ._common import (
    RETENTION_OPTIONS,
    Waiters,
    as_enqueued,
    claimed,
    debounced,
    flag,
    holds_key,
    is_pending,
    lease_lapsed,
    linked,
    lost_error,
    no_transactions,
    over_cap,
    parse_url_options,
    pop_retention,
    prunable,
    released,
    result_expired,
)
from ._eventlog import EventLog
from ._limits import (
    HOLD_BUDGET,
    admit,
    circuit_admit,
    circuit_ended,
    circuit_hold,
    forced,
    idle,
)
from ._limits import released as slot_released
from ._verbs import ClaimQuery, DeadQuery, JobQuery, OperatorVerbs, PurgeQuery, SettlesAndClaims
from ._workers import CancelWatchers, WorkerTable
from .base import (
    DROP,
    ENQUEUE_WAITED,
    EVENTS,
    PUSHES_CANCEL,
    SETTLE_ON_CLAIM,
    Backend,
    Capability,
    Drops,
    HasEvents,
    HeartbeatReply,
    Retention,
    SettlesOnClaim,
    check_outcomes,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from anyio.abc import TaskStatus

__all__ = ["MemoryBackend"]

# The optional features this store can offer. An instance offers those its
# class implements: the test double's subclasses add one (or take one away,
# setting its method to None) and the instance says so.
_OPTIONAL: tuple[Capability[Any], ...] = (
    SETTLE_ON_CLAIM,
    ENQUEUE_WAITED,
    DROP,
    PUSHES_CANCEL,
    EVENTS,
)


class MemoryBackend(OperatorVerbs, SettlesAndClaims):
    """Jobs in this process's memory. ``memory://`` selects it.

    Args:
        clock: the time source (epoch seconds); tests may pass a fake one.
        retention: how long ``prune`` keeps finished jobs (and events).
        events: write the job event stream (``HasEvents``); on by default.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        retention: Retention | None = None,
        events: bool = True,
    ) -> None:
        self._clock = clock
        self.events = events
        self._log = EventLog()
        #: the events of the settle under way, which releases of children join
        self._batch: list[EventFields] | None = None
        self._retention = Retention() if retention is None else retention
        self._jobs: dict[str, JobRecord] = {}
        self._tokens: dict[str, str] = {}
        # Lease tokens need only be unique within this store: a counter is.
        self._issued = itertools.count(1)
        # Sequence numbers come from one counter, so a job stored again under a
        # removed job's id never matches a heap entry the removed one left.
        self._seq: dict[str, int] = {}
        self._seqs = itertools.count(1)
        self._ready: defaultdict[str, list[tuple[int, float, str, int]]] = defaultdict(list)
        self._delayed: defaultdict[str, list[tuple[float, str, int]]] = defaultdict(list)
        self._keys: dict[tuple[str, str], str] = {}
        self._counts: defaultdict[str, Counter[JobState]] = defaultdict(Counter)
        self._paused: set[str] = set()
        # flow control: a counter per limit slot, and per slot the jobs set aside on it
        self._limits: dict[str, LimitState] = {}
        self._aside: defaultdict[str, list[tuple[int, float, str, int]]] = defaultdict(list)
        self._circuits: dict[str, CircuitState] = {}
        self._waiters = Waiters()
        self._closed = False
        self._worker_table = WorkerTable()
        self._cancel_watchers = CancelWatchers()
        self._capabilities = frozenset(c for c in _OPTIONAL if isinstance(self, c.protocol))

    @classmethod
    def from_url(cls, url: str = "memory://", **options: Any) -> MemoryBackend:
        """``memory://``: a new, empty in-process store.

        Options (keywords, or in the query: ``memory://?retention_dead=3600``):
        ``retention`` and the ``Retention`` options, ``events`` (``false``:
        write no job events).

        Raises:
            ConfigurationError: an unknown or malformed option.
        """
        values, _ = parse_url_options(url, {**RETENTION_OPTIONS, "events": flag})
        values.update(options)
        retention = pop_retention(values)
        return cls(retention=retention, **values)

    @property
    def capabilities(self) -> frozenset[Capability[Any]]:
        return self._capabilities

    @property
    def url(self) -> str:
        return "memory://"

    async def open(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        self._waiters.wake_all()
        self._log.signal.fire()

    async def drop(self) -> None:
        """Forget every job and queue (tests). Waiters are woken and find their job gone."""
        self._jobs.clear()
        self._tokens.clear()
        self._seq.clear()
        self._ready.clear()
        self._delayed.clear()
        self._keys.clear()
        self._counts.clear()
        self._paused.clear()
        self._limits.clear()
        self._aside.clear()
        self._circuits.clear()
        self._worker_table.clear()
        self._log.clear()
        self._waiters.wake_all()

    # -- internal state transitions ----------------------------------------------

    def _store(self, job: JobRecord) -> None:
        """Replace a job's record, keeping counts and indexes in step."""
        old = self._jobs.get(job.id)
        if old is not None:
            self._counts[old.queue][old.state] -= 1
        self._counts[job.queue][job.state] += 1
        self._jobs[job.id] = job
        if job.state in (JobState.QUEUED, JobState.SCHEDULED, JobState.FAILED):
            seq = self._seq[job.id] = next(self._seqs)
            # A queued job its limits hold until a time waits with the scheduled ones.
            if job.state is JobState.QUEUED and job.held_until is None:
                heapq.heappush(
                    self._ready[job.queue], (-job.priority, job.scheduled_at, job.id, seq)
                )
            else:
                heapq.heappush(self._delayed[job.queue], (job.scheduled_at, job.id, seq))
        if job.state in TERMINAL_STATES:
            self._tokens.pop(job.id, None)
            # A completed job, or one with a key_ttl, keeps its key (see holds_key).
            if job.key is not None and job.state is not JobState.COMPLETED and job.key_ttl is None:
                self._release_key(job)
            self._waiters.wake_job(job.id)
            if job.children:
                self._release(job)

    def _delete(self, job: JobRecord) -> None:
        del self._jobs[job.id]
        self._counts[job.queue][job.state] -= 1
        self._seq.pop(job.id, None)
        self._tokens.pop(job.id, None)
        if job.key is not None:
            self._release_key(job)

    def _release_key(self, job: JobRecord) -> None:
        assert job.key is not None
        if self._keys.get((job.queue, job.key)) == job.id:
            del self._keys[(job.queue, job.key)]

    def _key_holder(self, queue: str, key: str, now: float) -> JobRecord | None:
        job_id = self._keys.get((queue, key))
        job = self._jobs.get(job_id) if job_id is not None else None
        if job is None or not holds_key(job, now):
            return None
        return job

    def _promote_due(self, queue: str, now: float) -> None:
        heap = self._delayed.get(queue)
        while heap and heap[0][0] <= now:
            _, job_id, seq = heapq.heappop(heap)
            job = self._jobs.get(job_id)
            # A job cancelled while it waited keeps its entry current (cancelling
            # does not bump the sequence), so the state decides, not only the seq.
            if job is None or self._seq.get(job_id) != seq:
                continue
            if job.state in (JobState.SCHEDULED, JobState.FAILED):
                self._store(replace(job, state=JobState.QUEUED))
            elif job.state is JobState.QUEUED and job.held_until is not None:
                self._store(replace(job, held_until=None, hold=None))

    def _held(self, job_id: str, token: str) -> JobRecord | None:
        job = self._jobs.get(job_id)
        if job is None or job.state is not JobState.ACTIVE or self._tokens.get(job_id) != token:
            return None
        return job

    # -- producers ---------------------------------------------------------------

    async def enqueue(
        self, jobs: Sequence[JobRecord], *, connection: object | None = None, fresh: bool = False
    ) -> list[JobRecord]:
        if connection is not None:
            raise no_transactions("memory")
        now = self._clock()
        if any(job.parents for job in jobs):
            self._check_parents(jobs)
        stored: list[JobRecord] = []
        # The call's events, in order, handed to the log at the end (None: events off).
        events: list[EventFields] | None = [] if self.events else None
        for job in jobs:
            existing = self._jobs.get(job.id)
            if existing is not None:  # a caller-chosen id already stored
                stored.append(existing)
                continue
            if job.key is not None:
                holder = self._key_holder(job.queue, job.key, now)
                if holder is not None and job.debounce is not None and is_pending(holder):
                    new = debounced(holder, job, now)
                    self._store(new)
                    if events is not None:
                        events.append(event_fields(debounced_event(new, now)))
                    stored.append(new)
                    continue
                if holder is not None and job.debounce is None:
                    stored.append(holder)
                    continue
                # Free, or held by a job a debounced enqueue does not replace: taken over.
                self._keys[(job.queue, job.key)] = job.id
            new = as_enqueued(job, now)
            if new.parents:
                new = self._link(new, now)
            if events is not None:
                events.append(enqueued_fields(new, now))
                if new.parents and new.state not in (JobState.QUEUED, JobState.SCHEDULED):
                    events.append(event_fields(dependency_event(new, now)))
            self._store(new)
            stored.append(new)
        if events:
            self._log.extend(events, now)
        # A scheduled job wakes its queue's waiters too: they wait until the
        # earliest due time they know of, which may now be sooner.
        if len(stored) == 1:
            self._waiters.wake_queue(stored[0].queue)
        else:
            self._waiters.wake_queues({job.queue for job in stored})
        return stored

    def _check_parents(self, jobs: Sequence[JobRecord]) -> None:
        """Refuse the batch before storing any of it if a parent is missing (``linked``)."""
        queues: dict[str, str] = {}
        for job in jobs:
            for parent_id in job.parents:
                parent = self._jobs.get(parent_id)
                queue = queues.get(parent_id, None if parent is None else parent.queue)
                if queue != job.queue and job.id not in self._jobs:
                    raise UnknownParent(parent_id, job.id, job.queue)
            queues.setdefault(job.id, job.queue)

    def _link(self, child: JobRecord, now: float) -> JobRecord:
        """``child`` as stored among its parents (``_common.linked``); they learn of it."""
        parents = {parent_id: self._jobs.get(parent_id) for parent_id in child.parents}
        new = linked(child, parents, now)
        for parent in parents.values():
            assert parent is not None  # linked() checked
            self._jobs[parent.id] = replace(parent, children=(*parent.children, child.id))
        return new

    def _release(self, parent: JobRecord) -> None:
        """Apply ``_common.released`` to the waiting children of ``parent``, finished or removed.

        A child that ends dead or cancelled goes through ``_store``, which releases its own
        children in turn.
        """
        now = self._clock()
        for child_id in parent.children:
            child = self._jobs.get(child_id)
            if child is None or child.state is not JobState.WAITING:
                continue
            new = released(child, {p: self._jobs.get(p) for p in child.parents}, now)
            if new is None:
                continue
            if self.events:  # before its own children's, which _store releases
                fields = event_fields(dependency_event(new, now))
                if self._batch is not None:  # after the parent's, in its batch
                    self._batch.append(fields)
                else:
                    self._log.extend([fields], now)
            self._store(new)
            self._waiters.wake_queue(new.queue)

    async def get(self, job_id: str) -> JobRecord | None:
        job = self._jobs.get(job_id)
        if job is not None and result_expired(job, self._clock()):
            if not self._children_wait(job):  # kept for its children, like prune keeps it
                self._delete(job)
            return None
        return job

    async def cancel(self, job_id: str, *, by: str = "api") -> JobRecord | None:
        job = await self.get(job_id)
        if job is None or job.state in TERMINAL_STATES:
            return job
        if job.state is JobState.ACTIVE:
            job = replace(job, cancel_requested=True)
        else:
            now = self._clock()
            # a hold ends with the job (as every store reads it: queued jobs only)
            job = replace(
                job, state=JobState.CANCELLED, finished_at=now, held_until=None, hold=None
            )
            if self.events:
                self._log.add_one(job_event(job, EventKind.CANCELLED, now, by=by))
        self._store(job)
        if job.state is JobState.ACTIVE and self._cancel_watchers:
            self._cancel_watchers.notify([job_id])
        return job

    async def wait_finished(self, job_id: str) -> JobRecord | None:
        while True:
            job = await self.get(job_id)
            if job is None or job.state in TERMINAL_STATES or self._closed:
                return job
            # Nothing awaited since the read: the job cannot finish unseen.
            with self._waiters.job_waiter(job_id) as finished:
                await finished.wait()

    # -- workers -----------------------------------------------------------------

    async def claim(
        self, queues: Sequence[str], limit: int, *, worker: str, lease_for: float
    ) -> list[Lease]:
        now = self._clock()
        expires = now + lease_for
        leases: list[Lease] = []
        held = 0
        jobs, seqs, tokens = self._jobs, self._seq, self._tokens
        events: list[EventFields] | None = [] if self.events else None
        for queue in queues:
            if queue in self._paused:
                continue
            self._promote_due(queue, now)
            heap = self._ready.get(queue)
            if not heap:
                continue
            counts = self._counts[queue]
            while heap and len(leases) < limit and held < HOLD_BUDGET:
                _, _, job_id, seq = heapq.heappop(heap)
                job = jobs.get(job_id)
                if job is None or seqs.get(job_id) != seq or job.state is not JobState.QUEUED:
                    continue
                if job.limits or job.circuit is not None:
                    job = self._admit(job, seq, now)
                    if job is None:
                        held += 1
                        continue
                token = f"{next(self._issued):x}"
                job = claimed(job, now, worker, expires)
                # What _store does for queued -> active, inline: the hot path.
                counts[JobState.QUEUED] -= 1
                counts[JobState.ACTIVE] += 1
                jobs[job_id] = job
                tokens[job_id] = token
                leases.append(Lease(job=job, token=token, expires_at=expires))
                if events is not None:
                    events.append(started_fields(job, now))
            if len(leases) >= limit:
                break
        if events:
            self._log.extend(events, now)
        return leases

    def _admit(self, job: JobRecord, seq: int, now: float) -> JobRecord | None:
        """The job, ready to claim, if its limits let it start now; else hold it (``_limits``)."""
        if job.circuit is not None:
            name = job.circuit.name
            circuit, until = circuit_admit(self._circuits.get(name), job.circuit, job.id, now)
            self._circuits[name] = circuit
            if until is not None:
                self._hold(job, until, circuit_hold(name))
                return None
            if not job.limits:
                return job
        verdict = admit(job.limits, self._limits, now, paid=job.rate_paid)
        self._limits.update(verdict.states)
        if verdict.start:
            return replace(job, held_by=None, rate_paid=False)
        if verdict.held_by is not None:
            self._jobs[job.id] = replace(job, held_by=verdict.held_by)
            heapq.heappush(
                self._aside[verdict.held_by], (-job.priority, job.scheduled_at, job.id, seq)
            )
            # Its other slots may have room it was released to use: pass it on.
            for gate in job.limits:
                state = self._limits.get(gate.slot)
                if (
                    gate.slot != verdict.held_by
                    and state is not None
                    and state.concurrency is not None
                    and state.running < state.concurrency
                ):
                    self._let_out(gate.slot)
        else:
            assert verdict.until is not None
            self._hold(replace(job, rate_paid=True), verdict.until, verdict.hold)
        return None

    def _hold(self, job: JobRecord, until: float, hold: str | None) -> None:
        """Keep ``job`` queued but out of the claim order until ``until`` (``_limits``)."""
        self._store(replace(job, scheduled_at=until, held_until=until, hold=hold))

    def _let_out(self, slot: str) -> None:
        """Put the first live job set aside on ``slot`` back in the claim order."""
        heap = self._aside.get(slot)
        while heap:
            _, _, job_id, seq = heapq.heappop(heap)
            job = self._jobs.get(job_id)
            if (
                job is not None
                and self._seq.get(job_id) == seq
                and job.state is JobState.QUEUED
                and job.held_by == slot
            ):
                self._store(replace(job, held_by=None))
                self._waiters.wake_queue(job.queue)
                return

    def _ended(self, job: JobRecord, outcome: JobState, kind: str | None) -> None:
        """A job with limits or a circuit left ``active`` as ``outcome``."""
        if job.circuit is not None:
            name = job.circuit.name
            self._circuits[name] = circuit_ended(
                self._circuits.get(name), job.circuit, job.id, outcome, kind, self._clock()
            )
        self._free_slots(job)

    def _free_slots(self, job: JobRecord) -> None:
        """A limited job left ``active``: free its slots and let one job out of each."""
        for gate in job.limits:
            state = self._limits.get(gate.slot)
            if gate.concurrency is not None and state is not None:
                self._limits[gate.slot] = slot_released(state)
                self._let_out(gate.slot)

    async def limit_states(self) -> list[LimitState]:
        held = {
            slot: sum(
                1
                for _, _, job_id, seq in heap
                if (job := self._jobs.get(job_id)) is not None
                and self._seq.get(job_id) == seq
                and job.state is JobState.QUEUED
                and job.held_by == slot
            )
            for slot, heap in self._aside.items()
        }
        return [
            replace(state, held=held.get(slot, 0)) for slot, state in sorted(self._limits.items())
        ]

    async def circuit_states(self) -> list[CircuitState]:
        return [state for _, state in sorted(self._circuits.items())]

    async def set_circuit(self, name: str, *, open_: bool) -> list[CircuitState]:
        state = self._circuits[name] = forced(
            self._circuits.get(name), name, open_=open_, now=self._clock()
        )
        return [state]

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        now = self._clock()
        deadline = now + timeout
        for queue in queues:
            if queue in self._paused:
                continue
            if self._ready_now(queue):
                return
            heap = self._delayed.get(queue)
            if heap:
                deadline = min(deadline, heap[0][0])
        with (
            self._waiters.work_waiter(queues) as work,
            anyio.move_on_after(max(0.0, deadline - now)),
        ):
            await work.wait()

    def _ready_now(self, queue: str) -> bool:
        heap = self._ready.get(queue)
        while heap:
            _, _, job_id, seq = heap[0]
            job = self._jobs.get(job_id)
            if job is not None and self._seq.get(job_id) == seq and job.state is JobState.QUEUED:
                return True
            heapq.heappop(heap)
        return False

    async def heartbeat(self, leases: Sequence[Lease], *, lease_for: float) -> HeartbeatReply:
        now = self._clock()
        lost: set[str] = set()
        cancel: set[str] = set()
        for lease in leases:
            job = self._held(lease.job.id, lease.token)
            if job is None:
                lost.add(lease.job.id)
                continue
            self._jobs[job.id] = replace(job, lease_expires_at=now + lease_for)
            if job.cancel_requested:
                cancel.add(job.id)
        return HeartbeatReply(lost=frozenset(lost), cancel=frozenset(cancel))

    async def progress(self, lease: Lease, value: float, detail: bytes | None = None) -> bool:
        job = self._held(lease.job.id, lease.token)
        if job is None:
            return False
        shown = None if detail is None else decode_json(detail)
        self._jobs[job.id] = replace(job, progress=value, progress_detail=shown)
        if self.events:
            fields = {"attempt": job.attempts, "progress": value, "detail": shown}
            self._log.add_one(job_event(job, EventKind.PROGRESS, self._clock(), **fields))
        return True

    async def log(self, lease: Lease, lines: Sequence[LogLine]) -> bool:
        job = self._held(lease.job.id, lease.token)
        if job is None:
            return False
        if lines:
            kept, dropped = keep_lines(job.logs, lines, job.logs_dropped)
            self._jobs[job.id] = replace(job, logs=kept, logs_dropped=dropped)
            if self.events:
                self._log.add(log_events(job, lines))
        return True

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        check_outcomes(outcomes)
        return self._apply(outcomes)

    def _apply(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """``settle`` of outcomes already checked (``settle_and_claim`` checked them)."""
        now = self._clock()
        events: list[EventFields] | None = [] if self.events else None
        self._batch = events
        try:
            return self._apply_each(outcomes, now, events)
        finally:
            self._batch = None

    def _apply_each(
        self, outcomes: Sequence[Outcome], now: float, events: list[EventFields] | None
    ) -> list[bool]:
        applied: list[bool] = []
        for outcome in outcomes:
            job = self._held(outcome.job_id, outcome.token)
            if job is None:
                applied.append(False)
                continue
            del self._tokens[job.id]
            state = outcome.state
            if job.limits or job.circuit is not None:
                self._ended(job, state, None if outcome.error is None else outcome.error.kind)
            if events is not None and (fields := outcome_fields(job, outcome, now)) is not None:
                events.append(fields)
            if state is JobState.COMPLETED:
                new = replace(
                    job,
                    state=state,
                    result=outcome.result,
                    finished_at=now,
                    lease_expires_at=None,
                    worker=None,
                )
                # What _store does for active -> completed, inline: the hot path
                # (the job keeps its key and enters no heap).
                counts = self._counts[job.queue]
                counts[JobState.ACTIVE] -= 1
                counts[JobState.COMPLETED] += 1
                self._jobs[job.id] = new
                self._waiters.wake_job(job.id)
                if new.children:
                    self._release(new)
                applied.append(True)
                continue
            errors = job.errors if outcome.error is None else (*job.errors, outcome.error)
            released = replace(job, lease_expires_at=None, worker=None)
            if state is JobState.FAILED:
                retry_at = outcome.retry_at if outcome.retry_at is not None else now
                new = replace(released, state=state, errors=errors, scheduled_at=retry_at)
                self._waiters.wake_queue(job.queue)
            elif state in (JobState.DEAD, JobState.CANCELLED):
                new = replace(released, state=state, errors=errors, finished_at=now)
            else:  # QUEUED: handed back (check_outcomes refused every other state)
                new = replace(released, state=state, attempts=max(0, job.attempts - 1))
                self._waiters.wake_queue(job.queue)
            self._store(new)
            applied.append(True)
        if events:
            self._log.extend(events, now)
        return applied

    async def _settle_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimQuery
    ) -> tuple[list[bool], list[Lease]]:
        queues, limit, worker, lease_for = claim
        # Neither step awaits anything, so together they are one critical section.
        applied = self._apply(outcomes)
        return applied, await self.claim(queues, limit, worker=worker, lease_for=lease_for)

    async def recover(self) -> int:
        now = self._clock()
        lapsed = [job for job in self._jobs.values() if lease_lapsed(job, now)]
        for job in lapsed:
            self._tokens.pop(job.id, None)
            lost = lost_error(job, now)
            common = {"errors": (*job.errors, lost), "lease_expires_at": None, "worker": None}
            if job.cancel_requested:
                new = replace(job, state=JobState.CANCELLED, finished_at=now, **common)
            elif job.attempts < job.max_attempts:
                new = replace(job, state=JobState.QUEUED, **common)
            else:
                new = replace(job, state=JobState.DEAD, finished_at=now, **common)
            self._store(new)
            if job.limits or job.circuit is not None:
                self._ended(job, new.state, lost.kind)
            if self.events:
                self._log.add_one(recovered_event(job, new.state, lost, now))
        self._waiters.wake_queues({job.queue for job in lapsed})
        return len(lapsed)

    async def prune(self) -> int:
        now = self._clock()
        doomed = [
            job
            for job in self._jobs.values()
            if prunable(job, now, self._retention) and not self._children_wait(job)
        ]
        for job in doomed:
            self._delete(job)
        capped = [
            job
            for job in over_cap(self._jobs.values(), self._retention)
            if not self._children_wait(job)
        ]
        for job in capped:
            self._delete(job)
        self._log.prune(now, self._retention)
        for slot, state in list(self._limits.items()):
            if idle(state, now) and not self._set_aside(slot):
                del self._limits[slot]
                self._aside.pop(slot, None)
        return len(doomed) + len(capped)

    def _set_aside(self, slot: str) -> bool:
        """Whether a queued job is set aside on ``slot`` (its heap may hold stale entries)."""
        return any(
            (job := self._jobs.get(job_id)) is not None
            and self._seq.get(job_id) == seq
            and job.state is JobState.QUEUED
            and job.held_by == slot
            for _, _, job_id, seq in self._aside.get(slot, ())
        )

    def _children_wait(self, job: JobRecord) -> bool:
        """Whether a child of ``job`` still waits: ``prune`` keeps a parent until none does."""
        jobs = self._jobs
        return any(
            (child := jobs.get(c)) is not None and child.state is JobState.WAITING
            for c in job.children
        )

    # -- operations --------------------------------------------------------------

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        now = self._clock()
        names = sorted(self._counts) if queues is None else sorted(set(queues))
        out = []
        for queue in names:
            self._promote_due(queue, now)
            counts = self._counts.get(queue, Counter())
            oldest = None
            if self._ready_now(queue):
                oldest = min(
                    job.scheduled_at
                    for job in self._jobs.values()
                    if job.queue == queue
                    and job.state is JobState.QUEUED
                    and job.held_by is None
                    and job.held_until is None
                )
            out.append(
                QueueStats(
                    queue=queue,
                    counts={state: counts.get(state, 0) for state in JobState},
                    paused=queue in self._paused,
                    oldest_ready_at=oldest,
                )
            )
        return out

    async def _list_jobs(self, query: JobQuery) -> list[JobRecord]:
        state, queue, name, limit, after, newest, meta = query
        now = self._clock()
        matches = sorted(
            (
                job
                for job in self._jobs.values()
                if (state is None or job.state is state)
                and (queue is None or job.queue == queue)
                and (name is None or job.name == name)
                and (after is None or (job.id < after if newest else job.id > after))
                and not result_expired(job, now)
                and (meta is None or meta_matches(job.meta, meta))
            ),
            key=lambda job: job.id,
            reverse=newest,
        )
        return matches[:limit]

    async def _remove(self, job_ids: tuple[str, ...]) -> list[JobState | None]:
        found: list[JobState | None] = []
        for job_id in job_ids:
            job = await self.get(job_id)
            if job is not None and job.state is not JobState.ACTIVE:
                self._delete(job)
                self._waiters.wake_job(job_id)
                if job.children:
                    self._release(job)
                if self.events:
                    self._log.add_one(
                        job_event(job, EventKind.REMOVED, self._clock(), by="operator")
                    )
            found.append(None if job is None else job.state)
        return found

    async def _retry_dead(self, query: DeadQuery) -> list[str]:
        if query.job_ids is None:
            candidates = await self._list_jobs(
                JobQuery(JobState.DEAD, query.queue, query.name, query.limit, None)
            )
        else:
            candidates = [job for i in query.job_ids if (job := self._jobs.get(i)) is not None]
        now = self._clock()
        retried = []
        for job in candidates:
            if job.state is not JobState.DEAD:
                continue
            if job.key is not None:
                holder = self._key_holder(job.queue, job.key, now)
                if holder is not None and holder.id != job.id:
                    continue
                self._keys[(job.queue, job.key)] = job.id
            self._store(
                replace(job, state=JobState.QUEUED, attempts=0, finished_at=None, scheduled_at=now)
            )
            if self.events:
                self._log.add_one(job_event(job, EventKind.RETRIED, now, by="operator"))
            retried.append(job.id)
            self._waiters.wake_queue(job.queue)
        return retried

    async def _purge(self, query: PurgeQuery) -> int:
        wanted, older_than, queue, limit = query
        doomed = [
            job
            for job in self._jobs.values()
            if job.state in wanted
            and (queue is None or job.queue == queue)
            and (job.finished_at if job.finished_at is not None else math.inf) < older_than
        ]
        doomed.sort(key=lambda job: job.id)
        for job in doomed[:limit]:
            self._delete(job)
        return min(len(doomed), limit)

    async def set_paused(self, queue: str, paused: bool) -> None:
        if paused:
            self._paused.add(queue)
        else:
            self._paused.discard(queue)
            self._waiters.wake_queue(queue)
        self._counts[queue]  # a paused queue with no jobs yet still shows in stats

    # -- the worker registry and cancel notices ----------------------------------

    async def put_worker(self, info: WorkerInfo) -> None:
        self._worker_table.put(info, self._clock())

    async def workers(self) -> list[WorkerInfo]:
        return self._worker_table.listed(self._clock())

    async def watch_cancels(
        self,
        callback: Callable[[str], None],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        await self._cancel_watchers.watch(callback, task_status)

    # -- the event stream ----------------------------------------------------------

    async def read_events(
        self, *, after: str | None, queues: Sequence[str] | None, limit: int
    ) -> EventPage:
        return self._log.read(after, queues, limit)

    async def wait_for_events(
        self, queues: Sequence[str] | None, after: str | None, timeout: float
    ) -> None:
        signal = self._log.signal.waiter()
        if self._closed or self._log.has_after(after, queues):
            return
        with anyio.move_on_after(timeout):
            await signal.wait()

    async def job_events(self, job_id: str) -> list[JobEvent]:
        return self._log.of_job(job_id)

    async def latest_event_id(self, queues: Sequence[str] | None) -> str:
        return str(self._log.last)


if TYPE_CHECKING:
    _check: type[Backend] = MemoryBackend
    _fused: type[SettlesOnClaim] = MemoryBackend
    _drops: type[Drops] = MemoryBackend
    _events: type[HasEvents] = MemoryBackend
