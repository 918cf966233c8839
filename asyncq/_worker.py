"""Worker: claims jobs for its slots, runs each in its own cancel scope, hands on the outcomes.

One anyio task group holds ``concurrency`` slot tasks, each running one job
at a time, and the loops that feed them: fetch -> dispatch -> run -> settle.

- the fetch loop claims enough jobs to fill the free slots and keep
  ``prefetch`` more claimed ahead, then blocks on the backend's push wakeup
  when the queues are empty. A slot that frees takes a job claimed ahead at
  once instead of waiting for a claim's round trip; jobs claimed ahead are
  covered by heartbeats like running ones, so none loses its lease while it
  waits, and are never held beyond ``concurrency + prefetch``;
- ``Dispatch`` hands the claimed jobs to idle slots; a slot runs the attempt
  (``execute``) and hands its outcome to the ``Settlement``, which settles
  outcomes in batches or with the next claim (``_settlement``);
- the heartbeat renews every lease held, and the worker stops the jobs whose
  lease was lost or whose cancellation was requested (a job claimed ahead is
  settled ``cancelled``, or dropped when lost, without waiting for a slot);
  maintenance recovers lapsed leases of dead workers (``_leases``);
- the worker registers in the store as it starts, renews its entry every
  heartbeat and marks it stopped when it ends; on a store that pushes
  cancels, a cancelled job is stopped as the notice arrives (``_registry``);
- services run beside them: the app's own (cron schedules, the queue-depth
  gauge) and those passed to the worker (``ServiceContext``).

Shutdown (``stop()``, or SIGTERM/SIGINT under ``run_until_signalled``): stop
claiming and hand the jobs claimed ahead back to their queue untouched; let
running jobs finish for up to ``shutdown_timeout``; cancel the rest and hand
them back to their queue at once; flush outcomes. A second signal
(``kill()``) skips the wait. A failure classified fatal (``fatal_on``,
``App.classify``) starts the same shutdown, and ``Worker.fatal`` says why.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus

from ._backoff import Backoff
from ._blocking import BlockingDetector
from ._dispatch import Dispatch
from ._execution import Running, StopReason, execute, scope_class, stopped_outcome
from ._leases import maintain, renew
from ._offload import Offload
from ._records import ErrorKind, JobState
from ._registry import Registration, hear_cancels, keep_registered
from ._settlement import Settlement
from ._worker_types import ServiceContext
from .backends.base import PUSHES_CANCEL, SIZES_POOL
from .exceptions import BackendError, BackendUnavailable, ConfigurationError

if TYPE_CHECKING:
    from ._app import App
    from ._records import Lease, Outcome
    from ._worker_types import Service
    from .backends.base import Backend

__all__ = ["OPEN_TRIES", "FatalFailure", "Worker"]

#: Tries to open a store that answers with an error other than "unavailable".
OPEN_TRIES = 3

log = logging.getLogger("asyncq.worker")


@dataclass(frozen=True, slots=True)
class FatalFailure:
    """The failure classified fatal that stopped a worker (``Worker.fatal``).

    Attributes:
        job_id: the job whose attempt failed.
        job_name: its name.
        queue: its queue.
        error: the exception as one line (``MemoryError: ...``).
    """

    job_id: str
    job_name: str
    queue: str
    error: str

    def __str__(self) -> str:
        return (
            f"fatal failure in job {self.job_name!r} (id {self.job_id}, "
            f"queue {self.queue!r}): {self.error}"
        )


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
        heartbeat: seconds between lease renewals and registry renewals
            (default ``lease / 3``, at most 10 s); also the longest a running
            job takes to see a cancel on a store that does not push cancels,
            or when a pushed notice was lost.
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
        services: long-running tasks to run beside the worker's loops, after
            the app's own (``App.default_services``): ``async def service(ctx:
            ServiceContext)``.
        threads: sync (``def``) handlers running at once, each in a thread
            (default ``min(32, CPUs + 4)``); see ``docs/handlers.md``.
        processes: child processes for ``process=True`` handlers, started
            with the worker when the app has some (default: one per CPU).
        warn_blocking: development mode: warn, naming the job and the line,
            when an async handler blocks the event loop for longer than this
            many seconds (``BlockingDetector``); ``None`` (default) for off.

    Attributes:
        running: the jobs this worker holds, by id: running, or claimed ahead
            and waiting for a slot.
        processed: attempts finished since the worker started; ``failed``
            and ``dead`` count those that failed (to be retried) or went dead.
        fatal: the first failure classified fatal (``fatal_on``,
            ``App.classify``), which stopped the worker; ``None`` otherwise.
        offload: the pools of threads and child processes for sync and
            process handlers; ``offload.stats()`` counts abandoned threads.
    """

    _settlement: Settlement  # made once the backend is open (run)

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
        services: Sequence[Service] = (),
        threads: int | None = None,
        processes: int | None = None,
        warn_blocking: float | None = None,
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
        self.services = list(services)
        self.running: dict[str, Running] = {}
        self.processed = 0
        self.failed = 0
        self.dead = 0
        self.fatal: FatalFailure | None = None
        self._dispatch = Dispatch()
        # Sync and process handlers: the pools, closed with the worker.
        self.offload = Offload.of(threads, processes)
        if app.telemetry is not None:
            app.telemetry.watch_offload(self.offload)
        self.blocking = None if warn_blocking is None else BlockingDetector(app, warn_blocking)
        self._slot_freed = anyio.Event()
        self._first_claim = anyio.Event()
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
        handed_back = self._dispatch.take_all()
        for running in handed_back:
            del self.running[running.lease.job.id]
            self._settlement.hand_back(running.lease)
        if handed_back:
            self._slot_freed.set()

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
        if (pool := SIZES_POOL.of(backend)) is not None:
            pool.fit_concurrency(self.concurrency + self.prefetch)
        self._scope = scope_class()
        settlement = self._settlement = Settlement(
            backend, worker=self.name, queues=self.queues, lease=self.lease
        )
        registration = Registration(self)
        try:
            await self._run(backend, settlement, registration, task_status)
        finally:
            await registration.goodbye(backend)
        log.info("worker %s stopped after %d job(s)", self.name, self.processed)

    async def _run(
        self,
        backend: Backend,
        settlement: Settlement,
        registration: Registration,
        task_status: TaskStatus[Worker],
    ) -> None:
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self.offload.aclose)
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
                service.start_soon(settlement.run)
                service.start_soon(
                    renew, settlement, self.heartbeat_interval, self.lease, self._stop_job
                )
                service.start_soon(
                    maintain, backend, self.name, self.recover_interval, self._first_claim
                )
                every = self.heartbeat_interval
                await registration.put(backend)
                service.start_soon(keep_registered, registration, backend, every)
                if (pushes := PUSHES_CANCEL.of(backend)) is not None:
                    service.start_soon(hear_cancels, pushes, self.name, every, self._stop_job)
                context = ServiceContext(
                    self.app, backend, self.name, self.queues, lambda: self._stopping
                )
                for extra in (*self.app.default_services(), *self.services):
                    service.start_soon(extra, context)
                service.start_soon(self.offload.processes.start, context)
                if self.blocking is not None:
                    service.start_soon(self.blocking.run, context)
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
                await settlement.flush()
                service.cancel_scope.cancel()

    async def _open_backend(self) -> Backend | None:
        """The opened backend; ``None`` if stopped first.

        A store that is unreachable (``BackendUnavailable``: down, restarting,
        loading) is waited for with backoff, for as long as it takes. One
        that answers but refuses (a wrong password, a path that names no
        database) is tried ``OPEN_TRIES`` times, then its error is raised:
        waiting cannot fix a configuration. A burst worker, run to empty the
        queues and exit, gives up on an unreachable store after
        ``OPEN_TRIES`` tries too, and raises its error.
        """
        backoff = Backoff()
        refused = unreachable = 0
        while not self._stopping:
            try:
                return await self.app.backend_opened()
            except BackendUnavailable as exc:
                unreachable += 1
                if self.burst and unreachable >= OPEN_TRIES:
                    raise
                what = f"worker {self.name}: cannot reach the backend"
                await self._interruptible(partial(backoff.wait, what, exc))
            except BackendError as exc:
                refused += 1
                if refused >= OPEN_TRIES:
                    raise
                what = f"worker {self.name}: the backend refused to open"
                await self._interruptible(partial(backoff.wait, what, exc))
        return None

    async def _fetch_loop(self) -> None:
        backend = self.app.backend
        settlement = self._settlement
        backoff = Backoff()
        with settlement.claiming():
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
                        leases = await settlement.claim(free)
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
                        if not leases and not settlement.unsettled:
                            self._stopping = True
                            break
                        if self.running:
                            await self._park(self._slot_freed.wait)
                            self._slot_freed = anyio.Event()
                        elif not leases:
                            await self._park(settlement.wait_settled)
                        continue
                    try:
                        await self._park(
                            lambda: backend.wait_for_work(self.queues, self.poll_interval)
                        )
                    except BackendError as exc:
                        what = f"worker {self.name}: waiting for work failed"
                        await self._park(partial(backoff.wait, what, exc))

    async def _park(self, wait: Callable[[], Awaitable[object]]) -> None:
        """Await ``wait()`` (interruptibly) with the settle loop in charge of outcomes meanwhile."""
        self._settlement.park()
        try:
            await self._interruptible(wait)
        finally:
            self._settlement.unpark()

    async def _interruptible(self, wait: Callable[[], Awaitable[object]]) -> None:
        """Await ``wait()``, unless or until ``stop()`` is called."""
        with anyio.CancelScope() as scope:
            self._wait_scope = scope
            if self._stopping:
                scope.cancel()
            await wait()
        self._wait_scope = None

    def _start(self, lease: Lease) -> None:
        if self._stopping:  # claimed while stopping: never started
            self._settlement.hand_back(lease)
            return
        running = Running(lease, self._scope())
        self.running[lease.job.id] = running
        self._dispatch.put(running)

    def _free(self, job_id: str) -> None:
        """A job leaves its slot (or its place among those claimed ahead): one more is free."""
        del self.running[job_id]
        self._slot_freed.set()

    async def _start_slots(self, slots: TaskGroup) -> None:
        # A task of its own, so the slots start while the first claim is on
        # its way rather than before it is sent (each costs some microseconds).
        for _ in range(self.concurrency):
            slots.start_soon(self._slot)

    async def _slot(self) -> None:
        backend = self.app.backend
        settlement = self._settlement
        while (running := await self._dispatch.get()) is not None:
            await self._run_one(backend, settlement, running)

    async def _run_one(self, backend: Backend, settlement: Settlement, running: Running) -> None:
        job_id = running.lease.job.id
        try:
            outcome = await execute(self.app, backend, running, self._state, self.offload)
        finally:
            self._free(job_id)
        self.processed += 1
        if outcome is None:
            settlement.forget(job_id)
        else:
            settlement.put(outcome)
            if outcome.error is not None:
                if outcome.state is JobState.FAILED:
                    self.failed += 1
                elif outcome.state is JobState.DEAD:
                    self.dead += 1
                if outcome.error.kind is ErrorKind.FATAL:
                    self._stop_on_fatal(running, outcome)

    def _stop_on_fatal(self, running: Running, outcome: Outcome) -> None:
        """Stop gracefully after a fatal failure, remembering the first one."""
        assert outcome.error is not None
        job = running.lease.job
        if self.fatal is None:
            self.fatal = FatalFailure(job.id, job.name, job.queue, outcome.error.one_line())
            log.error("worker %s: %s; stopping so that it can be restarted", self.name, self.fatal)
        self.stop()

    async def _drain(self) -> None:
        """After the fetch loop: wait for running jobs, then hand back what is left."""
        if self.running:
            with anyio.move_on_after(self.shutdown_timeout) as self._drain_scope:
                while self.running:
                    await self._slot_freed.wait()
                    self._slot_freed = anyio.Event()
            for running in list(self.running.values()):
                running.interrupt(StopReason.SHUTDOWN)
            if self.running:
                log.warning(
                    "worker %s: handing %d unfinished job(s) back to their queues",
                    self.name,
                    len(self.running),
                )

    def _stop_job(self, job_id: str, reason: StopReason) -> None:
        """Cancel a job; one claimed ahead is settled now, without waiting for a slot."""
        running = self.running.get(job_id)
        if running is None:
            return
        if reason is StopReason.LOST:
            log.warning("worker %s: lost the lease on job %s; cancelling it", self.name, job_id)
        running.interrupt(reason)
        if not self._dispatch.remove(running):
            return  # a slot runs it: its attempt ends with the reason
        self._free(job_id)
        outcome = stopped_outcome(running, started=False)
        if outcome is not None:
            self._settlement.put(outcome)
