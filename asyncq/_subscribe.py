"""Following the job event stream: ``App.events(...)``.

A subscription reads the store's events in pages (``HasEvents.read_events``)
after the last id it handed out, filters them by name and kind here (the
store filters by queue), and between pages waits for the store to say there
is more (``wait_for_events``). It yields ``EventsLost`` where the store
pruned events it had not read yet, and goes on with the oldest kept.

Delivery is at-least-once and in order per job: a subscriber that restarts
with ``since=`` the last id it processed gets every later event once, in
the store's order.
"""

from __future__ import annotations

import collections
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from ._events import EventKind, EventsLost, JobEvent
from .backends.base import EVENTS, Backend, HasEvents
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from types import TracebackType

    from ._app import App

__all__ = ["EventSubscription", "job_history"]

#: Events one read asks the store for.
PAGE = 500
#: Seconds one wait for new events lasts at most, before reading again.
WAIT = 5.0


class EventSubscription:
    """The events of an app's store as they happen: ``async with app.events(...) as stream``.

    Iterate it (``async for event in stream``) for ``JobEvent``\\ s, and an
    ``EventsLost`` where the store pruned events before they were read.
    ``last_id`` is the id of the last event handed out: pass it as
    ``since=`` to resume after a restart.

    Args:
        app: whose store to follow.
        queues: only these queues (default: every queue).
        names: only jobs of these names.
        kinds: only these kinds (``EventKind`` or their values).
        since: an event id (resume right after it), or a time (a ``datetime``
            or epoch seconds: the kept events from then on). ``None``: from now.
    """

    def __init__(
        self,
        app: App,
        *,
        queues: Sequence[str] | None = None,
        names: Collection[str] | None = None,
        kinds: Collection[EventKind | str] | None = None,
        since: str | datetime | float | None = None,
    ) -> None:
        self._app = app
        self._queues = None if queues is None else list(queues)
        self._names = None if names is None else frozenset(names)
        self._kinds = None if kinds is None else frozenset(EventKind(k) for k in kinds)
        self._since = since
        self._after: str | None = None
        self._from: float | None = None
        self._store: HasEvents | None = None
        self._ready: collections.deque[JobEvent | EventsLost] = collections.deque()

    @property
    def last_id(self) -> str | None:
        """The id to resume after: the last event handed out (or looked past)."""
        return self._after

    async def __aenter__(self) -> EventSubscription:
        backend = await self._app.backend_opened()
        store = EVENTS.of(backend)
        if store is None:
            msg = f"the store {backend.url} keeps no job events (it does not offer EVENTS)"
            raise ConfigurationError(msg)
        self._store = store
        since = self._since
        if isinstance(since, str):
            self._after = since
        elif since is None:
            self._after = await store.latest_event_id(self._queues)
        else:
            self._from = since.timestamp() if isinstance(since, datetime) else float(since)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._store = None

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> JobEvent | EventsLost:
        store = self._store
        if store is None:
            msg = "use the subscription inside `async with app.events(...) as stream`"
            raise RuntimeError(msg)
        while not self._ready:
            if not await self._read(store):
                await store.wait_for_events(self._queues, self._after, WAIT)
        return self._ready.popleft()

    async def available(self) -> list[JobEvent | EventsLost]:
        """What the store holds now after the last id, without waiting for more."""
        store = self._store
        if store is None:
            msg = "use the subscription inside `async with app.events(...) as stream`"
            raise RuntimeError(msg)
        while await self._read(store):
            pass
        found = list(self._ready)
        self._ready.clear()
        return found

    async def _read(self, store: HasEvents) -> bool:
        """Read a page; whether it moved (the next read may find more at once)."""
        page = await store.read_events(after=self._after, queues=self._queues, limit=PAGE)
        if page.lost:
            self._ready.append(EventsLost(page.lost, self._after))
        moved = page.last_id != self._after
        self._after = page.last_id
        for event in page.events:
            if self._wanted(event):
                self._ready.append(event)
        return moved

    def _wanted(self, event: JobEvent) -> bool:
        return (
            (self._names is None or event.name in self._names)
            and (self._kinds is None or event.kind in self._kinds)
            and (self._from is None or event.at >= self._from)
        )


async def job_history(backend: Backend, job_id: str) -> list[JobEvent]:
    """``backend``'s events of one job, in order (``[]`` if it keeps none)."""
    store = EVENTS.of(backend)
    return [] if store is None else await store.job_events(job_id)
