"""The PostgreSQL backend, on asyncpg: ``postgresql://`` selects it.

Jobs live in one table of a schema of their own (``asyncq`` unless
``schema=``/``?schema=`` says otherwise), versioned by a ``migrations`` table
and migrated by ``asyncq migrate`` or ``migrate=True``. Every method is one
statement on a pooled connection: batches travel as arrays through
``unnest`` (a large batch of new jobs is copied in with ``COPY``, in one
transaction with its notification), claims take ``FOR UPDATE SKIP LOCKED``
batches off a partial index, and state changes send their ``pg_notify`` in
the same statement (see ``sql``). One more connection, outside the pool,
listens to the schema's channels for every ``wait_*`` call of the instance.

Needs PostgreSQL 13 or later. Pooled connections plan every statement for
the table as it is (``plan_cache_mode=force_custom_plan``, overridable
through ``server_settings``); a pool passed in is used as configured.

Retention (``prune``) is the store-wide ``Retention``: completed jobs go
when their ``result_ttl`` has passed; other finished jobs after
``retention_completed`` (default one day), ``retention_dead`` or
``retention_cancelled`` (14 days each). ``None`` keeps them. A job's own
``result_ttl`` is never shortened by retention.

The URL's query holds asyncq's options (``url.OPTIONS``) and the driver's
(``sslmode``, server settings, ...); see ``url``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg
from anyio.abc import TaskStatus
from asyncpg.pool import PoolConnectionProxy

from ..._annotations import MAX_LOG_LINES, encode_line
from ...exceptions import BackendError, BackendUnavailable, ConfigurationError
from .._common import mask_url
from ..base import (
    DROP,
    ENQUEUE_WAITED,
    EVENTS,
    MIGRATE,
    PUSHES_CANCEL,
    TERMINAL_STATES,
    TRANSACTIONAL_ENQUEUE,
    Backend,
    Capability,
    Drops,
    EnqueuesWaited,
    HeartbeatReply,
    JobRecord,
    JobState,
    Lease,
    LogLine,
    Migrates,
    Outcome,
    Retention,
    WorkerInfo,
    check_outcomes,
    stored_as_given,
)
from . import sql
from .admin import (
    _UNSET,
    _Operations,
    _Unset,
    prune_steps,
    read_retention,
)
from .codec import JSON, Aside, aside_columns, outcome_columns, records
from .codec import leases as leases_of
from .enqueue import store
from .events import EventStatements, EventStream
from .listen import Listener, ListenerClosed
from .schema import check_name, check_versions, recorded_versions
from .transport import Transport
from .url import read_url
from .workers import WorkerStatements

__all__ = ["DEFAULT_RETENTION_COMPLETED", "DEFAULT_RETENTION_DEAD", "PostgresBackend", "mask_dsn"]

#: The one URL masker, by the name this package gave it first.
mask_dsn = mask_url

_DEFAULTS = Retention()
assert _DEFAULTS.completed is not None  # the defaults are finite
assert _DEFAULTS.dead is not None
#: How long a completed job without a ``result_ttl`` is kept (seconds): ``Retention().completed``.
DEFAULT_RETENTION_COMPLETED: float = _DEFAULTS.completed
#: How long dead jobs are kept (seconds): ``Retention().dead`` (cancelled ones as long).
DEFAULT_RETENTION_DEAD: float = _DEFAULTS.dead

log = logging.getLogger("asyncq.backends.postgres")


def _is_psycopg(connection: object) -> bool:
    """Whether ``connection`` is a psycopg object (told without importing psycopg)."""
    return type(connection).__module__.partition(".")[0] == "psycopg"


def _not_a_connection(jobs: Sequence[JobRecord], connection: object) -> str:
    """What ``enqueue(connection=...)`` says of a ``connection`` it cannot write through."""
    job = jobs[0]
    kind = f"{type(connection).__module__}.{type(connection).__qualname__}"
    hint = ""
    if kind.startswith("django."):
        hint = " (with Django, pass django.db.connection.connection, the psycopg connection)"
    return (
        f"job {job.name!r} (id {job.id}, queue {job.queue!r}): enqueue(connection=...) takes an "
        f"asyncpg connection or a psycopg 3 connection (psycopg.AsyncConnection, "
        f"psycopg.Connection), not {kind}{hint}; nothing stored"
    )


def _first_outcomes(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """One outcome per job: of a job settled twice in one batch, the first holds the lease."""
    return list({o.job_id: o for o in reversed(outcomes)}.values())


def _applied(outcomes: Sequence[Outcome], ids: Sequence[str] | None) -> list[bool]:
    """``settle``'s answer for ``outcomes``, given the ids the store applied."""
    applied = set(ids or ())
    reported: set[str] = set()
    result = []
    for outcome in outcomes:
        result.append(outcome.job_id in applied and outcome.job_id not in reported)
        reported.add(outcome.job_id)
    return result


class PostgresBackend(EventStream, _Operations):
    """Jobs in a PostgreSQL schema.

    Args:
        dsn_or_pool: a ``postgresql://`` DSN (the backend owns a pool and a
            listening connection), or an ``asyncpg.Pool`` the caller owns (the
            backend holds one connection of it for listening from the first
            ``wait_*`` call until ``close``, so it needs ``max_size >= 2``; the
            backend never closes it).
        schema: the PostgreSQL schema holding the tables.
        migrate: create or upgrade the schema on ``open``; otherwise ``open``
            refuses a schema that is missing or out of date.
        retention: how long ``prune`` keeps finished jobs (default ``Retention()``).
        retention_completed: seconds to keep completed jobs that have no
            ``result_ttl`` (``None``: forever), over ``retention``'s. Default
            one day.
        retention_dead: seconds to keep dead jobs, over ``retention``'s.
            Default 14 days.
        retention_cancelled: seconds to keep cancelled jobs, over
            ``retention``'s. Default 14 days.
        retention_max_completed: completed jobs each queue keeps at most
            (``None``: no cap, the default), over ``retention``'s.
        retention_max_dead: dead jobs each queue keeps at most.
        retention_max_cancelled: cancelled jobs each queue keeps at most.
        retention_events: seconds to keep job events (default one day).
        retention_max_events: job events each queue keeps at most.
        events: write the job event stream (``HasEvents``): the backend's
            statements write events, or do not mention them. A session
            with the setting ``asyncq.events = off`` writes none either (a
            caller's connection, a pool passed in). On by default.
        min_size: the pool's minimum connections (DSN only).
        max_size: the pool's maximum connections (DSN only).
        poll_interval: the safety net: ``wait_*`` re-check the store at least
            this often even if no notification arrives.
        carry_jobs: completion notices carry what the settlement changed on
            the job (state, result, errors, times) when it fits in a
            notification (under 8000 bytes), so ``wait_finished`` returns
            without reading the job again. PostgreSQL has no privileges for
            LISTEN and NOTIFY: any session of the database can read these
            notices, and send look-alikes. Where roles that must not see job
            results, or report them, share the database, pass ``False``:
            notices then carry ids, and waiters read the jobs.
        connect_kwargs: passed to ``asyncpg.create_pool`` and ``asyncpg.connect``
            (``ssl=``, ``server_settings=``, ``statement_cache_size=``, ...).
    """

    def __init__(
        self,
        dsn_or_pool: str | asyncpg.Pool[asyncpg.Record],
        *,
        schema: str = "asyncq",
        migrate: bool = False,
        retention: Retention | None = None,
        retention_completed: float | _Unset | None = _UNSET,
        retention_dead: float | _Unset | None = _UNSET,
        retention_cancelled: float | _Unset | None = _UNSET,
        retention_max_completed: int | _Unset | None = _UNSET,
        retention_max_dead: int | _Unset | None = _UNSET,
        retention_max_cancelled: int | _Unset | None = _UNSET,
        retention_events: float | _Unset | None = _UNSET,
        retention_max_events: int | _Unset | None = _UNSET,
        events: bool = True,
        min_size: int = 1,
        max_size: int = 10,
        poll_interval: float = 10.0,
        carry_jobs: bool = True,
        **connect_kwargs: Any,
    ) -> None:
        check_name(schema)
        self._transport = Transport(
            dsn_or_pool,
            schema=schema,
            open_backend=self.open,
            min_size=min_size,
            max_size=max_size,
            connect_kwargs=connect_kwargs,
        )
        self._carry_jobs = carry_jobs
        self._sql = sql.Statements(schema, carry_jobs=carry_jobs, events=events)
        self._schema = schema
        self._migrate = migrate
        self._retention = read_retention(
            retention,
            retention_completed=retention_completed,
            retention_dead=retention_dead,
            retention_cancelled=retention_cancelled,
            retention_max_completed=retention_max_completed,
            retention_max_dead=retention_max_dead,
            retention_max_cancelled=retention_max_cancelled,
            retention_events=retention_events,
            retention_max_events=retention_max_events,
        )
        self._event_sql = EventStatements(schema)
        # The event stream's followers wake on any change announced (see ``events``).
        self._event_listener = Listener(
            connect=self._transport.listen_connect,
            release=self._transport.listen_release,
            work_channel="",
            later_channel="",
            done_channel="",
            wake_channels=(
                self._sql.events_channel,
                self._sql.work_channel,
                self._sql.later_channel,
                self._sql.done_channel,
            ),
        )
        self.events = events
        self._prune_steps = prune_steps(self._sql, self._retention)
        self._poll_interval = poll_interval
        # What wait_for_work may know without asking (see there), per list of
        # queues: the listener's mark when the last claim that came up short
        # was sent; and the mark, the time and the earliest due time (None:
        # nothing pending) of the last read of the due time.
        self._drained: dict[tuple[str, ...], int] = {}
        self._due: dict[tuple[str, ...], tuple[int, float, float | None]] = {}
        self._open_lock: anyio.Lock | None = None
        self._cancel_channel = f"{schema}:cancel"
        self._workers = WorkerStatements(schema)
        self._listener = Listener(
            connect=self._transport.listen_connect,
            release=self._transport.listen_release,
            work_channel=self._sql.work_channel,
            later_channel=self._sql.later_channel,
            done_channel=self._sql.done_channel,
            trust_finishes=carry_jobs,
            cancel_channel=self._cancel_channel,
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        schema: str | None = None,
        migrate: bool | None = None,
        **options: Any,
    ) -> PostgresBackend:
        """``postgresql://user:pass@host:port/db?schema=name&retention_dead=3600``.

        asyncq's options may be given in the URL's query or as keywords (the
        keywords win; a ``schema`` or ``migrate`` of ``None`` is not given):
        ``schema``, ``migrate``, ``retention`` and the ``Retention`` options,
        ``min_size``, ``max_size``, ``poll_interval``, ``carry_jobs``. Every
        other query option is asyncpg's (``sslmode``, ``sslrootcert``,
        server settings); other keywords go to ``PostgresBackend``.

        Raises:
            ConfigurationError: not a PostgreSQL URL, a malformed option, a
                port that is not a number, or an ``sslmode`` asyncpg does not know.
        """
        dsn, settings = read_url(url, {"schema": schema, "migrate": migrate, **options})
        return cls(dsn, **settings)

    @property
    def url(self) -> str:
        return self._transport.url

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this backend's tables."""
        return self._schema

    # -- lifecycle and schema ----------------------------------------------------

    async def open(self) -> None:
        if self._open_lock is None:
            self._open_lock = anyio.Lock()
        async with self._open_lock:
            if self._transport.pool is not None:
                return
            self._transport.closed = False
            self._listener.closed = False
            self._event_listener.closed = False
            if self._migrate:
                await self.migrate()
            else:
                await self._check_schema()
            await self._transport.start(self._sql.whoami)

    async def _check_schema(self) -> None:
        async with self._transport.connection() as conn:
            versions = await recorded_versions(conn, self._sql)
        check_versions(versions, where=self._where)

    @property
    def _where(self) -> str:
        return f"PostgreSQL schema {self._schema!r} at {self.url}"

    @property
    def events(self) -> bool:
        """Whether the backend writes job events (set before ``open``)."""
        return self._events

    @events.setter
    def events(self, on: bool) -> None:
        self._events = on
        # Statements that write events, or statements that do not (see ``event_sql``).
        if self._sql.events != on:
            self._sql = sql.Statements(self._schema, carry_jobs=self._carry_jobs, events=on)
        # The functions that release children read this setting of the session
        # (see ``schema``, "dependency events"); a pool passed in sets it itself.
        settings = self._transport._connect_kwargs["server_settings"]
        if on:
            settings.pop("asyncq.events", None)
        else:
            settings["asyncq.events"] = "off"

    async def close(self) -> None:
        self._transport.closed = True
        await self._event_listener.close()
        await self._listener.close()
        await self._transport.close()

    async def _listen(self) -> None:
        try:
            with self._transport.mapped():
                await self._listener.ensure()
        except ListenerClosed:
            raise self._transport.closed_error() from None

    # -- producers ---------------------------------------------------------------

    async def enqueue(
        self, jobs: Sequence[JobRecord], *, connection: object | None = None, fresh: bool = False
    ) -> list[JobRecord]:
        if not jobs:
            return []
        if connection is None:
            return await self._transport.run(lambda conn: store(conn, self._sql, jobs))
        if isinstance(connection, (asyncpg.Connection, PoolConnectionProxy)):
            with self._transport.mapped():
                return await store(connection, self._sql, jobs)
        if _is_psycopg(connection):
            return await self._enqueue_psycopg(jobs, connection)
        raise ConfigurationError(_not_a_connection(jobs, connection))

    async def _enqueue_psycopg(
        self, jobs: Sequence[JobRecord], connection: object
    ) -> list[JobRecord]:
        """``enqueue`` through the caller's psycopg 3 connection (see ``psycopg``)."""
        import psycopg  # the optional driver: imported once one is given

        from . import psycopg as adapter

        try:
            if isinstance(connection, psycopg.AsyncConnection):
                conn = adapter.AsyncConnectionAdapter(connection)
                return await store(conn, self._sql, jobs)
            if isinstance(connection, psycopg.Connection):
                # Its statements block: a worker thread runs them, not the loop.
                return await anyio.to_thread.run_sync(
                    adapter.store_sync, connection, self._sql, jobs
                )
        except psycopg.OperationalError as exc:
            msg = f"PostgreSQL is unavailable through the given psycopg connection: {exc}"
            raise BackendUnavailable(msg) from exc
        except psycopg.Error as exc:
            msg = (
                f"PostgreSQL failed through the given psycopg connection: "
                f"{type(exc).__name__}: {exc}"
            )
            raise BackendError(msg) from exc
        raise ConfigurationError(_not_a_connection(jobs, connection))

    async def enqueue_waited(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        # LISTEN first, then store: the ends of these jobs will be heard, so
        # their waits need not read them (see listen).
        listener = self._listener
        await self._listen()
        expected = [job.id for job in jobs if listener.expect(job)]
        try:
            stored = await self.enqueue(jobs)
        except BaseException:
            for job_id in expected:
                listener.unexpect(job_id)
            raise
        for job, kept in zip(jobs, stored, strict=True):
            if not stored_as_given(job, kept):  # its key or its id was taken
                listener.unexpect(job.id)
        return stored

    async def get(self, job_id: str) -> JobRecord | None:
        """The job, or a stand-in named ``<unreadable>`` if its stored record cannot be read."""
        row = await self._transport.run(lambda conn: conn.fetchrow(self._sql.get, job_id))
        return None if row is None else records([row], at=time.time())[0]

    async def cancel(self, job_id: str, *, by: str = "api") -> JobRecord | None:
        row = await self._transport.run(lambda conn: conn.fetchrow(self._sql.cancel, job_id, by))
        job = None if row is None else records([row], at=time.time())[0]
        if job is not None and job.state is JobState.ACTIVE:
            # Committed: tell its worker now rather than at its next heartbeat.
            await self._transport.fetchval("SELECT pg_notify($1, $2)", self._cancel_channel, job_id)
        return job

    async def wait_finished(self, job_id: str) -> JobRecord | None:
        last: JobRecord | None = None
        listener = self._listener
        while True:
            if self._transport.closed and last is not None:
                return last  # woken by close: the job as last seen
            with listener.job_waiter(job_id) as finished:
                await self._listen()
                # A job stored by enqueue_waited: its end is heard, maybe already.
                stored = listener.take_expected(job_id) if last is None else None
                heard, finish = listener.take_early(job_id)
                if stored is not None and finish is not None:
                    return finish.applied_to(stored)
                if stored is not None and not heard:
                    job = stored
                else:
                    read = await self.get(job_id)
                    if read is None or read.state in TERMINAL_STATES:
                        return read
                    job = read
                last = job
                with anyio.move_on_after(self._poll_interval) as quiet:
                    await finished.event.wait()
            if finished.finish is not None:
                # The notice carried what the settlement changed: no need to read.
                return finished.finish.applied_to(job)
            if quiet.cancelled_caught:
                await self._listener.check()

    # -- workers -----------------------------------------------------------------

    async def claim(
        self, queues: Sequence[str], limit: int, *, worker: str, lease_for: float
    ) -> list[Lease]:
        names = list(dict.fromkeys(queues))
        if limit <= 0 or not names:
            return []
        key = tuple(names)
        mark = self._listener.mark()
        self._drained.pop(key, None)
        if len(names) == 1:
            rows = await self._transport.fetch(
                self._sql.claim_queue, names[0], limit, worker, lease_for
            )
        else:
            rows = await self._transport.fetch(self._sql.claim, names, limit, worker, lease_for)
        leases, aside = leases_of(rows)
        if aside:
            await self._take_aside(aside)
        if mark is not None and len(rows) < limit:
            # Fewer than asked for: every job ready and unlocked in these queues
            # when the claim ran is among them (or another claimer's).
            self._drained[key] = mark
        else:
            self._drained.pop(key, None)
        return leases

    async def _take_aside(self, aside: Sequence[Aside]) -> None:
        """Make dead letters of claimed jobs whose records cannot be read.

        Guarded by the claim's tokens, so it changes nothing but these jobs
        as claimed. If it fails, the claim still hands out its healthy jobs:
        the others stay leased until their leases lapse, then are recovered
        and taken aside by a later claim.
        """
        for one in aside:
            log.warning(
                "job %s in queue %s: its stored record cannot be read (%s); "
                "taking it aside as a dead letter",
                one.unreadable.job_id,
                one.unreadable.queue,
                one.unreadable.reason,
            )
        try:
            await self._transport.fetchrow(
                self._sql.take_aside, *aside_columns(aside, at=time.time())
            )
        except BackendError as exc:
            log.warning("could not take unreadable jobs aside yet: %s", exc)

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        names = list(dict.fromkeys(queues))
        if self._transport.closed or timeout <= 0:
            return
        with self._listener.work_waiter(names) as work:
            try:
                await self._listen()
            except BackendUnavailable:
                if self._listener.closed:
                    return  # closed meanwhile: close wakes every wait
                raise
            wait = self._known_wait(names, timeout)
            if wait is None:
                mark, asked = self._listener.mark(), anyio.current_time()
                due = (
                    await self._transport.fetchval(self._sql.wait_for_work, names)
                    if names
                    else None
                )
                if mark is not None:
                    self._due[tuple(names)] = (mark, asked, None if due is None else asked + due)
                wait = timeout if due is None else min(timeout, due)
            if wait <= 0:
                return
            with anyio.move_on_after(min(wait, self._poll_interval)) as quiet:
                await work.wait()
        if quiet.cancelled_caught and wait > self._poll_interval:
            await self._listener.check()

    def _known_wait(self, names: Sequence[str], timeout: float) -> float | None:
        """How long ``wait_for_work`` may wait without reading the due time; ``None``: read it.

        A worker whose claim came up short used to read the due time before
        every wait. Nothing is ready now, and the earliest due time is as last
        read, as long as the listener heard no notice for these queues since
        that claim was sent (a job ready now is always announced on the work
        channel), no later notice since that read (a job due later, a failed
        job's retry, a resumed queue), the due time has not come, and the read
        is younger than the safety-net interval (changes nobody announced).
        The claim's and the read's marks count only if the listener has been
        listening since. A read found early (a paused queue, a job claimed by
        someone else) only makes for an early, spurious return.
        """
        key = tuple(names)
        known = self._due.get(key)
        if known is None or not self._listener.quiet_since(self._drained.get(key), names):
            return None
        mark, asked, at = known
        now = anyio.current_time()
        if now - asked >= self._poll_interval:
            return None
        if not self._listener.quiet_since(mark, names, later=True):
            return None
        if at is None:
            return timeout
        return min(timeout, at - now) if at > now else None

    async def heartbeat(self, leases: Sequence[Lease], *, lease_for: float) -> HeartbeatReply:
        if not leases:
            return HeartbeatReply()
        rows = await self._transport.fetch(
            self._sql.heartbeat,
            [lease.job.id for lease in leases],
            [lease.token for lease in leases],
            lease_for,
        )
        held = {row[0] for row in rows}
        return HeartbeatReply(
            lost=frozenset(lease.job.id for lease in leases) - held,
            cancel=frozenset(row[0] for row in rows if row[1]),
        )

    async def progress(self, lease: Lease, value: float, detail: bytes | None = None) -> bool:
        held = await self._transport.fetchval(
            self._sql.progress,
            lease.job.id,
            lease.token,
            value,
            None if detail is None else detail.decode(),
        )
        return bool(held)

    async def log(self, lease: Lease, lines: Sequence[LogLine]) -> bool:
        held = await self._transport.fetchval(
            self._sql.log,
            lease.job.id,
            lease.token,
            [encode_line(line).decode() for line in lines],
            MAX_LOG_LINES,
        )
        return bool(held)

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        check_outcomes(outcomes)
        unique = _first_outcomes(outcomes)
        if not unique:
            return []
        if len(unique) == 1:
            [one] = unique
            error = None if one.error is None else JSON.encode(one.error).decode()
            rows = await self._transport.fetch(
                self._sql.settle_one,
                one.job_id,
                one.token,
                one.state.value,
                one.result,
                error,
                one.retry_at,
            )
            return _applied(outcomes, [one.job_id] if rows else None)
        row = await self._transport.fetchrow(self._sql.settle, *outcome_columns(unique))
        return _applied(outcomes, row[0])

    async def recover(self) -> int:
        row = await self._transport.fetchrow(self._sql.recover)
        return int(row[0])

    # -- the worker registry and cancel notices ----------------------------------

    async def put_worker(self, info: WorkerInfo) -> None:
        await self._workers.put_worker(self._transport, info)

    async def workers(self) -> list[WorkerInfo]:
        return await self._workers.workers(self._transport)

    async def watch_cancels(
        self,
        callback: Callable[[str], None],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        listener = self._listener
        started = False
        with listener.cancels.watching(callback):
            while not listener.closed:
                # Registered before connecting, so a loss right after is seen.
                with listener.reconnect_waiter() as lost:
                    await self._listen()
                    if not started:
                        started = True
                        task_status.started()
                    with anyio.move_on_after(self._poll_interval):
                        await lost.wait()
                    if not lost.is_set():
                        await listener.check()

    capabilities: frozenset[Capability[Any]] = frozenset(
        {ENQUEUE_WAITED, MIGRATE, DROP, TRANSACTIONAL_ENQUEUE, PUSHES_CANCEL, EVENTS}
    )


if TYPE_CHECKING:
    _check: type[Backend] = PostgresBackend
    _waited: type[EnqueuesWaited] = PostgresBackend
    _migrates: type[Migrates] = PostgresBackend
    _drops: type[Drops] = PostgresBackend
