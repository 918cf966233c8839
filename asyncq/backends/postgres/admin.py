"""The PostgreSQL backend's operator verbs: ``stats``, ``list_jobs``,
``retry_dead``, ``purge``, ``set_paused``, ``prune``, ``migrate`` and ``drop``.

None of them is on a worker's or a producer's path; ``PostgresBackend`` gets
them from ``_Operations``, so they share its transport and its statements.

Retention (``prune``) is the store-wide ``Retention``: completed jobs go when
their ``result_ttl`` has passed, other finished jobs once they finished longer
ago than their state's retention (``None`` keeps them), and, for a state with
a count cap, the oldest of each queue beyond it. ``prune`` deletes in
statements of at most ``PRUNE_BATCH`` rows, under an advisory lock on the
schema's name taken with ``pg_try_advisory_lock``: a ``prune`` that finds
another one running deletes nothing and returns at once, so workers pruning
at the same moment never wait for one another nor delete the same rows.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import asyncpg

from .._common import pop_retention
from .._verbs import DeadQuery, JobQuery, OperatorVerbs, PurgeQuery
from ..base import CircuitState, JobRecord, JobState, LimitState, QueueStats, Retention
from .codec import records
from .schema import lock_key
from .schema import migrate as apply_migrations

if TYPE_CHECKING:
    from .listen import Connection
    from .sql import Statements
    from .transport import Transport

__all__ = [
    "PRUNE_BATCH",
    "_UNSET",
    "_Operations",
    "_Unset",
    "prune_steps",
    "read_retention",
]


class _Unset(enum.Enum):
    """A retention keyword not given: ``retention=`` (or its default) decides."""

    UNSET = enum.auto()


_UNSET = _Unset.UNSET


def read_retention(retention: Retention | None, **given: object) -> Retention:
    """``PostgresBackend``'s retention: ``retention`` (or its default), then the keywords given.

    ``given``: the ``retention_*`` keywords, ``_UNSET`` when not given.
    """
    settings: dict[str, Any] = {"retention": retention}
    settings.update((name, value) for name, value in given.items() if value is not _UNSET)
    return pop_retention(settings)


#: Rows one prune statement deletes at most.
PRUNE_BATCH = 1_000

#: What ``prune`` runs, in order: each statement with its arguments after the batch size.
PruneSteps = list[tuple[str, tuple[float | int, ...]]]


def prune_steps(statements: Statements, retention: Retention) -> PruneSteps:
    """What ``prune`` runs under ``retention``, fixed for an instance.

    The expired results, then each finished state whose retention is not
    "for ever", then each state with a count cap.
    """
    kept = (
        (statements.prune_completed, retention.completed),
        (statements.prune_dead, retention.dead),
        (statements.prune_cancelled, retention.cancelled),
    )
    capped = {
        JobState.COMPLETED: statements.prune_capped_completed,
        JobState.DEAD: statements.prune_capped_dead,
        JobState.CANCELLED: statements.prune_capped_cancelled,
    }
    return [
        (statements.prune_expired, ()),
        *((statement, (keep,)) for statement, keep in kept if keep is not None),
        *((capped[state], (most,)) for state, most in retention.capped),
    ]


class _Operations(OperatorVerbs):
    """``PostgresBackend``'s operator verbs, on its transport and statements.

    The attributes below are ``PostgresBackend``'s, declared for the type checker.
    """

    if TYPE_CHECKING:
        _transport: Transport
        _sql: Statements
        _schema: str
        _prune_steps: PruneSteps

        async def _prune_events(self, conn: Connection) -> None: ...

        @property
        def _where(self) -> str: ...

    async def migrate(self) -> list[int]:
        """Create or upgrade the schema; return the versions applied (``[]``: up to date).

        Safe to run from many processes at once: the migrating transaction
        holds an advisory lock on the schema's name. Works before ``open``.

        Raises:
            ConfigurationError: the schema is newer than this asyncq.
        """
        async with self._transport.connection() as conn:
            return await apply_migrations(conn, self._sql, where=self._where)

    async def prune(self) -> int:
        key = lock_key("prune", self._schema)
        steps = self._prune_steps

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
                await self._prune_events(conn)
                # the counters of limit keys gone idle (not jobs: not in the total)
                while True:
                    status = await conn.execute(self._sql.prune_limits, PRUNE_BATCH)
                    if int(status.split()[-1]) < PRUNE_BATCH:
                        break
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await conn.execute("SELECT pg_advisory_unlock($1)", key)
                    except BaseException:
                        conn.terminate()  # a session lock must not stay in the pool
                        raise
            return total

        return await self._transport.run(run)

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts per queue, from the index each state is in.

        A job whose stored state is none of ``JobState`` (possible only if the
        table's constraint was dropped) is in none of them, and not counted.
        """
        names = None if queues is None else sorted(set(queues))
        rows = await self._transport.fetch(self._sql.stats, names)
        found: dict[str, tuple[bool, dict[JobState, int], float | None]] = {}
        for name, paused, state, count, oldest in rows:
            entry = found.setdefault(name, (paused, dict.fromkeys(JobState, 0), oldest))
            if state is not None:  # queued comes twice: jobs set aside by a limit apart
                entry[1][JobState(state)] += count
        for name in names or ():
            found.setdefault(name, (False, dict.fromkeys(JobState, 0), None))
        return [
            QueueStats(queue=name, counts=counts, paused=paused, oldest_ready_at=oldest)
            for name, (paused, counts, oldest) in sorted(found.items())
        ]

    async def limit_states(self) -> list[LimitState]:
        rows = await self._transport.fetch(self._sql.limit_states)
        return [
            LimitState(
                slot=slot,
                name=name,
                key=key,
                concurrency=concurrency,
                rate=rate,
                per=per,
                burst=burst,
                running=running,
                tokens=tokens,
                refilled_at=refilled_at,
                held=held,
            )
            for (
                slot,
                name,
                key,
                concurrency,
                rate,
                per,
                burst,
                running,
                tokens,
                refilled_at,
                held,
            ) in rows
        ]

    async def circuit_states(self) -> list[CircuitState]:
        return [_circuit(row) for row in await self._transport.fetch(self._sql.circuit_states)]

    async def set_circuit(self, name: str, *, open_: bool) -> list[CircuitState]:
        return [
            _circuit(row) for row in await self._transport.fetch(self._sql.set_circuit, name, open_)
        ]

    async def _list_jobs(self, query: JobQuery) -> list[JobRecord]:
        """Jobs in id order; a stand-in named ``<unreadable>`` for each that cannot be read."""
        state, queue, name, limit, after, newest, meta = query
        filters = {"state": state and state.value, "queue": queue, "name": name, "after": after}
        given = {column: value for column, value in filters.items() if value is not None}
        pairs = [part for pair in (meta or {}).items() for part in pair]
        statement = self._sql.list_jobs(tuple(given), newest, len(pairs) // 2)
        rows = await self._transport.fetch(statement, *given.values(), *pairs, limit)
        return records(rows, at=time.time())

    async def _retry_dead(self, query: DeadQuery) -> list[str]:
        args: tuple[object, ...]
        if query.job_ids is not None:
            ids = list(query.job_ids)
            statement, args = self._sql.retry_dead_ids, (ids, len(ids))
        else:
            statement, args = self._sql.retry_dead_filter, (query.queue, query.name, query.limit)

        async def run(conn: Connection) -> list[str]:
            # A concurrent enqueue may take a key between the snapshot and the
            # update; the statement then fails as a whole and is simply re-run.
            for _ in range(3):
                try:
                    row = await conn.fetchrow(statement, *args)
                except asyncpg.UniqueViolationError:
                    continue
                assert row is not None
                return list(row[0] or ())
            row = await conn.fetchrow(statement, *args)
            assert row is not None
            return list(row[0] or ())

        retried = await self._transport.run(run)
        if query.job_ids is not None:
            done = set(retried)
            return [job_id for job_id in query.job_ids if job_id in done]
        return sorted(retried)

    async def _purge(self, query: PurgeQuery) -> int:
        wanted, older_than, queue, limit = query
        status = await self._transport.run(
            lambda conn: conn.execute(
                self._sql.purge, [s.value for s in wanted], older_than, queue, limit
            )
        )
        return int(status.split()[-1])

    async def _remove(self, job_ids: tuple[str, ...]) -> list[JobState | None]:
        rows = await self._transport.run(lambda conn: conn.fetch(self._sql.remove, list(job_ids)))
        found = {row["id"]: None if row["expired"] else JobState(row["state"]) for row in rows}
        return [found.get(job_id) for job_id in job_ids]

    async def set_paused(self, queue: str, paused: bool) -> None:
        await self._transport.fetchval(self._sql.set_paused, queue, paused)

    async def drop(self) -> None:
        """Drop the schema and every job in it (tests, teardown). Works after ``close``."""
        async with self._transport.connection() as conn:
            await conn.execute(self._sql.drop)


def _circuit(row: Any) -> CircuitState:
    name, state, failures, opened_at, probe, threshold, within, reset_after = row
    return CircuitState(
        name=name,
        state=state,
        failures=tuple(failures),
        opened_at=opened_at,
        probe=probe,
        threshold=threshold,
        within=within,
        reset_after=reset_after,
    )
