"""The PostgreSQL backend, on asyncpg: ``postgresql://`` selects it.

Jobs live in one table of a schema of their own (``asyncq`` unless
``schema=``/``?schema=`` says otherwise), versioned by a ``migrations`` table
and migrated by ``asyncq migrate`` or ``migrate=True``. Every method is one
statement on a pooled connection: batches travel as arrays through
``unnest`` (a large batch of new jobs is copied in with ``COPY``, in one
transaction with its notification), claims take ``FOR UPDATE SKIP LOCKED``
batches off a partial index, and state changes send their ``pg_notify`` in
the same statement (see ``_postgres_sql``). One more connection, outside the pool, listens to the
schema's channels for every ``wait_*`` call of the instance.

Needs PostgreSQL 13 or later. Pooled connections plan every statement for
the table as it is (``plan_cache_mode=force_custom_plan``, overridable
through ``server_settings``); a pool passed in is used as configured.

Retention (``prune``): completed jobs go when their ``result_ttl`` has passed;
completed jobs without a TTL after ``retention_completed`` (default one day);
dead and cancelled jobs after ``retention_dead`` (default 14 days). ``None``
keeps them. A job's own ``result_ttl`` is never shortened by retention.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy
from msgspec.structs import replace

from ..exceptions import BackendError, BackendUnavailable, ConfigurationError
from . import _postgres_sql as sql
from ._postgres_listen import Listener, ListenerClosed
from ._postgres_sql import decode
from .base import (
    DROP,
    ENQUEUE_WAITED,
    MIGRATE,
    TERMINAL_STATES,
    TRANSACTIONAL_ENQUEUE,
    Backend,
    Capability,
    EnqueuesWaited,
    HeartbeatReply,
    JobRecord,
    JobState,
    Lease,
    Outcome,
    QueueStats,
    check_outcomes,
    purgeable,
)

if TYPE_CHECKING:
    from ._postgres_listen import Connection

__all__ = ["DEFAULT_RETENTION_COMPLETED", "DEFAULT_RETENTION_DEAD", "PostgresBackend", "mask_dsn"]

#: How long a completed job without a ``result_ttl`` is kept (seconds).
DEFAULT_RETENTION_COMPLETED = 86_400.0
#: How long dead and cancelled jobs are kept (seconds).
DEFAULT_RETENTION_DEAD = 14 * 86_400.0
#: Rows one prune statement deletes at most.
PRUNE_BATCH = 1_000
#: Batches this large (without keys, all asked for now) are copied in: below
#: it, the copy's extra round trips (its transaction, the copy's handshake,
#: the notification) cost more than the insert's per-row work it saves.
COPY_MIN_BATCH = 32

_T = TypeVar("_T")

# What "cannot be reached" looks like from asyncpg: socket errors, the server
# refusing or shutting down, a connection that is gone. (A bare InterfaceError
# is a closed connection or pool; its subclasses are client-side mistakes. An
# InternalClientError is what a statement meets on a connection the server
# has just terminated, before the client has seen it close.)
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)
_json = msgspec.json.Encoder()


def _headers(job: JobRecord) -> str:
    return _json.encode(job.headers).decode() if job.headers else "{}"


def _columns(jobs: Sequence[JobRecord], *, keyed: bool) -> list[list[Any]]:
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
        [_headers(j) for j in jobs],
    ]


def _leases(rows: Iterable[asyncpg.Record]) -> list[Lease]:
    """Leases from claimed rows (``COLUMNS``, then the token), in claim order."""
    leases = [Lease(job=decode(row), token=row[22], expires_at=row[15]) for row in rows]
    leases.sort(key=lambda lease: (-lease.job.priority, lease.job.scheduled_at, lease.job.id))
    return leases


def _first_outcomes(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """One outcome per job: of a job settled twice in one batch, the first holds the lease."""
    return list({o.job_id: o for o in reversed(outcomes)}.values())


def _outcome_columns(outcomes: Sequence[Outcome]) -> list[list[Any]]:
    """Outcomes as the settle statements' parameter arrays, one per column."""
    return [
        [o.job_id for o in outcomes],
        [o.token for o in outcomes],
        [o.state.value for o in outcomes],
        [o.result for o in outcomes],
        [None if o.error is None else _json.encode(o.error).decode() for o in outcomes],
        [o.retry_at for o in outcomes],
    ]


def _applied(outcomes: Sequence[Outcome], ids: Sequence[str] | None) -> list[bool]:
    """``settle``'s answer for ``outcomes``, given the ids the store applied."""
    applied = set(ids or ())
    reported: set[str] = set()
    result = []
    for outcome in outcomes:
        result.append(outcome.job_id in applied and outcome.job_id not in reported)
        reported.add(outcome.job_id)
    return result


def mask_dsn(dsn: str) -> str:
    """``dsn`` with its password (in the authority or the query) replaced by ``***``."""
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostinfo}" if colon else f"{user}@{hostinfo}"
    query = [
        (k, "***" if k.lower() == "password" else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """The pool's reset, which does nothing.

    No statement of this backend leaves session state behind (no LISTEN on
    pooled connections, no settings, and prune unlocks its advisory lock or
    drops the connection), so asyncpg's default reset query would only cost
    a second round trip per call. An open transaction is still rolled back.
    """


def _lock_key(purpose: str, schema: str) -> int:
    """A stable signed 64-bit advisory lock key for one purpose in one schema."""
    digest = hashlib.blake2b(f"asyncq:{purpose}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresBackend:
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
        retention_completed: seconds to keep completed jobs that have no
            ``result_ttl`` (``None``: forever).
        retention_dead: seconds to keep dead and cancelled jobs (``None``: forever).
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
        retention_completed: float | None = DEFAULT_RETENTION_COMPLETED,
        retention_dead: float | None = DEFAULT_RETENTION_DEAD,
        min_size: int = 1,
        max_size: int = 10,
        poll_interval: float = 10.0,
        carry_jobs: bool = True,
        **connect_kwargs: Any,
    ) -> None:
        if not sql.SCHEMA_NAME.fullmatch(schema):
            msg = (
                f"invalid PostgreSQL schema name {schema!r}: use lower-case letters, digits "
                "and underscores, at most 48 characters, not starting with a digit"
            )
            raise ConfigurationError(msg)
        given: object = dsn_or_pool  # checked at run time: callers may not be typed
        if isinstance(given, str):
            self._dsn: str | None = given
            self._given_pool: asyncpg.Pool[asyncpg.Record] | None = None
            self._url = mask_dsn(given)
        elif isinstance(given, asyncpg.Pool):
            self._dsn, self._given_pool = None, given
            self._url = "postgresql://(asyncpg pool)"
        else:
            msg = f"PostgresBackend needs a DSN or an asyncpg.Pool, not {type(given)!r}"
            raise ConfigurationError(msg)
        self._sql = sql.Statements(schema, carry_jobs=carry_jobs)
        self._schema = schema
        self._migrate = migrate
        self._retention_completed = retention_completed
        self._retention_dead = retention_dead
        self._min_size, self._max_size = min_size, max_size
        self._poll_interval = poll_interval
        # A generic plan made while the table was small (a seq scan over a
        # few rows) would be kept while it grows to millions; planning each
        # statement for the table as it is costs a fraction of a millisecond.
        # The application name lets an operator find a worker's connections in
        # pg_stat_activity, like the client name on Redis.
        settings = {"plan_cache_mode": "force_custom_plan", "application_name": f"asyncq:{schema}"}
        settings.update(connect_kwargs.pop("server_settings", None) or {})
        self._connect_kwargs = {**connect_kwargs, "server_settings": settings}
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._closed = False
        # What wait_for_work may know without asking (see there), per list of
        # queues: the listener's mark when the last claim that came up short
        # was sent; and the mark, the time and the earliest due time (None:
        # nothing pending) of the last read of the due time.
        self._drained: dict[tuple[str, ...], int] = {}
        self._due: dict[tuple[str, ...], tuple[int, float, float | None]] = {}
        self._open_lock: anyio.Lock | None = None
        self._listener = Listener(
            connect=self._listen_connect,
            release=self._listen_release,
            work_channel=self._sql.work_channel,
            later_channel=self._sql.later_channel,
            done_channel=self._sql.done_channel,
            trust_finishes=carry_jobs,
        )

    @classmethod
    def from_url(
        cls, url: str, *, schema: str | None = None, migrate: bool = False, **options: Any
    ) -> PostgresBackend:
        """``postgresql://user:pass@host:port/db?schema=name``; ``schema=`` wins over the URL's."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            msg = f"not a PostgreSQL URL: {mask_dsn(url)!r} (use postgresql://...)"
            raise ConfigurationError(msg)
        query = parse_qsl(parts.query, keep_blank_values=True)
        in_url = [value for name, value in query if name == "schema"]
        rest = [(name, value) for name, value in query if name != "schema"]
        dsn = urlunsplit(parts._replace(query=urlencode(rest)))
        chosen = schema or (in_url[-1] if in_url else "asyncq")
        return cls(dsn, schema=chosen, migrate=migrate, **options)

    @property
    def url(self) -> str:
        suffix = "" if self._schema == "asyncq" else f"schema={self._schema}"
        if not suffix:
            return self._url
        return f"{self._url}{'&' if '?' in self._url else '?'}{suffix}"

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this backend's tables."""
        return self._schema

    # -- connections and errors --------------------------------------------------

    def _translate(self, exc: BaseException) -> BackendError:
        """Map a driver error to asyncq's: unreachable or answered wrongly."""
        if isinstance(exc, _UNAVAILABLE) or type(exc) is asyncpg.InterfaceError:
            return BackendUnavailable(f"PostgreSQL at {self.url} is unavailable: {exc}")
        return BackendError(f"PostgreSQL at {self.url} failed: {type(exc).__name__}: {exc}")

    @staticmethod
    def _is_driver_error(exc: BaseException) -> bool:
        return isinstance(exc, _UNAVAILABLE) or type(exc).__module__.startswith("asyncpg")

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        """Let no driver exception out: raise asyncq's instead."""
        try:
            yield
        except Exception as exc:
            if self._is_driver_error(exc):
                raise self._translate(exc) from exc
            raise

    async def _ready_pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            if self._closed:
                msg = f"the PostgreSQL backend for {self.url} is closed"
                raise BackendUnavailable(msg)
            await self.open()
        assert self._pool is not None
        return self._pool

    async def _run(self, op: Callable[[Connection], Awaitable[_T]]) -> _T:
        """Run ``op`` on a pooled connection, mapping driver errors.

        A connection error is tried once more on a fresh connection: after a
        server restart or ``pg_terminate_backend`` the pool's idle connections
        are dead, so the pool replaces them all and the retry reconnects.
        Every statement is safe to repeat (a repeated enqueue is a no-op by
        id); the one imprecision is a settle whose first try committed but
        whose reply was lost: it then reports ``False`` for outcomes that were
        in fact applied.
        """
        pool = await self._ready_pool()
        for attempt in range(2):
            try:
                async with pool.acquire() as conn:
                    try:
                        return await op(conn)
                    except _UNAVAILABLE:
                        # The pool must not hand it out again (unless it was
                        # closed, and so given back, already).
                        with suppress(asyncpg.InterfaceError):
                            conn.terminate()
                        raise
            except Exception as exc:
                if not self._is_driver_error(exc):
                    raise
                error = self._translate(exc)
                if attempt == 0 and isinstance(error, BackendUnavailable) and not self._closed:
                    # What killed one connection (a restart, a failover, an
                    # operator) most likely killed its idle siblings too.
                    await pool.expire_connections()
                    continue
                raise error from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        return await self._run(lambda conn: conn.fetch(query, *args))

    async def _fetchrow(self, query: str, *args: object) -> asyncpg.Record:
        row = await self._run(lambda conn: conn.fetchrow(query, *args))
        assert row is not None
        return row

    async def _fetchval(self, query: str, *args: object) -> Any:
        return await self._run(lambda conn: conn.fetchval(query, *args))

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """A connection whether or not the backend is open (migrate, checks, drop)."""
        with self._mapped():
            pool = self._pool or self._given_pool
            if pool is not None:
                async with pool.acquire() as conn:
                    yield conn
            else:
                assert self._dsn is not None
                conn = await asyncpg.connect(self._dsn, **self._connect_kwargs)
                try:
                    yield conn
                finally:
                    await conn.close()

    async def _listen_connect(self) -> Connection:
        if self._given_pool is not None:
            return await self._given_pool.acquire()
        assert self._dsn is not None
        conn: Connection = await asyncpg.connect(self._dsn, **self._connect_kwargs)
        return conn

    async def _listen_release(self, conn: Connection) -> None:
        # The connection may be dead already: releasing it is best effort.
        with suppress(Exception):
            if self._given_pool is not None and isinstance(conn, PoolConnectionProxy):
                await self._given_pool.release(conn, timeout=5)
                return
            with anyio.move_on_after(5):
                await conn.close()
            conn.terminate()

    # -- lifecycle and schema ----------------------------------------------------

    async def open(self) -> None:
        if self._open_lock is None:
            self._open_lock = anyio.Lock()
        async with self._open_lock:
            if self._pool is not None:
                return
            self._closed = False
            self._listener.closed = False
            if self._migrate:
                await self.migrate()
            else:
                await self._check_schema()
            if self._given_pool is not None:
                if self._given_pool.get_max_size() < 2:
                    msg = (
                        "PostgresBackend needs an asyncpg pool of max_size >= 2: "
                        "it holds one connection for LISTEN while waiting"
                    )
                    raise ConfigurationError(msg)
                self._pool = self._given_pool
                await self._learn_url()
                return
            assert self._dsn is not None
            with self._mapped():
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    reset=_keep_session,
                    **self._connect_kwargs,
                )

    async def _learn_url(self) -> None:
        row = await self._fetchrow(self._sql.whoami)
        user, database, host, port = row
        where = f"{host}:{port}" if host else "(local socket)"
        self._url = f"postgresql://{user}@{where}/{database}"

    async def _check_schema(self) -> None:
        async with self._connection() as conn:
            exists = await conn.fetchval(self._sql.schema_exists)
            versions = {r[0] for r in await conn.fetch(self._sql.versions)} if exists else set()
        sql.check_versions(versions, where=f"PostgreSQL schema {self._schema!r} at {self.url}")

    async def migrate(self) -> list[int]:
        """Create or upgrade the schema; return the versions applied (``[]``: up to date).

        Safe to run from many processes at once: the migrating transaction
        holds an advisory lock on the schema's name. Works before ``open``.

        Raises:
            ConfigurationError: the schema is newer than this asyncq.
        """
        where = f"PostgreSQL schema {self._schema!r} at {self.url}"
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1)", _lock_key("migrate", self._schema)
            )
            await conn.execute(self._sql.bootstrap)
            versions = {r[0] for r in await conn.fetch(self._sql.versions)}
            sql.check_versions(versions, where=where, migrating=True)
            applied = []
            for version, (description, step) in enumerate(self._sql.migrations, start=1):
                if version not in versions:
                    await conn.execute(step)
                    await conn.execute(self._sql.record_version, version, description)
                    applied.append(version)
            return applied

    async def drop_schema(self) -> None:
        """Drop the schema and every job in it (tests, teardown). Works after ``close``."""
        async with self._connection() as conn:
            await conn.execute(self._sql.drop)

    async def close(self) -> None:
        self._closed = True
        await self._listener.close()
        pool, self._pool = self._pool, None
        if pool is not None and pool is not self._given_pool:
            with anyio.move_on_after(10) as scope:
                await pool.close()
            if scope.cancelled_caught:
                pool.terminate()

    async def _listen(self) -> None:
        try:
            with self._mapped():
                await self._listener.ensure()
        except ListenerClosed:
            msg = f"the PostgreSQL backend for {self.url} is closed"
            raise BackendUnavailable(msg) from None

    # -- producers ---------------------------------------------------------------

    async def enqueue(
        self, jobs: Sequence[JobRecord], *, connection: object | None = None
    ) -> list[JobRecord]:
        if not jobs:
            return []
        if connection is None:
            return await self._run(lambda conn: self._enqueue_on(conn, jobs))
        if not isinstance(connection, (asyncpg.Connection, PoolConnectionProxy)):
            msg = (
                "enqueue(connection=...) takes an asyncpg connection, "
                f"not {type(connection).__name__}"
            )
            raise ConfigurationError(msg)
        with self._mapped():
            return await self._enqueue_on(connection, jobs)

    async def enqueue_waited(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        # LISTEN first, then store: the ends of these jobs will be heard, so
        # their waits need not read them (see _postgres_listen).
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
            if kept.id != job.id:
                listener.unexpect(job.id)
        return stored

    async def _enqueue_on(self, conn: Connection, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        """Store ``jobs`` through ``conn`` by the cheapest statement that keeps the contract.

        Batches with keys take the statement that frees and reports holders;
        a single job a VALUES row; a large batch of jobs asked for now is
        copied in (``_copy_in``); anything else takes the unnest insert.
        """
        if any(job.key is not None for job in jobs):
            rows = await conn.fetch(self._sql.enqueue, *_columns(jobs, keyed=True))
        elif len(jobs) == 1:
            job = jobs[0]
            rows = await conn.fetch(
                self._sql.enqueue_one,
                job.id,
                job.name,
                job.queue,
                job.payload,
                job.priority,
                job.attempts,
                job.max_attempts,
                job.timeout,
                job.result_ttl,
                job.enqueued_at,
                job.scheduled_at,
                _headers(job),
            )
        else:
            if len(jobs) >= COPY_MIN_BATCH and all(j.scheduled_at <= j.enqueued_at for j in jobs):
                copied = await self._copy_in(conn, jobs)
                if copied is not None:
                    return copied
            rows = await conn.fetch(self._sql.enqueue_plain, *_columns(jobs, keyed=False))
        inserted: dict[str, str] = {}
        holders: dict[str, JobRecord] = {}
        for row in rows:
            if row[0]:
                inserted[row[1]] = row[2]
            else:
                holders[row[1]] = decode(row[3])
        stored: list[JobRecord | None] = []
        batch_holders: dict[tuple[str, str], JobRecord] = {}
        for job in jobs:
            state = inserted.get(job.id)
            if state is not None:
                record = job if job.state.value == state else replace(job, state=JobState(state))
                if job.key is not None:
                    batch_holders.setdefault((job.queue, job.key), record)
                stored.append(record)
            elif job.id in holders:
                stored.append(holders[job.id])
            elif job.key is not None and (job.queue, job.key) in batch_holders:
                stored.append(batch_holders[(job.queue, job.key)])
            else:
                stored.append(None)
        if None in stored:
            await self._resolve_conflicts(conn, jobs, stored)
        return [record for record in stored if record is not None]

    async def _copy_in(self, conn: Connection, jobs: Sequence[JobRecord]) -> list[JobRecord] | None:
        """Store a batch of keyless jobs asked for now with ``COPY``; ``None`` if it cannot.

        A copy skips the executor's per-row work (about half the server's time
        for a thousand jobs) but computes nothing on the server, so what the
        insert statements decide there is settled around it, in the same
        transaction (the caller's, or one of its own): every job is
        ``queued``; the queues are recorded and notified once; and if the
        producer's clock ran ahead of the server's, the batch's
        ``scheduled_at`` is pulled back to now (one more statement, only
        then), as ``enqueue`` promises. An id already stored (a batch retried
        after its reply was lost) fails the copy as a whole: ``None`` then
        sends the batch through the insert, which sorts that out.
        """
        records = [
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
                _headers(j),
            )
            for j in jobs
        ]
        queues = list(dict.fromkeys(j.queue for j in jobs))
        latest = max(j.scheduled_at for j in jobs)
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "jobs", schema_name=self._schema, columns=sql.COPY_COLUMNS, records=records
                )
                if await conn.fetchval(self._sql.enqueue_copied, latest, queues):
                    await conn.execute(self._sql.clamp_copied, [j.id for j in jobs])
        except asyncpg.UniqueViolationError:
            return None
        queued = JobState.QUEUED
        return [j if j.state is queued else replace(j, state=queued) for j in jobs]

    async def _resolve_conflicts(
        self, conn: Connection, jobs: Sequence[JobRecord], stored: list[JobRecord | None]
    ) -> None:
        """Find what the inputs neither stored nor matched in the snapshot ran into.

        Either a holder of the key committed by another transaction after the
        insert's snapshot was taken, or this very input stored by an earlier
        try of the same batch. Both are visible to a new statement.
        """
        lost = [job for job, record in zip(jobs, stored, strict=True) if record is None]
        keyed = [job for job in lost if job.key is not None]
        rows = await conn.fetch(
            self._sql.lookup,
            [job.id for job in lost],
            [job.queue for job in keyed],
            [job.key for job in keyed],
        )
        found = [decode(row) for row in rows]
        by_id = {record.id: record for record in found}
        by_key = {(r.queue, r.key): r for r in found if r.key is not None}
        for i, (job, record) in enumerate(zip(jobs, stored, strict=True)):
            if record is None:
                record = by_id.get(job.id) or by_key.get((job.queue, job.key or ""))
                if record is None:
                    msg = f"job {job.id} was neither stored nor found holding its key; retry"
                    raise BackendError(msg)
                stored[i] = record

    async def get(self, job_id: str) -> JobRecord | None:
        row = await self._run(lambda conn: conn.fetchrow(self._sql.get, job_id))
        return None if row is None else decode(row)

    async def cancel(self, job_id: str) -> JobRecord | None:
        row = await self._run(lambda conn: conn.fetchrow(self._sql.cancel, job_id))
        return None if row is None else decode(row)

    async def wait_finished(self, job_id: str) -> JobRecord | None:
        last: JobRecord | None = None
        listener = self._listener
        while True:
            if self._closed and last is not None:
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
            rows = await self._fetch(self._sql.claim_queue, names[0], limit, worker, lease_for)
        else:
            rows = await self._fetch(self._sql.claim, names, limit, worker, lease_for)
        leases = _leases(rows)
        if mark is not None and len(leases) < limit:
            # Fewer than asked for: every job ready and unlocked in these queues
            # when the claim ran is among them (or another claimer's).
            self._drained[key] = mark
        else:
            self._drained.pop(key, None)
        return leases

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        names = list(dict.fromkeys(queues))
        if self._closed or timeout <= 0:
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
                due = await self._fetchval(self._sql.wait_for_work, names) if names else None
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
        rows = await self._fetch(
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

    async def progress(self, lease: Lease, value: float) -> bool:
        held = await self._fetchval(self._sql.progress, lease.job.id, lease.token, value)
        return bool(held)

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        check_outcomes(outcomes)
        unique = _first_outcomes(outcomes)
        if not unique:
            return []
        if len(unique) == 1:
            [one] = unique
            error = None if one.error is None else _json.encode(one.error).decode()
            rows = await self._fetch(
                self._sql.settle_one,
                one.job_id,
                one.token,
                one.state.value,
                one.result,
                error,
                one.retry_at,
            )
            return _applied(outcomes, [one.job_id] if rows else None)
        row = await self._fetchrow(self._sql.settle, *_outcome_columns(unique))
        return _applied(outcomes, row[0])

    async def recover(self) -> int:
        row = await self._fetchrow(self._sql.recover)
        return int(row[0])

    async def prune(self) -> int:
        key = _lock_key("prune", self._schema)
        steps: list[tuple[str, tuple[float, ...]]] = [(self._sql.prune_expired, ())]
        if self._retention_completed is not None:
            steps.append((self._sql.prune_completed, (self._retention_completed,)))
        if self._retention_dead is not None:
            steps.append((self._sql.prune_dead, (self._retention_dead,)))

        async def run(conn: Connection) -> int:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                return 0
            total = 0
            try:
                for statement, extra in steps:
                    while True:
                        status = await conn.execute(statement, PRUNE_BATCH, *extra)
                        deleted = int(status.split()[-1])
                        total += deleted
                        if deleted < PRUNE_BATCH:
                            break
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await conn.execute("SELECT pg_advisory_unlock($1)", key)
                    except BaseException:
                        conn.terminate()  # a session lock must not stay in the pool
                        raise
            return total

        return await self._run(run)

    # -- operations --------------------------------------------------------------

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        names = None if queues is None else sorted(set(queues))
        rows = await self._fetch(self._sql.stats, names)
        found: dict[str, tuple[bool, dict[JobState, int], float | None]] = {}
        for name, paused, state, count, oldest in rows:
            entry = found.setdefault(name, (paused, dict.fromkeys(JobState, 0), oldest))
            if state is not None:
                entry[1][JobState(state)] = count
        for name in names or ():
            found.setdefault(name, (False, dict.fromkeys(JobState, 0), None))
        return [
            QueueStats(queue=name, counts=counts, paused=paused, oldest_ready_at=oldest)
            for name, (paused, counts, oldest) in sorted(found.items())
        ]

    async def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[JobRecord]:
        filters = {"state": state and state.value, "queue": queue, "name": name, "after": after}
        given = {column: value for column, value in filters.items() if value is not None}
        query = self._sql.list_jobs(tuple(given))
        rows = await self._fetch(query, *given.values(), limit)
        return [decode(row) for row in rows]

    async def retry_dead(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 1000,
    ) -> list[str]:
        args: tuple[object, ...]
        if job_ids is not None:
            ids = list(dict.fromkeys(job_ids))
            if not ids:
                return []
            query, args = self._sql.retry_dead_ids, (ids, len(ids))
        else:
            query, args = self._sql.retry_dead_filter, (queue, name, limit)

        async def run(conn: Connection) -> list[str]:
            # A concurrent enqueue may take a key between the snapshot and the
            # update; the statement then fails as a whole and is simply re-run.
            for _ in range(3):
                try:
                    row = await conn.fetchrow(query, *args)
                except asyncpg.UniqueViolationError:
                    continue
                assert row is not None
                return list(row[0] or ())
            row = await conn.fetchrow(query, *args)
            assert row is not None
            return list(row[0] or ())

        retried = await self._run(run)
        if job_ids is not None:
            done = set(retried)
            return [job_id for job_id in dict.fromkeys(job_ids) if job_id in done]
        return sorted(retried)

    async def purge(
        self,
        *,
        states: Sequence[JobState],
        older_than: float,
        queue: str | None = None,
        limit: int = 10_000,
    ) -> int:
        wanted = purgeable(states)
        if not wanted or limit <= 0:
            return 0
        status = await self._run(
            lambda conn: conn.execute(
                self._sql.purge, [s.value for s in wanted], older_than, queue, limit
            )
        )
        return int(status.split()[-1])

    async def set_paused(self, queue: str, paused: bool) -> None:
        await self._fetchval(self._sql.set_paused, queue, paused)

    capabilities: frozenset[Capability[Any]] = frozenset(
        {ENQUEUE_WAITED, MIGRATE, DROP, TRANSACTIONAL_ENQUEUE}
    )

    async def drop(self) -> None:
        """``drop_schema``: drop the schema and every job in it."""
        await self.drop_schema()


if TYPE_CHECKING:
    _check: type[Backend] = PostgresBackend
    _waited: type[EnqueuesWaited] = PostgresBackend
