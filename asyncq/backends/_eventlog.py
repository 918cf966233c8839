"""The event stream's parts shared by stores: ids as numbers, the in-process wake, the memory log.

Stores whose events carry a number (memory, SQLite, PostgreSQL) show it as
the event's id in decimal; ``event_number`` reads it back. ``EventSignal``
wakes ``wait_for_events`` callers in this process (memory, and SQLite's
writers in this process). ``EventLog`` is the memory store's stream.
``pack`` and ``unpack`` keep the events of one write as one ``bytes`` (the
memory store's log, SQLite's rows).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import anyio
import msgspec

from .._events import (
    EventFields,
    EventPage,
    JobEvent,
    event_fields,
    fields_event,
)
from ._retention import Retention

__all__ = ["EventLog", "EventSignal", "event_number", "lost_between", "pack", "unpack"]


def event_number(after: str | None) -> int:
    """The number an event id of a numbering store stands for (0 for ``None``).

    Raises:
        ValueError: ``after`` is not such an id.
    """
    if after is None:
        return 0
    try:
        number = int(after)
    except ValueError:
        number = -1
    if number < 0 or not after.isascii() or not after.isdigit():
        msg = f"{after!r} is not an event id of this store: ids are whole numbers (see read_events)"
        raise ValueError(msg)
    return number


def lost_between(after: int, floor: int, kept: int) -> int:
    """Events pruned unread: the numbers in ``(after, floor]`` less the ``kept`` ones among them."""
    return max(0, floor - after - kept) if floor > after else 0


class EventSignal:
    """Wakes this process's ``wait_for_events`` callers when an event is written."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def waiter(self) -> anyio.Event:
        """The event the next ``fire`` sets: take it, then read the store, then wait."""
        if self._event is None:
            self._event = anyio.Event()
        return self._event

    def fire(self) -> None:
        """Wake every waiter (costs a field check when nobody waits)."""
        event = self._event
        if event is not None:
            self._event = None
            event.set()


class _Batch(NamedTuple):
    """The events of one write to an ``EventLog``."""

    numbers: Sequence[int]  # ascending: a range as written, a list once prune took some out
    oldest: float  # the earliest ``at`` among them
    data: bytes  # their EventFields, packed (``pack``)


class EventLog:
    """The memory store's events: numbered from 1, kept in order, pruned by ``Retention``.

    The events of one write (an ``enqueue``, a ``claim``, a ``settle``: one
    critical section) are kept together, as their ``EventFields`` packed in
    MessagePack: one ``bytes`` per write costs the writer little and leaves the
    garbage collector nothing to track, where a struct or tuple per event would
    not. A reader unpacks them and makes its events when it reads.
    """

    def __init__(self) -> None:
        self._last = 0
        self._batches: list[_Batch] = []
        self._ends: list[int] = []  # each batch's last number, ascending (to bisect)
        # Per queue, the highest number prune deleted: a reader after less lost some.
        self._floors: dict[str, int] = {}
        self.signal = EventSignal()

    def extend(self, fields: Sequence[EventFields], oldest: float) -> None:
        """Number and keep the events of ``fields``, and wake waiters.

        ``oldest``: the earliest ``at`` among them (a writer's clock reading,
        the same for each of its events).
        """
        if not fields:
            return
        first = self._last + 1
        self._last = last = self._last + len(fields)
        self._batches.append(_Batch(range(first, last + 1), oldest, pack(fields)))
        self._ends.append(last)
        self.signal.fire()

    def add(self, events: Sequence[JobEvent]) -> None:
        """Number and keep ``events`` (their ``id`` is ignored), and wake waiters."""
        if events:
            self.extend([event_fields(event) for event in events], min(e.at for e in events))

    def add_one(self, event: JobEvent) -> None:
        """``add([event])``."""
        self.extend([event_fields(event)], event.at)

    def clear(self) -> None:
        self._batches.clear()
        self._ends.clear()
        self._floors.clear()

    @property
    def last(self) -> int:
        """The number of the last event written (0 before any)."""
        return self._last

    def read(self, after: str | None, queues: Sequence[str] | None, limit: int) -> EventPage:
        start = event_number(after)
        wanted = None if queues is None else frozenset(queues)
        floors = (
            self._floors.values()
            if wanted is None
            else (self._floors.get(queue, 0) for queue in wanted)
        )
        floor = max(floors, default=0)
        lost = 0
        if after is not None and floor > start:
            lost = lost_between(start, floor, self._kept_between(start, floor))
        out: list[JobEvent] = []
        for number, fields in self._after(start):
            if len(out) >= limit:
                break
            if wanted is None or fields[_QUEUE] in wanted:
                out.append(fields_event(str(number), fields))
        last = out[-1].id if out else after
        return EventPage(out, last, lost)

    def has_after(self, after: str | None, queues: Sequence[str] | None) -> bool:
        start = event_number(after)
        if not self._ends or self._ends[-1] <= start:
            return False
        if queues is None:
            return True
        wanted = frozenset(queues)
        return any(fields[_QUEUE] in wanted for _, fields in self._after(start))

    def of_job(self, job_id: str) -> list[JobEvent]:
        return [
            fields_event(str(number), fields)
            for number, fields in self._after(0)
            if fields[_JOB_ID] == job_id
        ]

    def _after(self, start: int) -> Iterator[tuple[int, EventFields]]:
        """Each kept event numbered above ``start``, in order: its number and fields."""
        batches = self._batches
        for index in range(bisect.bisect_right(self._ends, start), len(batches)):
            numbers, _, data = batches[index]
            for number, fields in zip(numbers, unpack(data), strict=True):
                if number > start:
                    yield number, fields

    def _kept_between(self, start: int, end: int) -> int:
        """How many kept events are numbered in ``(start, end]``."""
        kept = 0
        batches = self._batches
        for index in range(bisect.bisect_right(self._ends, start), len(batches)):
            numbers = batches[index].numbers
            if numbers[0] > end:
                break
            kept += bisect.bisect_right(numbers, end) - bisect.bisect_right(numbers, start)
        return kept

    def prune(self, now: float, retention: Retention) -> int:
        """Delete the events retention says are old; return how many."""
        cutoff = -math.inf if retention.events is None else now - retention.events
        cap = retention.max_events
        batches = self._batches
        # Without a cap, only a batch holding an event older than the cutoff loses any.
        touched = [i for i, batch in enumerate(batches) if cap is not None or batch.oldest < cutoff]
        unpacked = {i: unpack(batches[i].data) for i in touched}
        doomed = {i: [fields[_AT] < cutoff for fields in unpacked[i]] for i in touched}
        if cap is not None:
            by_queue: dict[str, list[tuple[int, int]]] = {}
            for i in touched:
                for j, fields in enumerate(unpacked[i]):
                    if not doomed[i][j]:
                        by_queue.setdefault(fields[_QUEUE], []).append((i, j))
            for places in by_queue.values():
                for i, j in places[: max(0, len(places) - cap)]:
                    doomed[i][j] = True
        deleted = 0
        floors = self._floors
        rewritten: dict[int, _Batch | None] = {}
        for i in touched:
            if not any(doomed[i]):
                continue
            kept: list[tuple[int, EventFields]] = []
            for number, fields, gone in zip(
                batches[i].numbers, unpacked[i], doomed[i], strict=True
            ):
                if not gone:
                    kept.append((number, fields))
                    continue
                deleted += 1
                if number > floors.get(fields[_QUEUE], 0):
                    floors[fields[_QUEUE]] = number
            rewritten[i] = (
                _Batch(
                    [number for number, _ in kept],
                    min(fields[_AT] for _, fields in kept),
                    pack([fields for _, fields in kept]),
                )
                if kept
                else None
            )
        if rewritten:
            self._batches = [
                batch
                for i, original in enumerate(batches)
                if (batch := rewritten.get(i, original)) is not None
            ]
            self._ends = [batch.numbers[-1] for batch in self._batches]
        return deleted


# Where EventFields hold what the log looks at (JobEvent's order, less its id).
_JOB_ID, _QUEUE, _AT = 1, 3, 4

# -- events packed -------------------------------------------------------------------
# A write's events, kept as one MessagePack array of their EventFields, are read
# back through a struct of JobEvent's fields after its id, with their types and
# defaults (made from JobEvent's, not retyped).
_Packed: Any = msgspec.defstruct(
    "_Packed",
    [
        (field.name, field.type) if field.required else (field.name, field.type, field.default)
        for field in msgspec.structs.fields(JobEvent)[1:]
    ],
    array_like=True,
    frozen=True,
    gc=False,
)
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[_Packed])


def pack(fields: Sequence[EventFields]) -> bytes:
    """The events of ``fields`` (``EventFields``) as one ``bytes``, for ``unpack``."""
    return _encoder.encode(fields)


def unpack(data: bytes) -> list[EventFields]:
    """The ``EventFields`` that ``pack`` made ``data`` of (their kind an ``EventKind``)."""
    return [msgspec.structs.astuple(packed) for packed in _decoder.decode(data)]
