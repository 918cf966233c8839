"""Worker: claims jobs for its slots, runs each in its own cancel scope, settles in batches.

One anyio task group holds four loops and ``concurrency`` slot tasks, each
running one job at a time:

- the fetch loop claims enough jobs to fill the free slots and keep
  ``prefetch`` more claimed ahead, then blocks on the backend's push wakeup
  when the queues are empty. A slot that frees takes a job claimed ahead at
  once instead of waiting for a claim's round trip; jobs claimed ahead are
  covered by heartbeats like running ones, so none loses its lease while it
  waits, and are never held beyond ``concurrency + prefetch``. On a backend
  that settles on claim (``SettlesOnClaim``) the outcomes waiting when it
  claims go in the same call, so a busy worker pays one round trip for both;
- the settle loop sends finished attempts' outcomes to the backend in
  batches whenever the fetch loop is not about to claim (it waits for work,
  for a slot or for a retry, or the backend cannot fuse the two): whatever
  finished while the previous batch was in flight goes in the next one, so
  acknowledgement costs at most one round trip per batch and a finished job
  is never held back until more work arrives. A failed settlement, fused or
  not, keeps its outcomes for the next try;
- the heartbeat loop renews every lease still held (running, claimed ahead
  or awaiting settlement) in one call, and cancels jobs whose lease was lost
  or whose cancellation was requested (a job claimed ahead is settled
  ``cancelled``, or dropped when lost, without waiting for a slot);
- the maintenance loop recovers lapsed leases of dead workers and prunes,
  starting after the first claim.

Shutdown (``stop()``, or SIGTERM/SIGINT under ``run_until_signalled``): stop
claiming and hand the jobs claimed ahead back to their queue untouched; let
running jobs finish for up to ``shutdown_timeout``; cancel the rest and hand
them back to their queue at once; flush outcomes. A second signal
(``kill()``) skips the wait.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus

from ._execution import Running, StopReason, execute, scope_class, stopped_outcome
from ._records import JobState, Lease, Outcome
from .backends.base import SettlesOnClaim
from .exceptions import BackendError, BackendUnavailable, ConfigurationError

if TYPE_CHECKING:
    from ._app import App
    from .backends.base import Backend

__all__ = ["Worker"]

log = logging.getLogger("asyncq.worker")


class Worker:
    """Runs an app's jobs from its backend.

    Args:
        app: the app whose handlers run.
        queues: queues to claim from (default: every queue the app's jobs use).
        concurrency: jobs running at once, at most.
        lease: seconds a claim is exclusive without a heartbeat; a worker that
            dies loses its jobs to another worker this long after its last heartbeat.
        shutdown_timeout: seconds running jobs get to finish on shutdown
            before they are cancelled and handed back.
        heartbeat: seconds between lease renewals (default ``lease / 3``, at
            most 10 s); also the longest a running job takes to see a cancel.
        poll_interval: the longest the fetch loop blocks waiting for work
            before it checks again (a safety net; wakeups are pushed).
        recover_interval: seconds between recoveries of lapsed leases
            (default ``lease / 2``).
        burst: stop once the queues have no ready job and nothing runs.
        name: this worker's id in leases and logs (default host:pid:random).
        prefetch: jobs claimed ahead of free slots, so that a slot that frees
            starts its next job at once instead of after a claim's round trip
            (default: a quarter of ``concurrency``, rounded up). Their leases
            are renewed like those of running jobs, and on shutdown they are
            handed back at once, never started. A job claimed ahead waits for
            this worker's next free slot even while another worker idles: with
            long jobs and several workers, 0 spreads the work more evenly.

    Attributes:
        running: the jobs this worker holds, by id: running, or claimed ahead
            and waiting for a slot.
    """

    def __init__(
        self,
        app: App,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 10,
        lease: float = 30.0,
        shutdown_timeout: float = 30.0,
        heartbeat: float | None = None,
        poll_interval: float = 5.0,
        recover_interval: float | None = None,
        burst: bool = False,
        name: str | None = None,
        prefetch: int | None = None,
    ) -> None:
        if concurrency < 1:
            msg = f"concurrency must be at least 1, got {concurrency}"
            raise ConfigurationError(msg)
        if lease <= 0:
            msg = f"lease must be positive seconds, got {lease}"
            raise ConfigurationError(msg)
        if prefetch is not None and prefetch < 0:
            msg = f"prefetch must be 0 or more jobs, got {prefetch}"
            raise ConfigurationError(msg)
        self.app = app
        self.queues = list(queues) if queues else app.queues or ["default"]
        self.concurrency = concurrency
        self.prefetch = prefetch if prefetch is not None else -(-concurrency // 4)
        self.lease = lease
        self.shutdown_timeout = shutdown_timeout
        self.heartbeat_interval = heartbeat if heartbeat is not None else min(lease / 3, 10.0)
        self.poll_interval = poll_interval
        self.recover_interval = recover_interval if recover_interval is not None else lease / 2
        self.burst = burst
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.running: dict[str, Running] = {}
        self.processed = 0
        self._unsettled: dict[str, Lease] = {}
        self._outcomes: list[Outcome] = []
        self._outcomes_ready = anyio.Event()
        # True while the fetch loop is claiming or about to claim with a backend
        # that settles on claim: waiting outcomes then go with that claim, and
        # the settle loop leaves them alone (see _park).
        self._claiming = False
        self._dispatch = _Dispatch()
        self._settle_lock = anyio.Lock()
        self._settled = anyio.Event()
        self._slot_freed = anyio.Event()
        self._first_claim = anyio.Event()
        self._idle = anyio.Event()
        self._stopping = False
        self._wait_scope: anyio.CancelScope | None = None
        self._drain_scope: anyio.CancelScope | None = None
        self._state: Any = None
        self._scope: Callable[[], anyio.CancelScope] = anyio.CancelScope

    def __repr__(self) -> str:
        return f"Worker({self.name!r}, queues={self.queues}, concurrency={self.concurrency})"

    # -- control -----------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether the worker has stopped claiming (``stop()``, a signal, or a burst's end)."""
        return self._stopping

    def stop(self) -> None:
        """Stop claiming and shut down gracefully (see the module docstring)."""
        if not self._stopping:
            log.info("worker %s stopping: %d job(s) running", self.name, len(self.running))
        self._stopping = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()
        for running in self._dispatch.take_all():
            del self.running[running.lease.job.id]
            self._hand_back(running.lease)
        if not self.running:
            self._idle.set()

    def kill(self) -> None:
        """Stop now: cancel running jobs at once and hand them back."""
        self.stop()
        if self._drain_scope is not None:
            self._drain_scope.cancel()
        self.shutdown_timeout = 0

    async def run_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT (graceful), or a second one (now), or cancellation."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_signals)
            await self.run()
            tg.cancel_scope.cancel()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self._stopping:
                    log.warning("worker %s: second %s, stopping now", self.name, name)
                    self.kill()
                else:
                    log.info("worker %s: %s, finishing running jobs", self.name, name)
                    self.stop()

    # -- the run -----------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[Worker] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until ``stop()`` (or, with ``burst``, until the queues are empty).

        A store that cannot be reached at start is waited for, with backoff
        and a warning per try, until it answers or the worker is stopped.
        """
        backend = await self._open_backend()
        if backend is None:
            return
        self._scope = scope_class()
        async with AsyncExitStack() as stack:
            if self.app.lifespan is not None:
                self._state = await stack.enter_async_context(self.app.lifespan(self.app))
            log.info(
                "worker %s started: app %r, backend %s, queues %s, concurrency %d",
                self.name,
                self.app.name,
                backend.url,
                ",".join(self.queues),
                self.concurrency,
            )
            async with anyio.create_task_group() as service:
                service.start_soon(self._settle_loop)
                service.start_soon(self._heartbeat_loop)
                service.start_soon(self._maintenance_loop)
                for extra in self.app.worker_services:
                    service.start_soon(extra, self)
                task_status.started(self)
                # One long-lived task per slot runs job after job: spawning a
                # task per job would cost more than a no-op job itself.
                async with anyio.create_task_group() as slots:
                    slots.start_soon(self._start_slots, slots)
                    try:
                        await self._fetch_loop()
                        await self._drain()
                    finally:
                        self._dispatch.close()
                await self._flush()
                service.cancel_scope.cancel()
        log.info("worker %s stopped after %d job(s)", self.name, self.processed)

    async def _open_backend(self) -> Backend | None:
        """The opened backend, retried while unreachable; ``None`` if stopped first."""
        backoff = _Backoff()
        while not self._stopping:
            try:
                return await self.app.backend_opened()
            except BackendUnavailable as exc:
                what = f"worker {self.name}: cannot reach the backend"
                await self._interruptible(partial(backoff.wait, what, exc))
        return None

    async def _fetch_loop(self) -> None:
        backend = self.app.backend
        fused = backend if isinstance(backend, SettlesOnClaim) else None
        self._claiming = fused is not None
        backoff = _Backoff()
        try:
            while not self._stopping:
                free = self.concurrency + self.prefetch - len(self.running)
                if free <= 0:
                    await self._park(self._slot_freed.wait)
                    self._slot_freed = anyio.Event()
                    # Let the other jobs finishing in this tick free their slots
                    # too, so the next claim is a batch rather than one job.
                    await anyio.lowlevel.checkpoint()
                    continue
                # A claim is never cancelled half-way: jobs claimed on the server
                # but dropped here would wait out their lease.
                try:
                    with anyio.CancelScope(shield=True):
                        leases = await self._claim(backend, fused, free)
                except BackendError as exc:
                    what = f"worker {self.name}: claim failed"
                    await self._park(partial(backoff.wait, what, exc))
                    continue
                finally:
                    self._first_claim.set()
                backoff.reset()
                for lease in leases:
                    self._start(lease)
                if len(leases) < free:
                    if self.burst:
                        # The queues are empty: end as soon as what runs is settled.
                        if not leases and not self._unsettled:
                            self._stopping = True
                            break
                        if self.running:
                            await self._park(self._slot_freed.wait)
                            self._slot_freed = anyio.Event()
                        elif not leases:
                            await self._park(self._settled.wait)
                            self._settled = anyio.Event()
                        continue
                    try:
                        await self._park(
                            lambda: backend.wait_for_work(self.queues, self.poll_interval)
                        )
                    except BackendError as exc:
                        what = f"worker {self.name}: waiting for work failed"
                        await self._park(partial(backoff.wait, what, exc))
        finally:
            self._claiming = False
            self._outcomes_ready.set()

    async def _claim(
        self, backend: Backend, fused: SettlesOnClaim | None, free: int
    ) -> list[Lease]:
        """Claim up to ``free`` jobs, settling the waiting outcomes in the same call if possible.

        The outcomes ride along only when the backend settles on claim and no
        settlement is in flight (outcomes of one job are never sent twice at
        once). The caller shields the call.
        """
        if fused is None or not self._outcomes:
            return await backend.claim(self.queues, free, worker=self.name, lease_for=self.lease)
        try:
            self._settle_lock.acquire_nowait()
        except anyio.WouldBlock:
            return await backend.claim(self.queues, free, worker=self.name, lease_for=self.lease)
        try:
            batch, self._outcomes = self._outcomes, []
            try:
                _, leases = await fused.settle_and_claim(
                    batch, self.queues, free, worker=self.name, lease_for=self.lease
                )
            except BackendError as exc:
                self._keep(batch, exc)
                raise
            self._settled_batch(batch)
            return leases
        finally:
            self._settle_lock.release()

    async def _park(self, wait: Callable[[], Awaitable[object]]) -> None:
        """Await ``wait()`` (interruptibly) with the settle loop in charge of outcomes meanwhile.

        While the fetch loop is parked no claim can carry outcomes, so the
        settle loop sends them at once: a producer waiting on a result never
        waits for more work to arrive.
        """
        claiming = self._claiming
        if claiming:
            self._claiming = False
            if self._outcomes:
                self._outcomes_ready.set()
        try:
            await self._interruptible(wait)
        finally:
            self._claiming = claiming

    async def _interruptible(self, wait: Callable[[], Awaitable[object]]) -> None:
        """Await ``wait()``, unless or until ``stop()`` is called."""
        with anyio.CancelScope() as scope:
            self._wait_scope = scope
            if self._stopping:
                scope.cancel()
            await wait()
        self._wait_scope = None

    def _start(self, lease: Lease) -> None:
        self._unsettled[lease.job.id] = lease
        if self._stopping:  # claimed while stopping: never started
            self._hand_back(lease)
            return
        running = Running(lease, self._scope())
        self.running[lease.job.id] = running
        if self._idle.is_set():
            self._idle = anyio.Event()
        self._dispatch.put(running)

    def _hand_back(self, lease: Lease) -> None:
        """Return a job this worker claimed but never started to its queue, untouched."""
        self._outcomes.append(
            Outcome(job_id=lease.job.id, token=lease.token, state=JobState.QUEUED)
        )
        if not self._claiming:
            self._outcomes_ready.set()

    async def _start_slots(self, slots: TaskGroup) -> None:
        # A task of its own, so the slots start while the first claim is on
        # its way rather than before it is sent (each costs some microseconds).
        for _ in range(self.concurrency):
            slots.start_soon(self._slot)

    async def _slot(self) -> None:
        backend = self.app.backend
        while (running := await self._dispatch.get()) is not None:
            await self._run_one(backend, running)

    async def _run_one(self, backend: Backend, running: Running) -> None:
        job_id = running.lease.job.id
        try:
            outcome = await execute(self.app, backend, running, self._state)
        finally:
            del self.running[job_id]
            self._slot_freed.set()
            if not self.running:
                self._idle.set()
        self.processed += 1
        if outcome is None:
            self._unsettled.pop(job_id, None)
        else:
            self._outcomes.append(outcome)
            if not self._claiming:
                self._outcomes_ready.set()

    async def _drain(self) -> None:
        """After the fetch loop: wait for running jobs, then hand back what is left."""
        if self.running:
            with anyio.move_on_after(self.shutdown_timeout) as self._drain_scope:
                await self._idle.wait()
            for running in list(self.running.values()):
                running.interrupt(StopReason.SHUTDOWN)
            if self.running:
                log.warning(
                    "worker %s: handing %d unfinished job(s) back to their queues",
                    self.name,
                    len(self.running),
                )

    # -- settlement ----------------------------------------------------------------

    async def _settle_loop(self) -> None:
        backoff = _Backoff()
        while True:
            await self._outcomes_ready.wait()
            self._outcomes_ready = anyio.Event()
            if self._claiming:
                continue  # the fetch loop's next claim takes them
            if await self._settle_batch():
                backoff.reset()
            else:
                # The kept outcomes are retried even if no other job finishes:
                # a waiting producer must not depend on more work arriving.
                await backoff.wait(f"worker {self.name}: settling again", None)
                self._outcomes_ready.set()

    async def _settle_batch(self) -> bool:
        # Shielded and serialised: a batch in flight when the worker stops is
        # finished, not dropped, and the final flush waits for it.
        settled = False
        with anyio.CancelScope(shield=True):
            async with self._settle_lock:
                settled = await self._settle_locked()
        return settled

    async def _settle_locked(self) -> bool:
        batch, self._outcomes = self._outcomes, []
        if not batch:
            return True
        try:
            await self.app.backend.settle(batch)
        except BackendError as exc:
            self._keep(batch, exc)
            return False
        self._settled_batch(batch)
        return True

    def _keep(self, batch: list[Outcome], exc: BackendError) -> None:
        """Put back outcomes whose settlement failed, ahead of newer ones, for the next try.

        If the leases lapse meanwhile the jobs run again elsewhere
        (at-least-once), and these outcomes are refused.
        """
        self._outcomes[:0] = batch
        log.warning("worker %s: settling %d job(s) failed: %s", self.name, len(batch), exc)

    def _settled_batch(self, batch: list[Outcome]) -> None:
        for outcome in batch:
            self._unsettled.pop(outcome.job_id, None)
        self._settled.set()

    async def _flush(self) -> None:
        """Settle what is buffered before the worker goes (shielded, bounded)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(max(self.lease, 5.0)):
            backoff = _Backoff()
            while self._outcomes:
                if not await self._settle_batch():
                    await backoff.wait(f"worker {self.name}: final settle failed", None)

    # -- leases ----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        backend = self.app.backend
        while True:
            await anyio.sleep(self.heartbeat_interval)
            leases = list(self._unsettled.values())
            if not leases:
                continue
            try:
                reply = await backend.heartbeat(leases, lease_for=self.lease)
            except BackendError as exc:
                log.warning("worker %s: heartbeat failed: %s", self.name, exc)
                continue
            for job_id in reply.lost:
                self._unsettled.pop(job_id, None)
                running = self.running.get(job_id)
                if running is not None:
                    log.warning(
                        "worker %s: lost the lease on job %s; cancelling it", self.name, job_id
                    )
                    self._stop_job(running, StopReason.LOST)
            for job_id in reply.cancel:
                running = self.running.get(job_id)
                if running is not None:
                    self._stop_job(running, StopReason.CANCEL)

    def _stop_job(self, running: Running, reason: StopReason) -> None:
        """Cancel a job; one claimed ahead is settled now, without waiting for a slot."""
        running.interrupt(reason)
        if not self._dispatch.remove(running):
            return  # a slot runs it: its attempt ends with the reason
        del self.running[running.lease.job.id]
        self._slot_freed.set()
        if not self.running:
            self._idle.set()
        outcome = stopped_outcome(running, started=False)
        if outcome is not None:
            self._outcomes.append(outcome)
            if not self._claiming:
                self._outcomes_ready.set()

    async def _maintenance_loop(self) -> None:
        backend = self.app.backend
        prune_every = max(60.0, self.recover_interval)
        since_prune = math.inf
        # The first claim goes first: at start a worker has free slots to fill,
        # and recovered jobs are claimable by the next claim anyway.
        await self._first_claim.wait()
        while True:
            try:
                recovered = await backend.recover()
                if recovered:
                    log.warning("worker %s: recovered %d lapsed job(s)", self.name, recovered)
                if since_prune >= prune_every:
                    await backend.prune()
                    since_prune = 0.0
            except BackendError as exc:
                log.warning("worker %s: maintenance failed: %s", self.name, exc)
            await anyio.sleep(self.recover_interval)
            since_prune += self.recover_interval


class _Dispatch:
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


class _Backoff:
    """Exponential backoff with a cap, for reconnecting to a backend that went away."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    async def wait(self, what: str, exc: BaseException | None) -> None:
        log.warning("%s (%s); retrying in %.1fs", what, exc, self.delay)
        await anyio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.cap)
