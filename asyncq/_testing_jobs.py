"""``Jobs``: what the pytest plugin's ``jobs`` fixture hands a test (see ``docs/testing.md``).

An app pointed at a fresh in-process store for one test: it records every
enqueue, asserts on them, runs the jobs until the queues are idle, and
fast-forwards the store's waiting jobs (delays, retry backoff) and the cron
schedules without sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from msgspec.structs import replace

from ._handler import Handler
from ._instrumentation import EnqueueNext, Instrumentation
from ._records import JobRecord, JobState
from .backends.base import Backend
from .backends.memory import MemoryBackend

if TYPE_CHECKING:
    from ._app import App

__all__ = ["Jobs", "VirtualClock"]

#: Stands for "any payload" in ``assert_enqueued``.
ANY: Any = object()

_WAITING = (JobState.SCHEDULED, JobState.FAILED)


class VirtualClock:
    """Fast-forwards the waiting jobs of an in-process store; nothing sleeps.

    ``advance(seconds)`` brings every scheduled job (a delay, ``at=``, a cron
    tick) and every failed job waiting for its retry ``seconds`` closer to due,
    as if that time had passed; ``now()`` is the real time plus what was
    advanced. Jobs enqueued later are scheduled from the real clock, so a
    delay of 10 s after ``advance(60)`` still needs ``advance(10)``.
    """

    def __init__(self, backend: MemoryBackend) -> None:
        self._backend = backend
        #: seconds advanced so far
        self.advanced = 0.0

    def now(self) -> float:
        """The virtual time: epoch seconds, plus what was advanced."""
        return time.time() + self.advanced

    def advance(self, seconds: float) -> int:
        """Let ``seconds`` pass for the waiting jobs; returns how many became due."""
        if not (math.isfinite(seconds) and seconds >= 0):
            msg = f"advance() takes finite seconds >= 0, got {seconds!r}"
            raise ValueError(msg)
        self.advanced += seconds
        now = time.time()
        due = 0
        # The store's records are immutable: each is stored again, earlier
        # (``_store`` re-indexes it; the old heap entry goes stale).
        backend = self._backend
        for job in list(backend._jobs.values()):
            if job.state in _WAITING and job.scheduled_at > now:
                moved = replace(job, scheduled_at=job.scheduled_at - seconds)
                backend._store(moved)
                due += moved.scheduled_at <= now
        return due

    def next_due(self) -> float | None:
        """Seconds until the earliest waiting job is due (0 if one is due); ``None``: none waits."""
        waiting = [j.scheduled_at for j in self._backend._jobs.values() if j.state in _WAITING]
        return max(0.0, min(waiting) - time.time()) if waiting else None


class _Recorder(Instrumentation):
    """Keeps every record enqueued through the app, as stored."""

    def __init__(self) -> None:
        self.records: list[JobRecord] = []

    async def enqueue(self, jobs: Sequence[JobRecord], call_next: EnqueueNext) -> list[JobRecord]:
        stored = await call_next(jobs)
        self.records.extend(s for s, j in zip(stored, jobs, strict=True) if s.id == j.id)
        return stored


class Jobs:
    """An app on a fresh in-process store for one test (the ``jobs`` fixture).

    Attributes:
        app: the app under test.
        backend: its in-process store.
        clock: fast-forwards delays and retries (``VirtualClock``).
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.backend = MemoryBackend()
        self.clock = VirtualClock(self.backend)
        self._recorder = _Recorder()
        self._previous: tuple[Any, list[Instrumentation]] | None = None
        self._created = time.time()
        self._cron_since: dict[str, float] = {}

    def _install(self) -> None:
        app = self.app
        self._previous = (app.backend_spec, list(app.instrumentation))
        _swap_backend(app, self.backend)
        app.instrumentation.append(self._recorder)

    def _restore(self) -> None:
        if self._previous is None:
            return
        spec, instrumentation = self._previous
        _swap_backend(self.app, spec)
        self.app.instrumentation[:] = instrumentation
        self._previous = None

    # -- what was enqueued -------------------------------------------------------------

    def enqueued(self, handler: Handler[Any, Any] | str | None = None) -> list[JobRecord]:
        """The jobs enqueued so far (by this app, in this test), of ``handler`` if given."""
        name = handler.name if isinstance(handler, Handler) else handler
        return [r for r in self._recorder.records if name is None or r.name == name]

    def payloads(self, handler: Handler[Any, Any]) -> list[Any]:
        """The payloads of ``handler``'s enqueued jobs, decoded to its schema."""
        codec = handler.payload_codec
        return [codec.decode(r.payload) for r in self.enqueued(handler)]

    def assert_enqueued(
        self, handler: Handler[Any, Any], *, payload: Any = ANY, count: int | None = None
    ) -> list[JobRecord]:
        """Assert that ``handler`` was enqueued (with ``payload``; exactly ``count`` times).

        Without ``count``, at least once. ``payload`` compares with the decoded
        payload (``==``). Returns the matching records.

        Raises:
            AssertionError: says what was enqueued instead.
        """
        records = self.enqueued(handler)
        codec = handler.payload_codec
        matching = [
            r for r in records if payload is ANY or _equal(codec.decode(r.payload), payload)
        ]
        if (count is None and matching) or (count is not None and len(matching) == count):
            return matching
        wanted = "at least once" if count is None else f"{count} time(s)"
        with_payload = "" if payload is ANY else f" with payload {payload!r}"
        seen = [codec.decode(r.payload) for r in records]
        others = sorted({r.name for r in self._recorder.records} - {handler.name})
        msg = (
            f"expected job {handler.name!r} enqueued {wanted}{with_payload}, "
            f"found {len(matching)}; its payloads: {seen!r}; other jobs enqueued: {others}"
        )
        raise AssertionError(msg)

    def assert_not_enqueued(self, handler: Handler[Any, Any]) -> None:
        """Assert that ``handler`` was never enqueued."""
        self.assert_enqueued(handler, count=0)

    # -- running them ------------------------------------------------------------------

    async def run_until_idle(self, *, timeout: float = 10.0, concurrency: int = 10) -> int:
        """Run the due jobs until none is ready or running; how many attempts ran.

        Jobs scheduled for later, and retries due later, wait: ``advance`` the
        clock, or use ``run_until_complete``.
        """
        from .testing import run_until_idle

        await self._cron_ticks()
        worker = await run_until_idle(self.app, timeout=timeout, concurrency=concurrency)
        return worker.processed

    async def _cron_ticks(self) -> None:
        """Enqueue, due now, the last tick of each cron schedule the virtual clock passed.

        Like a worker back from a downtime, one run per schedule catches up.
        Its key is the tick's (``cron:{name}:{tick}``), so the job the
        worker's schedule service enqueued for that tick is the same job.
        """
        if not self.app.cron_schedules:
            return
        from datetime import datetime

        virtual = self.clock.now()
        for schedule in list(self.app.cron_schedules.values()):
            since = self._cron_since.setdefault(schedule.name, self._created)
            moment = datetime.fromtimestamp(virtual, schedule.tz)
            tick = schedule._cron(schedule.expression, moment).get_prev(datetime).timestamp()
            if tick > since and tick > time.time():
                key = schedule.key(tick)
                record = schedule.handler.record(schedule.payload, key=key, queue=schedule.queue)
                await self.app.enqueue_records([record])
            self._cron_since[schedule.name] = max(since, tick)

    async def run_until_complete(
        self, *, timeout: float = 10.0, max_advance: float = 86_400.0
    ) -> int:
        """Run every job, fast-forwarding to each delayed job and retry in turn.

        Ends when no job waits; returns how many attempts ran.

        Raises:
            AssertionError: a job still waits after ``max_advance`` virtual seconds.
        """
        ran = 0
        start = self.clock.advanced
        while True:
            ran += await self.run_until_idle(timeout=timeout)
            wait = self.clock.next_due()
            if wait is None:
                return ran
            if self.clock.advanced - start + wait > max_advance:
                msg = f"jobs still wait after {max_advance:g} virtual seconds"
                raise AssertionError(msg)
            self.clock.advance(wait)

    def run_until_idle_sync(self, *, timeout: float = 10.0, concurrency: int = 10) -> int:
        """``run_until_idle`` for a sync test: on the app's background loop (``app.sync``)."""
        return self.app.sync.call(
            partial(self.run_until_idle, timeout=timeout, concurrency=concurrency)
        )

    def run_until_complete_sync(self, *, timeout: float = 10.0) -> int:
        """``run_until_complete`` for a sync test: on the app's background loop (``app.sync``)."""
        return self.app.sync.call(partial(self.run_until_complete, timeout=timeout))

    async def state(self, record: JobRecord | str) -> JobState:
        """The state of a job now."""
        job_id = record if isinstance(record, str) else record.id
        job = await self.backend.get(job_id)
        if job is None:
            msg = f"no job {job_id!r} in the test's store"
            raise AssertionError(msg)
        return job.state


def _equal(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 (a payload type whose == raises is just not equal)
        return False


def _swap_backend(app: App, backend: Any) -> None:
    """Point ``app`` at ``backend`` (an instance or a spec), whatever loop may still hold it.

    Unlike ``use_backend``, it does not refuse while a loop holds a backend open:
    a test's loop may end after its fixtures.
    """
    app._backend_spec = backend
    app._backend = backend if isinstance(backend, Backend) else None
    app._loops = app._loop_backends()
