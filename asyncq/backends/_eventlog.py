"""The event stream's parts shared by stores: ids as numbers, the in-process wake, the memory log.

Stores whose events carry a number (memory, SQLite, PostgreSQL) show it as
the event's id in decimal; ``event_number`` reads it back. ``EventSignal``
wakes ``wait_for_events`` callers in this process (memory, and SQLite's
writers in this process). ``EventLog`` is the memory store's stream.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence

import anyio
from msgspec.structs import replace

from .._events import EventPage, JobEvent
from ._retention import Retention

__all__ = ["EventLog", "EventSignal", "event_number", "lost_between"]


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


class EventLog:
    """The memory store's events: numbered from 1, kept in order, pruned by ``Retention``."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self._last = 0
        self._ids: list[int] = []
        self._events: dict[int, JobEvent] = {}
        # Per queue, the highest number prune deleted: a reader after less lost some.
        self._floors: dict[str, int] = {}
        self.signal = EventSignal()

    def add(self, events: Iterable[JobEvent]) -> None:
        """Number and keep ``events`` (their ``id`` is set here), and wake waiters."""
        for event in events:
            number = self._last = next(self._numbers)
            self._ids.append(number)
            self._events[number] = _with_id(event, number)
        self.signal.fire()

    def add_one(self, event: JobEvent) -> None:
        """``add([event])``."""
        number = self._last = next(self._numbers)
        self._ids.append(number)
        self._events[number] = _with_id(event, number)
        self.signal.fire()

    def clear(self) -> None:
        self._ids.clear()
        self._events.clear()
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
            kept = bisect.bisect_right(self._ids, floor) - bisect.bisect_right(self._ids, start)
            lost = lost_between(start, floor, kept)
        out: list[JobEvent] = []
        index = bisect.bisect_right(self._ids, start)
        while index < len(self._ids) and len(out) < limit:
            event = self._events[self._ids[index]]
            if wanted is None or event.queue in wanted:
                out.append(event)
            index += 1
        last = out[-1].id if out else after
        return EventPage(out, last, lost)

    def has_after(self, after: str | None, queues: Sequence[str] | None) -> bool:
        start = event_number(after)
        if not self._ids or self._ids[-1] <= start:
            return False
        if queues is None:
            return True
        wanted = frozenset(queues)
        index = bisect.bisect_right(self._ids, start)
        return any(self._events[n].queue in wanted for n in self._ids[index:])

    def of_job(self, job_id: str) -> list[JobEvent]:
        return [self._events[n] for n in self._ids if self._events[n].job_id == job_id]

    def prune(self, now: float, retention: Retention) -> int:
        """Delete the events retention says are old; return how many."""
        doomed: set[int] = set()
        if retention.events is not None:
            oldest = now - retention.events
            doomed.update(n for n in self._ids if self._events[n].at < oldest)
        if retention.max_events is not None:
            by_queue: dict[str, list[int]] = {}
            for n in self._ids:
                if n not in doomed:
                    by_queue.setdefault(self._events[n].queue, []).append(n)
            for numbers in by_queue.values():
                excess = len(numbers) - retention.max_events
                if excess > 0:
                    doomed.update(numbers[:excess])
        if not doomed:
            return 0
        for n in doomed:
            queue = self._events.pop(n).queue
            if n > self._floors.get(queue, 0):
                self._floors[queue] = n
        self._ids = [n for n in self._ids if n not in doomed]
        return len(doomed)


def _with_id(event: JobEvent, number: int) -> JobEvent:
    return replace(event, id=str(number))
