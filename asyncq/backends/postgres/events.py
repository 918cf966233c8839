"""The PostgreSQL backend's job event stream: reading, waiting, pruning.

The events are written by the statements that change the jobs (see
``event_sql``), in the same statement. An event's id is its row's identity
number in decimal; the events of a run (one row for the jobs of one queue a
batch copied in, or a claim took: see ``schema``) are that number, a dot and
their place in it (``"41.3"``), and a reader after a run's number has read
the whole run. A
follower wakes on the notices those statements send anyway
(work, later, done) and on ``<schema>:events`` (progress and log lines,
which send no other); a claim sends none, so a follower also looks again
every ``UNANNOUNCED`` seconds: a ``started`` event reaches it within that
bound, or with the next notice.

Numbers are taken when a row is inserted, but seen when its transaction
commits: a transaction still open leaves a gap that a later number, already
committed, is past. A reader therefore stops before a gap younger than
``GAP_GRACE`` seconds (by the later row's ``written``, the insert's wall
clock), and reads past it once it is older: the number was rolled back, or
its transaction stayed open longer than that and its events are missed by a
reader already past them (the job's history keeps them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from ..._events import EventKind, EventPage, JobEvent
from ..._records import LogLine
from .._eventlog import event_number, lost_between
from ..base import Retention
from .listen import Listener, ListenerClosed

if TYPE_CHECKING:
    from .transport import Transport

__all__ = ["GAP_GRACE", "UNANNOUNCED", "EventStatements", "EventStream"]

#: Seconds a reader waits for a gap in the numbers to fill before it reads past it.
GAP_GRACE = 5.0
#: Seconds a follower waits at most between looks (claims announce nothing).
UNANNOUNCED = 1.0
#: Numbers a read looks through at most, for gaps and for the queues asked for.
_SCAN = 10_000
#: Events one prune statement deletes at most.
_PRUNE_BATCH = 1_000

_decode = msgspec.json.Decoder(JobEvent).decode
_decode_line = msgspec.json.Decoder(LogLine).decode

# The events of a row ``e``: one (``x``: job_id, name, attempt, place 1), or a run's.
_EXPAND = """
    CROSS JOIN LATERAL unnest(coalesce(e.job_ids, ARRAY[e.job_id]), e.names, e.attempts)
        WITH ORDINALITY AS x(job_id, name, attempt, place)
"""
# An event as the JSON of a JobEvent, and the raw line of a ``log`` event
# (``body``: the fields of an event written before they had columns).
_ROW = """
    (jsonb_build_object(
        'id', e.id::text || CASE WHEN e.job_ids IS NULL THEN '' ELSE '.' || x.place END,
        'kind', e.kind, 'job_id', x.job_id, 'name', coalesce(x.name, e.name),
        'queue', e.queue, 'at', e.at)
     || jsonb_strip_nulls(jsonb_build_object(
        'attempt', coalesce(x.attempt, e.attempt), 'worker', e.worker, 'error', e.error,
        'due', e.due, 'duration', e.duration, 'by', e.actor, 'progress', e.progress))
     || CASE WHEN e.detail IS NULL THEN '{}' ELSE jsonb_build_object('detail', e.detail) END
     || coalesce(e.body - 'line', '{}'))::text,
    coalesce(e.line, e.body ->> 'line')
"""


def _position(after: str | None) -> tuple[int, int | None]:
    """Where an event id stands: its row's number, and its place in a run (``None``: all of it).

    Raises:
        ValueError: ``after`` is not an event id of PostgreSQL's.
    """
    if after is None:
        return 0, None
    number, dot, place = after.partition(".")
    try:
        return event_number(number), event_number(place) if dot else None
    except ValueError:
        msg = (
            f"{after!r} is not an event id of this store: ids are whole numbers, "
            "or two joined by a dot (see read_events)"
        )
        raise ValueError(msg) from None


class EventStatements:
    """The event stream's statements, for one schema (a name ``schema.check_name`` passed)."""

    def __init__(self, schema: str) -> None:
        s = f'"{schema}"'
        now = "extract(epoch from clock_timestamp())::float8"
        # Up to $3 numbers after $1: the first gap younger than the grace ($4)
        # of numbers above every pruned one ($6), then the page of the queues
        # asked for ($2, NULL: all) before it, from the place after $7 in
        # the run numbered $1 (NULL: none of it).
        self.read = f"""
            WITH scanned AS (
                SELECT id, written,
                       id - coalesce(lag(id) OVER (ORDER BY id), $1) AS step
                FROM {s}.events WHERE id > $1 ORDER BY id LIMIT $3
            ),
            bound AS (
                SELECT coalesce(
                    (SELECT id - step FROM scanned
                     WHERE step > 1 AND written > {now} - $4 AND id - 1 > $6
                     ORDER BY id LIMIT 1),
                    (SELECT max(id) FROM scanned), $1) AS upto
            )
            SELECT bound.upto, page.* FROM bound LEFT JOIN LATERAL (
                SELECT {_ROW} FROM {s}.events e {_EXPAND}
                WHERE e.id >= $1 AND e.id <= bound.upto AND (e.id > $1 OR x.place > $7)
                  AND ($2::text[] IS NULL OR e.queue = ANY($2::text[]))
                ORDER BY e.id, x.place LIMIT $5
            ) AS page ON true
        """
        self.floors = f"SELECT coalesce(max(pruned_through), 0) FROM {s}.event_floors"
        self.floor = f"""
            SELECT coalesce(max(pruned_through), 0) FROM {s}.event_floors
            WHERE $1::text[] IS NULL OR queue = ANY($1::text[])
        """
        self.kept = f"SELECT count(*) FROM {s}.events WHERE id > $1 AND id <= $2"
        self.newer = f"""
            SELECT EXISTS (SELECT FROM {s}.events
                WHERE id >= $1 AND (id > $1 OR cardinality(job_ids) > $3)
                  AND ($2::text[] IS NULL OR queue = ANY($2::text[])))
        """
        self.job = f"""
            SELECT {_ROW} FROM {s}.events e {_EXPAND}
            WHERE (e.job_id = $1 OR e.job_ids @> ARRAY[$1::text COLLATE "C"])
              AND x.job_id = $1
            ORDER BY e.id, x.place
        """
        self.latest = f"SELECT max(id) FROM {s}.events"
        # Prune by age, then by count per queue, a batch at a time, noting the floors.
        # By age: of the first $1 numbers, those before the first one younger
        # than $2 seconds (numbers follow time but for open transactions: an
        # old event after a younger one goes with the next batch after it).
        self.prune_old = f"""
            WITH gone AS (
                DELETE FROM {s}.events WHERE id IN (
                    SELECT id FROM (
                        SELECT id, bool_and(at < {now} - $2) OVER (ORDER BY id) AS old
                        FROM (SELECT id, at FROM {s}.events ORDER BY id LIMIT $1
                              FOR UPDATE SKIP LOCKED) AS first
                    ) AS aged
                    WHERE aged.old)
                RETURNING id, queue
            ),
            floors AS (
                INSERT INTO {s}.event_floors AS f (queue, pruned_through)
                SELECT queue, max(id) FROM gone GROUP BY queue
                ON CONFLICT (queue) DO UPDATE
                    SET pruned_through = greatest(f.pruned_through, excluded.pruned_through)
            )
            SELECT count(*) FROM gone
        """
        # By count: the rows whose events all come after the newest $2 of their queue.
        self.prune_capped = f"""
            WITH gone AS (
                DELETE FROM {s}.events WHERE id IN (
                    SELECT id FROM (
                        SELECT id, sum(coalesce(cardinality(job_ids), 1))
                                   OVER (PARTITION BY queue ORDER BY id DESC)
                               - coalesce(cardinality(job_ids), 1) AS newer
                        FROM {s}.events) AS r
                    WHERE newer >= $2 ORDER BY id LIMIT $1)
                RETURNING id, queue
            ),
            floors AS (
                INSERT INTO {s}.event_floors AS f (queue, pruned_through)
                SELECT queue, max(id) FROM gone GROUP BY queue
                ON CONFLICT (queue) DO UPDATE
                    SET pruned_through = greatest(f.pruned_through, excluded.pruned_through)
            )
            SELECT count(*) FROM gone
        """


def _event(body: str, line: str | None) -> JobEvent:
    event = _decode(body)
    if event.kind is EventKind.LOG and line is not None:
        try:
            logged = _decode_line(line)
        except msgspec.DecodeError:
            return msgspec.structs.replace(event, message=line)
        return msgspec.structs.replace(
            event,
            at=logged.at,
            attempt=logged.attempt,
            level=logged.level,
            message=logged.message,
        )
    return event


class EventStream:
    """``PostgresBackend``'s ``HasEvents`` methods, on its transport.

    The attributes below are ``PostgresBackend``'s, declared for the type checker.
    """

    if TYPE_CHECKING:
        _transport: Transport
        _retention: Retention
        _poll_interval: float
        _event_sql: EventStatements
        _event_listener: Listener

    async def read_events(
        self, *, after: str | None, queues: Sequence[str] | None, limit: int
    ) -> EventPage:
        start, place = _position(after)
        wanted = None if queues is None else list(dict.fromkeys(queues))

        async def read(conn: Any) -> EventPage:
            lost = 0
            pruned = await conn.fetchval(self._event_sql.floors)
            if after is not None and pruned > start:
                floor = await conn.fetchval(self._event_sql.floor, wanted)
                if floor > start:
                    kept = await conn.fetchval(self._event_sql.kept, start, floor)
                    lost = lost_between(start, floor, kept)
            rows = await conn.fetch(
                self._event_sql.read,
                start,
                wanted,
                _SCAN,
                GAP_GRACE,
                max(0, limit),
                pruned,
                place,
            )
            events = [_event(row[1], row[2]) for row in rows if row[1] is not None]
            upto = rows[0][0] if rows else start
            last: str | None = after
            if len(events) >= limit and events:
                last = events[-1].id
            elif upto > start or events:  # every event up to ``upto`` was looked at
                last = str(upto)
            return EventPage(events, last, lost)

        return await self._transport.run(read)

    async def wait_for_events(
        self, queues: Sequence[str] | None, after: str | None, timeout: float
    ) -> None:
        if self._transport.closed or timeout <= 0:
            return
        wanted = None if queues is None else list(dict.fromkeys(queues))
        number, place = _position(after)
        listener = self._event_listener
        with listener.work_waiter([""]) as heard:
            try:
                with self._transport.mapped():
                    await listener.ensure()
            except ListenerClosed:
                return  # closed meanwhile
            if await self._transport.fetchval(self._event_sql.newer, number, wanted, place):
                return
            with anyio.move_on_after(min(timeout, self._poll_interval, UNANNOUNCED)):
                await heard.wait()

    async def job_events(self, job_id: str) -> list[JobEvent]:
        rows = await self._transport.fetch(self._event_sql.job, job_id)
        return [_event(row[0], row[1]) for row in rows]

    async def latest_event_id(self, queues: Sequence[str] | None) -> str:
        latest = await self._transport.fetchval(self._event_sql.latest)
        return str(latest or 0)

    async def _prune_events(self, conn: Any) -> None:
        """Delete the events the retention says are old, in bounded batches."""
        steps: list[tuple[str, float | int]] = []
        if self._retention.events is not None:
            steps.append((self._event_sql.prune_old, self._retention.events))
        if self._retention.max_events is not None:
            steps.append((self._event_sql.prune_capped, self._retention.max_events))
        for statement, setting in steps:
            while await conn.fetchval(statement, _PRUNE_BATCH, setting) >= _PRUNE_BATCH:
                pass
