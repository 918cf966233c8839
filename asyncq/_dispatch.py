"""Dispatch: hands a worker's claimed jobs to its idle slot tasks."""

from __future__ import annotations

from collections import deque

import anyio

from ._execution import Running

__all__ = ["Dispatch"]


class Dispatch:
    """Hands claimed jobs to idle slot tasks, waking only the slots the jobs need.

    A slot that finishes a job takes the next one without waiting. An idle
    slot waits on an event of its own. A put wakes one idle slot, unless one
    is already on its way; each woken slot that finds jobs left wakes up to
    ``FAN_OUT`` more, so a batch spreads over the idle slots in a few
    event-loop turns when its jobs wait on I/O, and wakes only a few slots
    when the first one runs them all without ever yielding (no-op jobs).
    """

    FAN_OUT = 2

    def __init__(self) -> None:
        self._items: deque[Running] = deque()
        self._idle: deque[anyio.Event] = deque()
        self._woken = 0  # slots woken that have not looked for a job yet
        self._closed = False

    def put(self, item: Running) -> None:
        self._items.append(item)
        if not self._woken:
            self._wake(1)

    def _wake(self, count: int) -> None:
        while count > 0 and self._idle:
            self._idle.popleft().set()
            self._woken += 1
            count -= 1

    def close(self) -> None:
        self._closed = True
        self._wake(len(self._idle))

    def remove(self, item: Running) -> bool:
        """Take back a job no slot has taken yet; ``False`` if a slot has it (or had it)."""
        try:
            self._items.remove(item)
        except ValueError:
            return False
        return True

    def take_all(self) -> list[Running]:
        """Remove and return every job no slot has taken yet."""
        items = list(self._items)
        self._items.clear()
        return items

    async def get(self) -> Running | None:
        """The next job, or ``None`` once closed and empty."""
        while not self._items:
            if self._closed:
                return None
            event = anyio.Event()
            self._idle.append(event)
            try:
                await event.wait()
            except BaseException:
                if event.is_set():
                    self._woken -= 1
                    if self._items:  # pass the wakeup on: the jobs it was for still wait
                        self._wake(1)
                else:
                    self._idle.remove(event)
                raise
            self._woken -= 1
            if self._items:
                item = self._items.popleft()
                self._wake(min(self.FAN_OUT, len(self._items) - self._woken))
                return item
        return self._items.popleft()
