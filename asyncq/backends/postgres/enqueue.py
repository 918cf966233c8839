"""Storing new jobs in PostgreSQL: the statement each batch takes, and what it ran into.

``store`` sends a batch by the cheapest statement that keeps ``enqueue``'s
contract (see ``sql``), then matches the reply to the inputs: each input is
stored as given, or stands for the live job already holding its key, or the
job already stored under its id (a caller-chosen id, or a batch retried after
its reply was lost).

``conn`` is an asyncpg connection, or an ``Adapter`` of another driver's
connection (psycopg 3, see ``psycopg``): the same statements, without ``COPY``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import asyncpg
from msgspec.structs import replace

from ...exceptions import BackendError, UnknownParent
from ..base import JobRecord, JobState, stored_as_given
from .codec import columns, copy_records, headers_json, limits_json, meta_json, records
from .sql import COPY_COLUMNS

if TYPE_CHECKING:
    from .listen import Connection
    from .sql import Statements

__all__ = ["COPY_MIN_BATCH", "Adapter", "store"]

#: Batches this large (without keys, all asked for now) are copied in: below
#: it, the copy's extra round trips (its transaction, the copy's handshake,
#: the notification) cost more than the insert's per-row work it saves.
COPY_MIN_BATCH = 32


class Adapter(ABC):
    """Another driver's connection, as ``store`` uses an asyncpg connection.

    Rows are sequences in the column order of the statement, decoded as
    asyncpg decodes them (``json`` and ``jsonb`` as text, a ``ROW(...)`` as a
    sequence of typed values); ``transaction`` is a transaction, or a
    savepoint inside the caller's. An adapter copies nothing: large batches
    take the unnest insert.
    """

    @abstractmethod
    async def fetch(self, query: str, *args: Any) -> Sequence[Any]:
        """The rows ``query`` returns with ``$1``, ``$2``, ... bound to ``args``."""

    @abstractmethod
    async def execute(self, query: str, *args: Any) -> None:
        """Run ``query`` with ``args``; its rows, if any, are dropped."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """A transaction, or a savepoint when one is open: rolled back if the block raises."""


async def store(
    conn: Connection | Adapter, statements: Statements, jobs: Sequence[JobRecord]
) -> list[JobRecord]:
    """Store ``jobs`` through ``conn`` by the cheapest statement that keeps the contract.

    Batches with keys take the statement that frees and reports holders;
    a single job a VALUES row; a large batch of jobs asked for now is
    copied in (``_copy_in``); anything else takes the unnest insert. A batch
    with parents (``after=``) is inserted and linked in one transaction; one
    with limits (flow control) also writes them, in the same transaction.

    Raises:
        UnknownParent: a parent is not a job of its child's queue; nothing stored.
    """
    if not any(job.limits or job.circuit is not None for job in jobs):
        return await _store_any(conn, statements, jobs)
    async with conn.transaction():
        stored = await _store_any(conn, statements, jobs)
        mine = [new for new, job in zip(stored, jobs, strict=True) if stored_as_given(job, new)]
        await conn.execute(statements.set_limits, *limits_json(mine))
    return stored


async def _store_any(
    conn: Connection | Adapter, statements: Statements, jobs: Sequence[JobRecord]
) -> list[JobRecord]:
    if any(job.debounce is not None for job in jobs):
        return await _store_debounced(conn, statements, jobs)
    if any(job.parents for job in jobs):
        return await _store_linked(conn, statements, jobs)
    return await _store(conn, statements, jobs)


async def _store_linked(
    conn: Connection | Adapter, statements: Statements, jobs: Sequence[JobRecord]
) -> list[JobRecord]:
    """Insert ``jobs``, then record their parents and decide their state (``link``)."""
    try:
        async with conn.transaction():
            stored = await _store(conn, statements, jobs, keyed=True)
            new = [
                job
                for job, got in zip(jobs, stored, strict=True)
                if job.parents and stored_as_given(job, got)
            ]
            if not new:
                return stored
            await conn.execute(
                statements.link,
                [job.id for job in new],
                [job.after_failure for job in new],
                [job.id for job in new for _ in job.parents],
                [parent for job in new for parent in job.parents],
            )
            rows = await conn.fetch(statements.linked, [job.id for job in new])
    except Exception as exc:
        unknown = _unknown_parent(exc)
        if unknown is None:
            raise
        message, child_id = unknown
        child = next(job for job in jobs if job.id == child_id)
        raise UnknownParent(message, child.id, child.queue) from None
    now = {job.id: job for job in records(rows, at=time.time())}
    return [now.get(got.id, got) if got.parents else got for got in stored]


def _unknown_parent(exc: Exception) -> tuple[str, str] | None:
    """The message and the child's id of ``link``'s "unknown parent" error (``AQ001``).

    asyncpg's errors carry them as ``message`` and ``detail``, psycopg's in ``diag``.
    """
    if getattr(exc, "sqlstate", None) != "AQ001":
        return None
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc.message), str(exc.detail)
    diag = getattr(exc, "diag", None)
    return str(getattr(diag, "message_primary", exc)), str(getattr(diag, "message_detail", ""))


async def _store(
    conn: Connection | Adapter,
    statements: Statements,
    jobs: Sequence[JobRecord],
    *,
    keyed: bool = False,
) -> list[JobRecord]:
    if keyed or any(job.key is not None for job in jobs):
        rows = await conn.fetch(statements.enqueue, *columns(jobs, keyed=True))
    elif len(jobs) == 1:
        job = jobs[0]
        rows = await conn.fetch(statements.enqueue_one, *_one(job))
    else:
        if (
            len(jobs) >= COPY_MIN_BATCH
            and not isinstance(conn, Adapter)
            and all(j.scheduled_at <= j.enqueued_at for j in jobs)
        ):
            copied = await _copy_in(conn, statements, jobs)
            if copied is not None:
                return copied
        rows = await conn.fetch(statements.enqueue_plain, *columns(jobs, keyed=False))
    inserted: dict[str, str] = {}
    held: dict[str, Any] = {}
    for row in rows:
        if row[0]:
            inserted[row[1]] = row[2]
        else:
            held[row[1]] = row[3]
    # A holder whose record cannot be read is answered with its stand-in.
    holders = (
        dict(zip(held, records(list(held.values()), at=time.time()), strict=True)) if held else {}
    )
    stored: list[JobRecord | None] = []
    batch_holders: dict[tuple[str, str], JobRecord] = {}
    for job in jobs:
        # Popped: the same (caller-chosen) id again in the batch is the first as stored.
        state = inserted.pop(job.id, None)
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
        await _resolve_conflicts(conn, statements, jobs, stored)
    return [record for record in stored if record is not None]


#: Times a debounced enqueue runs again after another transaction stored a holder of its key.
_DEBOUNCE_TRIES = 5


async def _store_debounced(
    conn: Connection | Adapter, statements: Statements, jobs: Sequence[JobRecord]
) -> list[JobRecord]:
    """Store a batch holding debounced jobs: one statement a job, in order, in one transaction.

    A debounced job takes ``enqueue_debounced``; the others ``store`` alone,
    so that each sees what the earlier ones did (a batch behaves as if
    enqueued in order). Batches of debounced jobs are rare: they pay a round
    trip a job.
    """
    stored: list[JobRecord] = []
    async with conn.transaction():
        for job in jobs:
            if job.debounce is None:
                stored += await store(conn, statements, [job])
                continue
            stored.append(await _debounce(conn, statements, job))
    return stored


async def _debounce(
    conn: Connection | Adapter, statements: Statements, job: JobRecord
) -> JobRecord:
    """One debounced job (``sql.Statements.enqueue_debounced``): as stored, or the job it replaced.

    Another transaction may store a holder of the key between this
    statement's snapshot and its insert: the insert then does nothing, and
    the statement runs again, in a new snapshot that sees the holder.
    """
    for _ in range(_DEBOUNCE_TRIES):
        rows = await conn.fetch(statements.enqueue_debounced, *_one(job), job.key)
        if rows:
            new, _, state, rec = rows[0][:4]
            if new:
                return replace(job, state=JobState(state), debounce=None)
            [holder] = records([rec], at=time.time())
            return holder
    msg = (
        f"job {job.name!r} (id {job.id}, queue {job.queue!r}): a debounced enqueue with key "
        f"{job.key!r} met a holder stored by another transaction {_DEBOUNCE_TRIES} times; retry"
    )
    raise BackendError(msg)


async def _copy_in(
    conn: Connection, statements: Statements, jobs: Sequence[JobRecord]
) -> list[JobRecord] | None:
    """Store a batch of keyless jobs asked for now with ``COPY``; ``None`` if it cannot.

    A copy skips the executor's per-row work (about half the server's time
    for a thousand jobs) but computes nothing on the server, so what the
    insert statements decide there is settled around it, in the same
    transaction (the caller's, or one of its own): every job is
    ``queued``; the queues are recorded and notified once, and the jobs'
    ``enqueued`` events written, a run per queue; and if the
    producer's clock ran ahead of the server's, the batch's
    ``scheduled_at`` is pulled back to now (one more statement, only
    then), as ``enqueue`` promises. An id already stored (a batch retried
    after its reply was lost) fails the copy as a whole: ``None`` then
    sends the batch through the insert, which sorts that out.
    """
    records = copy_records(jobs)
    by_queue: dict[str, list[JobRecord]] = {}
    for job in jobs:
        by_queue.setdefault(job.queue, []).append(job)
    latest = max(j.scheduled_at for j in jobs)
    args: tuple[Any, ...] = (latest, list(by_queue))
    if statements.events:
        args += _runs(list(by_queue.values()))
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "jobs", schema_name=statements.schema, columns=COPY_COLUMNS, records=records
            )
            if await conn.fetchval(statements.enqueue_copied, *args):
                await conn.execute(statements.clamp_copied, [j.id for j in jobs])
    except asyncpg.UniqueViolationError:
        return None
    queued = JobState.QUEUED
    return [j if j.state is queued else replace(j, state=queued) for j in jobs]


def _runs(groups: Sequence[Sequence[JobRecord]]) -> tuple[Any, ...]:
    """The ``enqueued`` events of a batch copied in: ``enqueue_copied``'s $3 to $7.

    A run per queue (``groups``, in the order of ``enqueue_copied``'s $2): the name
    its jobs share (or ``None``), and the bounds of its jobs in the ids and
    names that follow (names only when the jobs of some queue differ).
    """
    shared: list[str | None] = []
    firsts: list[str] = []  # numbers as text (see ``event_sql``)
    lasts: list[str] = []
    last = 0
    for group in groups:
        name = group[0].name
        shared.append(name if all(job.name == name for job in group) else None)
        firsts.append(str(last + 1))
        last += len(group)
        lasts.append(str(last))
    ids = [job.id for group in groups for job in group]
    names = None if None not in shared else [job.name for group in groups for job in group]
    return shared, firsts, lasts, ids, names


async def _resolve_conflicts(
    conn: Connection | Adapter,
    statements: Statements,
    jobs: Sequence[JobRecord],
    stored: list[JobRecord | None],
) -> None:
    """Find what the inputs neither stored nor matched in the snapshot ran into.

    Either a holder of the key committed by another transaction after the
    insert's snapshot was taken, or this very input stored by an earlier
    try of the same batch. Both are visible to a new statement.
    """
    lost = [job for job, record in zip(jobs, stored, strict=True) if record is None]
    keyed = [job for job in lost if job.key is not None]
    rows = await conn.fetch(
        statements.lookup,
        [job.id for job in lost],
        [job.queue for job in keyed],
        [job.key for job in keyed],
    )
    found = records(rows, at=time.time())
    by_id = {record.id: record for record in found}
    by_key = {(r.queue, r.key): r for r in found if r.key is not None}
    for i, (job, record) in enumerate(zip(jobs, stored, strict=True)):
        if record is None:
            record = by_id.get(job.id) or by_key.get((job.queue, job.key or ""))
            if record is None:
                msg = f"job {job.id} was neither stored nor found holding its key; retry"
                raise BackendError(msg)
            stored[i] = record


def _one(job: JobRecord) -> tuple[Any, ...]:
    """The parameters of a statement that stores one job (``enqueue_one``'s 13)."""
    return (
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
        headers_json(job),
        meta_json(job),
    )
