"""Concurrent enqueues of one event loop share store round trips (group commit).

A web service under load has many tasks enqueueing one job each at the same
time. Sent one by one, each costs a round trip (and on SQL stores a
transaction); ``EnqueueBatcher`` sends them together instead:

- a call that finds no store call in flight goes at once, alone: with no
  concurrency nothing waits and nothing is added to its latency;
- calls that arrive while one is in flight wait for it, then go together in
  one ``Backend.enqueue`` (up to ``max_jobs`` jobs; more go in the next one),
  led by the first of them: one round trip per batch, however many callers.

Each caller gets its own jobs back, as stored, exactly as if it had called
the store alone. If a shared call fails, each caller's jobs are sent again on
their own, so one caller's error (a refused record, say) is never another's.
The store call is shielded from the leading caller's cancellation, since it
carries other callers' jobs: a cancelled caller's jobs may be stored, as when
a single call is cancelled in flight.

Only plain enqueues are batched: not those inside a caller's transaction
(``connection=``), nor ``enqueue_and_wait``'s, which a store prepares for
waiting; nor the in-process store's, which has no round trip to save.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from ._records import JobRecord
from .backends.base import Backend

__all__ = ["MAX_BATCH_JOBS", "EnqueueBatcher"]

#: The most jobs one shared store call carries.
MAX_BATCH_JOBS = 500


@dataclass(eq=False)
class _Call:
    """One caller's jobs, and what became of them."""

    jobs: Sequence[JobRecord]
    fresh: bool
    woken: anyio.Event = field(default_factory=anyio.Event)
    stored: list[JobRecord] | None = None
    error: BaseException | None = None
    #: woken to lead the next batch rather than with an outcome
    leads: bool = False


class EnqueueBatcher:
    """Coalesces the concurrent ``enqueue`` calls of one loop's backend (see the module).

    Args:
        backend: the store, opened in the current event loop.
        max_jobs: the most jobs in one store call.
    """

    def __init__(self, backend: Backend, max_jobs: int = MAX_BATCH_JOBS) -> None:
        self.backend = backend
        self.max_jobs = max_jobs
        self._waiting: deque[_Call] = deque()
        self._in_flight = False

    async def enqueue(self, jobs: Sequence[JobRecord], *, fresh: bool = False) -> list[JobRecord]:
        """``backend.enqueue(jobs, fresh=fresh)``, sharing a round trip with concurrent calls."""
        if not self._in_flight:  # alone: straight to the store
            self._in_flight = True
            try:
                return await self.backend.enqueue(jobs, fresh=fresh)
            finally:
                self._next()
        call = _Call(jobs, fresh)
        self._waiting.append(call)
        try:
            await call.woken.wait()
        except BaseException:
            self._abandon(call)
            raise
        if call.leads:
            try:
                await self._send(self._take())
            finally:
                self._next()
        return _outcome(call)

    def _take(self) -> list[_Call]:
        """The waiting calls that go in the next store call: at least one, at most ``max_jobs``."""
        batch = [self._waiting.popleft()]
        size = len(batch[0].jobs)
        while self._waiting and size + len(self._waiting[0].jobs) <= self.max_jobs:
            call = self._waiting.popleft()
            size += len(call.jobs)
            batch.append(call)
        return batch

    async def _send(self, batch: list[_Call]) -> None:
        try:
            await self._send_shielded(batch)
        finally:
            for call in batch:  # none may wait for ever, whatever ended the call
                if not call.woken.is_set():
                    call.error = RuntimeError("the shared enqueue ended without an outcome")
                    call.woken.set()

    async def _send_shielded(self, batch: list[_Call]) -> None:
        with anyio.CancelScope(shield=True):
            if len(batch) == 1:
                await self._store(batch[0])
                return
            jobs = [job for call in batch for job in call.jobs]
            try:
                stored = await self.backend.enqueue(jobs, fresh=all(c.fresh for c in batch))
            except Exception:  # noqa: BLE001 - each caller gets its own outcome, alone
                for call in batch:
                    await self._store(call)
                return
            start = 0
            for call in batch:
                call.stored = stored[start : start + len(call.jobs)]
                start += len(call.jobs)
                call.woken.set()

    async def _store(self, call: _Call) -> None:
        try:
            call.stored = await self.backend.enqueue(call.jobs, fresh=call.fresh)
        except Exception as exc:  # noqa: BLE001 - raised by its own caller
            call.error = exc
        call.woken.set()

    def _next(self) -> None:
        """Hand the lead to the first waiting call, or end the flight."""
        if self._waiting:
            leader = self._waiting[0]
            leader.leads = True
            leader.woken.set()
        else:
            self._in_flight = False

    def _abandon(self, call: _Call) -> None:
        """A waiting caller was cancelled: drop its jobs, or pass on the lead it was given."""
        if call in self._waiting:
            self._waiting.remove(call)
            if call.leads:  # woken to lead, cancelled before it could
                self._next()


def _outcome(call: _Call) -> list[JobRecord]:
    if call.error is not None:
        raise call.error
    assert call.stored is not None
    return call.stored
