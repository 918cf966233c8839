"""Throughput over the last hour, and waiting for the store to change.

``Monitor`` counts jobs completed and gone dead per queue and minute. With a
store that keeps job events it reads them (one cursor for the whole dashboard,
so every open page shares the reads): exact counts from the moment the
dashboard first looked. Without events it takes the difference of the
completed and dead counters between two snapshots of ``Admin.status``: jobs
purged or pruned meanwhile lower the counters, so the chart then shows a floor.
Either way the chart covers what the dashboard saw since it started, up to an
hour: it keeps no history in the store.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from .._events import EventKind
from .._records import JobState
from ..admin import Status
from ..backends.base import EVENTS, Backend, HasEvents

__all__ = ["Chart", "Monitor", "chart"]

#: Minutes the chart shows.
WINDOW = 60
#: Event pages read per refresh before the monitor skips ahead (a backlog it
#: cannot read within a page's time budget is marked as a gap instead).
MAX_PAGES = 4
PAGE = 500
#: Seconds between two polls of a store that keeps no events.
POLL = 3.0
#: Seconds a page waits on the store's push before it refreshes anyway.
WAIT = 15.0


def store_events(backend: Backend) -> HasEvents | None:
    """The store's event stream if it writes events, else ``None``."""
    store = EVENTS.of(backend)
    return store if store is not None and store.events else None


@dataclass
class Chart:
    """One inline SVG chart: two polylines (completed, dead) over ``WINDOW`` minutes."""

    completed: str
    dead: str
    peak: int
    total_completed: int
    total_dead: int
    since: float
    width: int
    height: int


class Monitor:
    """Per-queue counts of jobs completed and gone dead, per minute, as the dashboard saw them."""

    def __init__(self) -> None:
        self.started = time.time()
        self._lock = anyio.Lock()
        self._cursor: str | None = None
        self._previous: Status | None = None
        #: queue -> minute -> [completed, dead]
        self._bins: dict[str, dict[int, list[int]]] = defaultdict(dict)
        self.source = "counters"

    @property
    def cursor(self) -> str | None:
        """The last event id read (with events), for waiting on what comes after it."""
        return self._cursor

    async def observe(self, backend: Backend, status: Status) -> None:
        """Count what happened since the last call (events, else the counters of ``status``)."""
        async with self._lock:
            store = store_events(backend)
            if store is not None:
                self.source = "events"
                await self._read_events(store)
            else:
                self.source = "counters"
                self._diff(status)
            self._previous = status
            self._trim(status.at)

    async def _read_events(self, store: HasEvents) -> None:
        if self._cursor is None:
            self._cursor = await store.latest_event_id(None)
            return
        for _ in range(MAX_PAGES):
            page = await store.read_events(after=self._cursor, queues=None, limit=PAGE)
            for event in page.events:
                if event.kind is EventKind.COMPLETED:
                    self._add(event.queue, event.at, 0)
                elif event.kind is EventKind.DEAD:
                    self._add(event.queue, event.at, 1)
            moved = page.last_id != self._cursor
            self._cursor = page.last_id
            if not moved or len(page.events) < PAGE:
                return
        # Too far behind to catch up within a page's budget: skip to now.
        self._cursor = await store.latest_event_id(None)

    def _diff(self, status: Status) -> None:
        previous = self._previous
        if previous is None or status.at <= previous.at:
            return
        before = {q.queue: q.counts for q in previous.queues}
        for queue in status.queues:
            old = before.get(queue.queue)
            if old is None:
                continue
            for column, state in enumerate((JobState.COMPLETED, JobState.DEAD)):
                delta = queue.counts.get(state, 0) - old.get(state, 0)
                if delta > 0:
                    self._add(queue.queue, status.at, column, delta)

    def _add(self, queue: str, at: float, column: int, count: int = 1) -> None:
        cell = self._bins[queue].setdefault(int(at // 60), [0, 0])
        cell[column] += count

    def _trim(self, now: float) -> None:
        oldest = int(now // 60) - WINDOW
        for minutes in self._bins.values():
            for minute in [m for m in minutes if m <= oldest]:
                del minutes[minute]

    def per_minute(self, queues: Sequence[str], now: float) -> list[tuple[int, int]]:
        """(completed, dead) for each of the last ``WINDOW`` minutes, oldest first, summed."""
        current = int(now // 60)
        series = []
        for minute in range(current - WINDOW + 1, current + 1):
            completed = dead = 0
            for queue in queues:
                cell = self._bins.get(queue, {}).get(minute)
                if cell is not None:
                    completed += cell[0]
                    dead += cell[1]
            series.append((completed, dead))
        return series

    def chart(self, queues: Sequence[str], now: float, *, width: int, height: int) -> Chart:
        """The last hour of ``queues`` as an inline SVG chart of ``width`` x ``height``."""
        return chart(
            self.per_minute(queues, now), max(self.started, now - WINDOW * 60), width, height
        )


def chart(series: Sequence[tuple[int, int]], since: float, width: int, height: int) -> Chart:
    """Polyline points for ``series`` scaled into ``width`` x ``height`` (2 px margins)."""
    peak = max([1, *(max(c, d) for c, d in series)])
    step = (width - 4) / max(len(series) - 1, 1)

    def points(column: int) -> str:
        out = []
        for i, cell in enumerate(series):
            x = 2 + i * step
            y = height - 2 - (height - 4) * cell[column] / peak
            out.append(f"{x:.1f},{y:.1f}")
        return " ".join(out)

    return Chart(
        completed=points(0),
        dead=points(1),
        peak=peak,
        total_completed=sum(c for c, _ in series),
        total_dead=sum(d for _, d in series),
        since=since,
        width=width,
        height=height,
    )


async def wait_for_change(backend: Backend, queues: Sequence[str], after: str | None) -> None:
    """Return when the store may have changed: woken by its events, else after ``POLL``."""
    store = store_events(backend)
    if store is None or after is None:
        await anyio.sleep(POLL)
        return
    with anyio.move_on_after(WAIT + 1):
        await store.wait_for_events(list(queues) or None, after, WAIT)
