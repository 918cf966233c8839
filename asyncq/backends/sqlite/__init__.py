"""The SQLite backend: the embedded default, one file shared by the processes of one host.

``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
``sqlite:///:memory:`` selects it. It needs nothing but the standard library.

Threads. ``sqlite3`` blocks, so the backend never calls it on the event loop:
each backend instance owns one connection, and every operation runs as one
transaction on a worker thread (``anyio.to_thread``) behind a capacity limiter
of one, so the connection is used by one thread at a time and operations of
an instance run in order. A cancelled caller first waits for a transaction
already running to end (at most ``busy_timeout`` on a locked database); a
cancelled ``claim`` then hands its fresh leases straight back instead of
stranding them until they lapse.

Processes. Any number of processes may open the same file (on a local disk:
WAL needs shared memory, so not on NFS). Every write is one ``BEGIN
IMMEDIATE`` transaction, which takes the database's single write lock before
it reads anything, so two processes can never both see a job as ``queued``
and claim it. A writer that finds the lock taken waits ``busy_timeout`` inside
SQLite, then the backend retries with growing, jittered pauses; only a lock
held for more than ``lock_timeout`` in all surfaces, as ``BackendUnavailable``.

Durability. The database runs in WAL mode with ``synchronous=NORMAL``: a
committed job survives the crash or kill of any process, but the last
transactions before a power cut or an operating-system crash may be rolled
back (the file stays consistent). ``synchronous=FULL`` would fsync every
commit and cost most of the throughput; a queue whose producers cannot retry
after a power loss should use PostgreSQL.

Wakeups. Within a process they are pushed, through the shared ``Waiters``:
``settle``, ``cancel`` and ``recover`` wake the ``wait_finished`` calls of this
backend instance on the jobs they finish; resuming a queue wakes its
``wait_for_work`` calls, and ``enqueue``, ``settle``, ``recover`` and
``retry_dead`` wake every one (which queues they touched is not read back, so
a waiter on another queue looks again, as after a change by another process).
SQLite has no way to notify another process, so both also look at the database every
``poll_interval`` seconds: ``wait_for_work`` reads ``PRAGMA data_version``
(which changes only when another connection commits) and queries the queues
only when it moved; ``wait_finished`` reads its job's row by primary key. The
trade-off: work or a result from another process is seen after
``poll_interval / 2`` on average and ``poll_interval`` at worst (0.1 s by
default), and every waiting worker and ``enqueue_and_wait`` costs
``1 / poll_interval`` small reads a second. Raise ``poll_interval`` for many
idle waiters; lower it for latency.

Retention. ``prune()`` deletes what the backend's ``Retention`` says is old
(the same settings and defaults as every store: completed jobs without a
``result_ttl`` after a day, dead and cancelled jobs after 14 days; a completed
job with a ``result_ttl`` once it has passed; and, for a state with a count cap, the
oldest jobs of each queue beyond it), in transactions of at most 500
deletions. SQLite lets one writer in at a time, so prunes started at the same
moment by several workers run one after the other, each deleting what is left.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import anyio
import anyio.lowlevel
from anyio import to_thread

from ..._records import (
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
from ...exceptions import BackendError, ConfigurationError
from .._common import (
    RETENTION_OPTIONS,
    Converter,
    Waiters,
    flag,
    mask_url,
    no_transactions,
    parse_url_options,
    pop_retention,
    seconds,
)
from .._eventlog import EventSignal
from .._verbs import ClaimQuery, DeadQuery, JobQuery, OperatorVerbs, PurgeQuery, SettlesAndClaims
from .._workers import CancelWatchers
from ..base import (
    DROP,
    EVENTS,
    PUSHES_CANCEL,
    SETTLE_ON_CLAIM,
    Backend,
    Capability,
    EventPage,
    HasEvents,
    HeartbeatReply,
    JobEvent,
    Retention,
    SettlesOnClaim,
    check_outcomes,
)
from . import admin_sql, events, limits, schema, sql, workers
from .connection import _Database
from .schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from anyio.abc import TaskStatus

__all__ = ["SCHEMA_VERSION", "SQLiteBackend"]

_PRUNE_BATCH = 500
_URL_OPTIONS: dict[str, Converter] = {
    "poll_interval": seconds,
    "busy_timeout": seconds,
    "lock_timeout": seconds,
    "events": flag,
    **RETENTION_OPTIONS,
}


class SQLiteBackend(_Database, OperatorVerbs, SettlesAndClaims):
    """Jobs in one SQLite database file. ``sqlite:///path.db`` selects it.

    Args:
        path: the database file, created if missing (its directory must
            exist), or ``":memory:"`` for a private in-memory database.
        poll_interval: seconds between looks at the database for work or
            results coming from other processes.
        busy_timeout: seconds SQLite waits for another connection's lock
            before the backend backs off and tries again.
        lock_timeout: seconds an operation keeps trying a locked database,
            in all, before it raises ``BackendUnavailable``.
        retention: how long ``prune`` keeps finished jobs (``Retention()``'s
            defaults when ``None``).
        clock: the time source (epoch seconds); tests may pass a fake one.
        events: write the job event stream (``HasEvents``); on by default.
        **retention_options: ``retention_completed``, ``retention_dead``,
            ``retention_cancelled``: seconds (or ``None``, for ever); and
            ``retention_max_completed``, ``retention_max_dead``,
            ``retention_max_cancelled``: jobs kept per queue at most (or
            ``None``, no cap); ``retention_events``, ``retention_max_events``;
            over ``retention``.

    Raises:
        ConfigurationError: a missing path, or a setting out of range.
        TypeError: a keyword that is not an option.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        poll_interval: float = 0.1,
        busy_timeout: float = 5.0,
        lock_timeout: float = 30.0,
        retention: Retention | None = None,
        clock: Callable[[], float] = time.time,
        events: bool = True,
        **retention_options: float | int | None,
    ) -> None:
        self.events = events
        self._signal = EventSignal()
        self._path = os.fspath(path)
        if not self._path:
            msg = "SQLiteBackend needs a database path (or ':memory:')"
            raise ConfigurationError(msg)
        if poll_interval <= 0 or busy_timeout < 0 or lock_timeout < 0:
            msg = (
                "SQLiteBackend: poll_interval must be > 0 and busy_timeout, lock_timeout >= 0"
                f" (got {poll_interval}, {busy_timeout}, {lock_timeout})"
            )
            raise ConfigurationError(msg)
        self._poll_interval = poll_interval
        self._busy_timeout = busy_timeout
        self._lock_timeout = lock_timeout
        options: dict[str, Any] = {"retention": retention, **retention_options}
        self._retention = pop_retention(options)
        if options:
            msg = f"SQLiteBackend() got unexpected keyword arguments: {', '.join(options)}"
            raise TypeError(msg)
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        # Operations take turns on the connection under the lock, which a
        # cancelled caller may leave while it waits; the limiter gives the
        # thread call a token of its own, apart from anyio's shared default.
        self._turn = anyio.Lock()
        self._limiter = anyio.CapacityLimiter(1)
        self._waiters = Waiters()
        self._cancel_watchers = CancelWatchers()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteBackend:
        """Make a backend from ``sqlite:///relative.db``, ``sqlite:////abs.db`` or ``sqlite:///:memory:``.

        Options may also be given in the query string
        (``sqlite:///jobs.db?poll_interval=0.5&retention_dead=none``):
        ``poll_interval``, ``busy_timeout``, ``lock_timeout``, ``events`` and
        the ``Retention`` options; keyword arguments (``retention=`` too) win.

        Raises:
            ConfigurationError: not a SQLite URL, or an unknown or malformed option.
        """
        scheme, sep, rest = url.partition("://")
        path = rest.partition("?")[0]
        if scheme.lower() != "sqlite" or not sep or not path.startswith("/") or len(path) < 2:
            msg = (
                f"bad SQLite URL {mask_url(url)!r}: use sqlite:///relative/path.db,"
                " sqlite:////absolute/path.db or sqlite:///:memory:"
            )
            raise ConfigurationError(msg)
        values, _ = parse_url_options(url, _URL_OPTIONS)
        values.update(options)
        return cls(unquote(path[1:]), **values)

    @property
    def url(self) -> str:
        return f"sqlite:///{quote(self._path, safe='/:')}"

    @property
    def path(self) -> str:
        """The database file as given (or ``":memory:"``)."""
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.url!r})"

    # -- connection and transactions ---------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._closed = False
        self._conn = await self._in_thread(self._connect)
        try:
            found = await self._run(False, schema.schema_version)
            if found > SCHEMA_VERSION:
                raise self._too_new(found)
            if found < SCHEMA_VERSION:
                await self._run(True, schema.migrate)
        except schema.SchemaTooNew as exc:
            await self.close()
            raise self._too_new(exc.found) from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._closed = True
        self._waiters.wake_all()
        self._signal.fire()
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                async with self._turn:  # after the transaction in flight
                    await to_thread.run_sync(conn.close, limiter=self._limiter)

    def _too_new(self, found: int) -> ConfigurationError:
        msg = (
            f"the SQLite database {self._path!r} has asyncq schema version {found}, but this"
            f" asyncq knows versions up to {SCHEMA_VERSION}: it was migrated by a newer asyncq."
            " Upgrade asyncq here, or point this app at another database file."
        )
        return ConfigurationError(msg)

    # -- wakeups -------------------------------------------------------------------

    def _wake_finished(self, job_ids: Iterable[str]) -> None:
        # A settling worker process seldom has a waiter: skip the loop over the batch then.
        if self._waiters:
            self._waiters.wake_jobs(job_ids)

    # -- producers -------------------------------------------------------------------

    async def enqueue(
        self, jobs: Sequence[JobRecord], *, connection: object | None = None, fresh: bool = False
    ) -> list[JobRecord]:
        if connection is not None:
            raise no_transactions("SQLite")
        if not jobs:
            return []
        stored = await self._run(True, sql.enqueue, list(jobs), events=self.events)
        self._waiters.wake_work()
        self._signal.fire()
        return stored

    async def get(self, job_id: str) -> JobRecord | None:
        return await self._run(False, sql.get, job_id)

    async def cancel(self, job_id: str, *, by: str = "api") -> JobRecord | None:
        job = await self._run(True, sql.cancel, job_id, by, events=self.events)
        self._signal.fire()
        if job is not None and job.state is JobState.CANCELLED:
            self._waiters.wake_job(job_id)
        elif job is not None and job.state is JobState.ACTIVE and self._cancel_watchers:
            self._cancel_watchers.notify([job_id])
        return job

    async def wait_finished(self, job_id: str) -> JobRecord | None:
        job: JobRecord | None = None
        while True:
            # Register before reading, so an in-process finish cannot slip between.
            with self._waiters.job_waiter(job_id) as finished:
                if self._closed:
                    return job
                try:
                    job = await self.get(job_id)
                except BackendError:
                    if self._conn is None:  # closed while reading
                        return job
                    raise
                if job is None or job.state in TERMINAL_STATES:
                    return job
                with anyio.move_on_after(self._poll_interval):
                    await finished.wait()

    # -- workers ---------------------------------------------------------------------

    async def claim(
        self, queues: Sequence[str], limit: int, *, worker: str, lease_for: float
    ) -> list[Lease]:
        if limit <= 0 or not queues:
            return []
        leases, aside = await self._run(
            True, sql.claim, list(queues), limit, worker, lease_for, events=self.events
        )
        self._signal.fire()
        if aside:
            self._wake_finished(aside)
        await self._hand_back_if_cancelled(leases)
        return leases

    async def _hand_back_if_cancelled(self, leases: list[Lease]) -> None:
        """Re-raise a cancellation that came during a claim, after handing its leases back.

        The caller will never run these jobs: they go back to their queue now
        rather than stay active until their leases lapse.
        """
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()
        except anyio.get_cancelled_exc_class():
            if leases:
                with anyio.CancelScope(shield=True):
                    await self.settle(
                        [Outcome(lease.job.id, lease.token, JobState.QUEUED) for lease in leases]
                    )
            raise

    async def _settle_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimQuery
    ) -> tuple[list[bool], list[Lease]]:
        queues, limit, worker, lease_for = claim
        if not outcomes:
            return [], await self.claim(queues, limit, worker=worker, lease_for=lease_for)
        # One transaction, so one commit (and one trip to the database thread) for both.
        settled, leases, aside = await self._run(
            True,
            sql.settle_and_claim,
            list(outcomes),
            list(queues),
            limit,
            worker,
            lease_for,
            events=self.events,
        )
        self._signal.fire()
        self._wake_finished(settled.finished)
        if aside:
            self._wake_finished(aside)
        if settled.requeued:
            self._waiters.wake_work()
        await self._hand_back_if_cancelled(leases)
        return settled.applied, leases

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        queues = list(queues)
        with self._waiters.work_waiter(queues) as woken:
            if self._closed:
                return
            deadline = anyio.current_time() + max(0.0, timeout)
            probe = await self._run(False, sql.probe, queues, None)
            assert probe is not None
            while not (probe.ready or self._closed):
                until = deadline
                if probe.earliest is not None:
                    until = min(until, anyio.current_time() + probe.earliest - self._clock())
                remaining = until - anyio.current_time()
                if remaining <= 0:
                    return
                with anyio.move_on_after(min(remaining, self._poll_interval)):
                    await woken.wait()
                    return
                if anyio.current_time() >= until or self._closed:
                    return
                # Only another process can have changed the database unseen.
                probe = await self._run(False, sql.probe, queues, probe.version) or probe

    async def heartbeat(self, leases: Sequence[Lease], *, lease_for: float) -> HeartbeatReply:
        if not leases:
            return HeartbeatReply()
        return await self._run(True, sql.heartbeat, list(leases), lease_for)

    async def progress(self, lease: Lease, value: float, detail: bytes | None = None) -> bool:
        held = await self._run(True, sql.progress, lease, value, detail, events=self.events)
        self._signal.fire()
        return held

    async def log(self, lease: Lease, lines: Sequence[LogLine]) -> bool:
        held = await self._run(True, sql.log, lease, lines, events=self.events)
        self._signal.fire()
        return held

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        check_outcomes(outcomes)
        if not outcomes:
            return []
        settled = await self._run(True, sql.settle, list(outcomes), events=self.events)
        self._signal.fire()
        self._wake_finished(settled.finished)
        if settled.requeued:
            self._waiters.wake_work()
        return settled.applied

    async def recover(self) -> int:
        recovered, aside = await self._run(True, sql.recover, events=self.events)
        self._signal.fire()
        if recovered:
            self._wake_finished(job_id for job_id, dead in recovered if dead)
            self._waiters.wake_work()
        if aside:
            self._wake_finished(aside)
        return len(recovered)

    async def prune(self) -> int:
        # Bounded transactions, so a large backlog never holds the write lock for long.
        total = 0
        while True:
            deleted = await self._run(True, admin_sql.prune, _PRUNE_BATCH, self._retention)
            total += deleted
            if deleted < _PRUNE_BATCH:
                break
        # Events go by their own retention, in the same bounded batches.
        while await self._run(True, events.prune, _PRUNE_BATCH, self._retention) >= _PRUNE_BATCH:
            pass
        # And the counters of limit keys gone idle, a batch of counters looked at a time.
        after: str | None = ""
        while after is not None:
            _, after = await self._run(True, limits.prune_idle, after, _PRUNE_BATCH)
        return total

    # -- operations ------------------------------------------------------------------

    async def limit_states(self) -> list[LimitState]:
        return await self._run(False, limits.states)

    async def circuit_states(self) -> list[CircuitState]:
        return await self._run(False, limits.circuit_states)

    async def set_circuit(self, name: str, *, open_: bool) -> list[CircuitState]:
        changed = await self._run(True, limits.set_circuit, name, open_)
        self._signal.fire()
        return changed

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        return await self._run(False, admin_sql.stats, None if queues is None else list(queues))

    async def _list_jobs(self, query: JobQuery) -> list[JobRecord]:
        return await self._run(False, admin_sql.list_jobs, *query)

    async def _retry_dead(self, query: DeadQuery) -> list[str]:
        retried = await self._run(True, admin_sql.retry_dead, *query, events=self.events)
        self._signal.fire()
        if retried:
            self._waiters.wake_work()
        return retried

    async def _purge(self, query: PurgeQuery) -> int:
        wanted, older_than, queue, limit = query
        return await self._run(True, admin_sql.purge, sorted(wanted), older_than, queue, limit)

    async def _remove(self, job_ids: tuple[str, ...]) -> list[JobState | None]:
        found = await self._run(True, admin_sql.remove, job_ids, events=self.events)
        self._signal.fire()
        # Waiters in this process wake now; those of others find the row gone on their poll.
        self._waiters.wake_jobs(job_ids)
        return found

    async def set_paused(self, queue: str, paused: bool) -> None:
        await self._run(True, admin_sql.set_paused, queue, paused)
        if not paused:
            self._waiters.wake_queue(queue)

    # -- the worker registry and cancel notices ----------------------------------

    async def put_worker(self, info: WorkerInfo) -> None:
        await self._run(True, workers.put_worker, info)

    async def workers(self) -> list[WorkerInfo]:
        return await self._run(True, workers.list_workers)

    async def watch_cancels(
        self,
        callback: Callable[[str], None],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        # Cancels in this process are pushed; those of other processes are read
        # every poll_interval, once another connection committed.
        with self._cancel_watchers.watching(callback):
            task_status.started()
            since: int | None = None
            told: set[str] = set()
            while not self._closed:
                found = await self._run(False, workers.cancel_requests, since)
                if found is not None:
                    since, requested = found
                    for job_id in requested:
                        if job_id not in told:
                            callback(job_id)
                    told = set(requested)
                await anyio.sleep(self._poll_interval)

    # -- the event stream ----------------------------------------------------------

    async def read_events(
        self, *, after: str | None, queues: Sequence[str] | None, limit: int
    ) -> EventPage:
        return await self._run(
            False, events.read, after, None if queues is None else list(queues), limit
        )

    async def wait_for_events(
        self, queues: Sequence[str] | None, after: str | None, timeout: float
    ) -> None:
        # Writers in this process fire the signal; those of others are seen when
        # ``PRAGMA data_version`` moves, looked at every poll_interval.
        wanted = None if queues is None else list(queues)
        deadline = anyio.current_time() + max(0.0, timeout)
        signal = self._signal.waiter()
        version: int | None = None
        while not self._closed:
            found = await self._run(False, events.version)
            if found != version:
                version = found
                if await self._run(False, events.newer, after, wanted):
                    return
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return
            with anyio.move_on_after(min(remaining, self._poll_interval)):
                await signal.wait()
                return

    async def job_events(self, job_id: str) -> list[JobEvent]:
        return await self._run(False, events.job_events, job_id)

    async def latest_event_id(self, queues: Sequence[str] | None) -> str:
        return await self._run(False, events.latest)

    capabilities: frozenset[Capability[Any]] = frozenset(
        {SETTLE_ON_CLAIM, DROP, PUSHES_CANCEL, EVENTS}
    )

    async def drop(self) -> None:
        """Drop the database's asyncq tables, jobs and all; other tables in the file stay.

        Works before ``open`` and after ``close``: it then opens the file for
        the drop alone, without creating or migrating the schema, and leaves
        a missing file missing.
        """
        if self._conn is not None:
            await self._run(True, schema.drop)
            return
        if self._path == ":memory:" or not await anyio.Path(self._path).exists():
            return  # nothing was stored
        # Open as usual (so a locked file is retried), but only for this drop.
        closed, self._closed = self._closed, False
        try:
            self._conn = await self._in_thread(self._connect)
            await self._run(True, schema.drop)
        finally:
            conn, self._conn, self._closed = self._conn, None, closed
            if conn is not None:
                with anyio.CancelScope(shield=True):
                    await to_thread.run_sync(conn.close, limiter=self._limiter)


if TYPE_CHECKING:
    _check: type[Backend] = SQLiteBackend
    _fused: type[SettlesOnClaim] = SQLiteBackend
    _events: type[HasEvents] = SQLiteBackend
