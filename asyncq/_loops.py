"""One opened backend per running event loop, made lazily and closed with its loop.

A backend's connections belong to the event loop that opened them: a Redis
client or an asyncpg pool used from another loop fails (``Event loop is
closed``). An ``App`` made at import time is used from many loops, though:
``asyncio.run`` per call in a script or a Django view, a new loop per test
under pytest-asyncio, one loop per thread, and the background loop of
``app.sync``. So the app keeps one backend per loop (``LoopBackends``):

- the first loop gets the app's backend (``app.backend`` outside a loop);
- another loop, at the same time or later, gets its own, made from the same
  URL and options; a backend given as an instance is reused by the next loop
  once the loop that opened it has ended (its store reopens it), and refused
  with a ``ConfigurationError`` in a second loop at the same time;
- the in-process store (``memory://``) is one store for the whole process:
  every loop shares it.

A backend opened in a loop is closed when that loop shuts down
(``asyncio.run``, ``asyncio.Runner``, pytest-asyncio and anyio close their
loops this way): an async generator started in the loop is finalised by
``loop.shutdown_asyncgens()``, and closes the backend then. ``await
app.close()`` (or leaving ``async with app``) closes the current loop's
backend at once. Outside asyncio (trio) there is one backend, as before.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

import anyio

from ._batching import EnqueueBatcher
from .backends.base import Backend
from .exceptions import ConfigurationError

__all__ = ["LoopBackends"]


class _NoLoop:
    """The key of the one backend used outside asyncio (trio): weakly referenceable."""


_NO_LOOP = _NoLoop()


@dataclass(eq=False)
class _Slot:
    """A loop's backend: opened once, closed by ``app.close()`` or with the loop."""

    backend: Backend
    #: the in-process store, shared with other loops: closed by the last one
    shared: bool = False
    lock: anyio.Lock | None = None
    opened: bool = False
    closed: bool = False
    closer: AsyncGenerator[None, None] | None = field(default=None, repr=False)
    #: coalesces this loop's concurrent enqueues (not for the shared store)
    batcher: EnqueueBatcher | None = field(default=None, repr=False)


def _current_loop() -> object:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return _NO_LOOP


class LoopBackends:
    """The backends of one app, by event loop (see the module's docstring).

    Args:
        describe: the app's name, for errors.
        home: the app's own backend (made lazily from its URL, or given).
        fresh: makes another backend from the same URL and options; ``None``
            when the backend was given as an instance.
        shared: every loop uses ``home`` (the in-process store).
    """

    def __init__(
        self,
        describe: str,
        home: Callable[[], Backend],
        fresh: Callable[[], Backend] | None,
        shared: Callable[[Backend], bool],
    ) -> None:
        self._describe = describe
        self._home = home
        self._fresh = fresh
        self._shared = shared
        self._slots: weakref.WeakKeyDictionary[object, _Slot] = weakref.WeakKeyDictionary()
        # The slot holding the home backend, until it is closed.
        self._home_slot: _Slot | None = None
        self._guard = threading.Lock()
        self._last: tuple[weakref.ref[object], _Slot] | None = None

    @property
    def any_open(self) -> bool:
        """Whether a backend is open in some loop."""
        with self._guard:
            return any(slot.opened and not slot.closed for slot in self._slots.values())

    def current(self) -> Backend:
        """This loop's backend (made now if needed, not opened); the home one outside a loop."""
        loop = _current_loop()
        if loop is _NO_LOOP:
            return self._home()
        return self._slot(loop).backend

    def _slot(self, loop: object) -> _Slot:
        slot = self._slots.get(loop)
        if slot is not None:
            return slot
        with self._guard:
            slot = self._slots.get(loop)
            if slot is None:
                slot = self._slots[loop] = self._choose()
            return slot

    def _choose(self) -> _Slot:
        """A slot for a new loop (under the guard): the home backend if free, else a fresh one."""
        home = self._home()
        if self._shared(home):
            return _Slot(home, shared=True)
        if self._home_free(None):
            return _Slot(home)
        return _Slot(self._another(home))

    def _home_free(self, slot: _Slot | None) -> bool:
        """Whether no loop but ``slot``'s holds the home backend open (under the guard)."""
        holder = self._home_slot
        return holder is None or holder is slot or holder.closed

    def _another(self, home: Backend) -> Backend:
        """A backend for a loop while the home one is open in another (under the guard)."""
        if self._fresh is None:
            msg = (
                f"app {self._describe!r}: its backend, given as an instance ({home.url}), is "
                "open in another event loop; connections cannot cross loops. Give the app a "
                "URL (backend='redis://...') so that each loop opens its own, or call it from "
                "one loop (app.sync runs one in the background)"
            )
            raise ConfigurationError(msg)
        return self._fresh()

    def _claim(self, slot: _Slot) -> None:
        """Before ``slot`` opens: take the home backend, or another if a loop holds it open."""
        if slot.shared:
            return
        with self._guard:
            home = self._home()
            if slot.backend is home:
                if self._home_free(slot):
                    self._home_slot = slot
                else:
                    slot.backend = self._another(home)

    def ready(self) -> Backend | None:
        """The hot path (every enqueue): the backend of the last call's loop if this is it, open."""
        last = self._last
        if last is None:
            return None
        try:
            loop: object = asyncio.get_running_loop()
        except RuntimeError:
            loop = _NO_LOOP
        slot = last[1]
        if last[0]() is loop and slot.opened and not slot.closed:
            return slot.backend
        return None

    def batcher(self, backend: Backend) -> EnqueueBatcher | None:
        """The enqueue batcher of ``backend``, just returned by ``opened`` or ``ready``.

        ``None`` for the in-process store, shared by every loop and with no
        round trip to save.
        """
        last = self._last
        if last is None:
            return None
        slot = last[1]
        if slot.backend is not backend or slot.shared:
            return None
        if slot.batcher is None:
            slot.batcher = EnqueueBatcher(backend)
        return slot.batcher

    async def opened(self) -> Backend:
        """This loop's backend, opened on first use, and closed when the loop shuts down."""
        loop = _current_loop()
        slot = self._slot(loop)
        if slot.opened and not slot.closed:
            self._last = (weakref.ref(loop), slot)
            return slot.backend
        if slot.lock is None:
            slot.lock = anyio.Lock()
        async with slot.lock:
            if not slot.opened:
                self._claim(slot)
                try:
                    await slot.backend.open()
                except BaseException:
                    with self._guard:  # a store that did not open holds nothing
                        if self._home_slot is slot:
                            self._home_slot = None
                    raise
                slot.opened = True
                self._last = (weakref.ref(loop), slot)
                if loop is not _NO_LOOP:
                    slot.closer = _close_with_loop(self, slot)
                    await slot.closer.asend(None)
        return slot.backend

    async def close(self) -> None:
        """Close this loop's backend now (the next use in this loop opens one again)."""
        loop = _current_loop()
        with self._guard:
            slot = self._slots.pop(loop, None)
        if slot is None or slot.closed:
            return
        slot.closed = True
        closer, slot.closer = slot.closer, None
        if closer is not None:
            await closer.aclose()
        if slot.opened and self.last_holder(slot):
            await slot.backend.close()

    def last_holder(self, slot: _Slot) -> bool:
        """Whether no other loop holds ``slot``'s backend open (always, unless it is shared)."""
        if not slot.shared:
            return True
        with self._guard:
            return not any(
                other is not slot
                and other.backend is slot.backend
                and other.opened
                and not other.closed
                for other in self._slots.values()
            )


async def _close_with_loop(owner: LoopBackends, slot: _Slot) -> AsyncGenerator[None, None]:
    """Suspended until the loop shuts its async generators down; then closes ``slot``."""
    try:
        yield
    finally:
        if not slot.closed:
            slot.closed = True
            if owner.last_holder(slot):
                with anyio.CancelScope(shield=True):
                    await slot.backend.close()
