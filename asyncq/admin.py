"""Operator verbs in Python: what ``asyncq status/jobs/job/retry/purge/remove/...`` call.

::

    admin = app.admin
    for job in await admin.jobs(state=JobState.DEAD, queue="images"):
        print(job.id, job.last_error.one_line() if job.last_error else "")
    await admin.retry_all(queue="images")
    await admin.purge(states=[JobState.DEAD], older_than=timedelta(days=7))

Every method opens the app's backend on first use and talks to it only
through the ``Backend`` protocol, so the same calls work on every store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Unpack

import msgspec
from msgspec.structs import replace

from ._events import JobEvent
from ._options import EnqueueArgs
from ._records import (
    TERMINAL_STATES,
    CircuitState,
    Gate,
    JobRecord,
    JobState,
    LimitState,
    QueueStats,
    WorkerInfo,
)
from ._retry import seconds
from ._subscribe import job_history
from .backends._limits import available, fresh_state
from .backends.base import MIGRATE
from .exceptions import ConfigurationError, JobNotFound, ValidationError

if TYPE_CHECKING:
    from ._app import App
    from ._handler import Handler, JobHandle
    from .backends.base import Backend

__all__ = ["Admin", "CronStatus", "QueueStatus", "Status"]

#: Progress callbacks get the running total of jobs handled so far.
ProgressCallback = Callable[[int], None]


class QueueStatus(msgspec.Struct, frozen=True):
    """One queue at one moment.

    Attributes:
        queue: the queue's name.
        counts: jobs in each state (every state present, zero included).
        paused: whether workers skip it.
        oldest_ready_age: seconds the oldest ready job has waited; ``None`` when none is ready.
        completed_per_minute: jobs completed per minute since the previous
            snapshot; ``None`` without one (see ``Admin.status``).
        dead_per_minute: jobs that went dead per minute, likewise.
    """

    queue: str
    counts: dict[JobState, int]
    paused: bool = False
    oldest_ready_age: float | None = None
    completed_per_minute: float | None = None
    dead_per_minute: float | None = None


class CronStatus(msgspec.Struct, frozen=True):
    """One cron schedule of the app, and when it fires next (epoch seconds)."""

    name: str
    job: str
    queue: str
    expression: str
    tz: str
    next_run: float


class Status(msgspec.Struct, frozen=True):
    """A snapshot of the store as the app sees it.

    Attributes:
        at: when it was taken (epoch seconds, this machine's clock).
        backend: the store's URL (password masked).
        queues: every queue of the app and of the store, sorted by name.
        cron: the app's cron schedules.
        limits: each limit's current use (``Admin.limits``).
        circuits: each circuit breaker's state (``Admin.circuits``).
    """

    at: float
    backend: str
    queues: list[QueueStatus]
    cron: list[CronStatus] = []
    #: the flow-control counters (``Admin.limits``)
    limits: list[LimitState] = []
    #: the circuit breakers (``Admin.circuits``)
    circuits: list[CircuitState] = []


class Admin:
    """Operator verbs for an app's store: ``app.admin``.

    Args:
        app: the app whose backend and jobs are operated on.
    """

    def __init__(self, app: App) -> None:
        self.app = app

    def __repr__(self) -> str:
        return f"Admin({self.app.name!r})"

    async def _backend(self) -> Backend:
        return await self.app.backend_opened()

    # -- looking -----------------------------------------------------------------

    async def queues(self) -> list[str]:
        """Every queue the app's jobs use or the store knows of, sorted."""
        stored = {s.queue for s in await (await self._backend()).stats()}
        return sorted(self._app_queues() | stored)

    def app_queues(self) -> list[str]:
        """The queues this app's jobs and cron schedules use, sorted (the store may hold more)."""
        return sorted(self._app_queues())

    def _app_queues(self) -> set[str]:
        queues = {handler.options.queue for handler in self.app.handlers.values()}
        queues.update(schedule.queue for schedule in self.app.cron_schedules.values())
        return queues

    async def status(
        self, queues: Sequence[str] | None = None, *, previous: Status | None = None
    ) -> Status:
        """Counts by state, oldest ready job and pause flag per queue, and the cron schedules.

        Throughput needs two snapshots: pass the previous one to get jobs
        completed (and gone dead) per minute between the two. Jobs purged or
        pruned meanwhile are not counted.

        Args:
            queues: only these queues, and the schedules enqueueing into them
                (default: every queue of the app and of the store).
            previous: an earlier snapshot, for throughput.
        """
        backend = await self._backend()
        if queues is None:
            stored = await backend.stats()
            missing = sorted(self._app_queues() - {s.queue for s in stored})
            stats = sorted(
                [*stored, *await backend.stats(missing)] if missing else stored,
                key=lambda s: s.queue,
            )
        else:
            stats = await backend.stats(list(queues))
        now = time.time()
        before = {q.queue: q for q in previous.queues} if previous is not None else {}
        elapsed = now - previous.at if previous is not None else 0.0
        views = [_queue_status(s, now, before.get(s.queue), elapsed) for s in stats]
        cron = [
            CronStatus(
                name=schedule.name,
                job=schedule.handler.name,
                queue=schedule.queue,
                expression=schedule.expression,
                tz=str(schedule.tz),
                next_run=schedule.next_after(now),
            )
            for schedule in self.app.cron_schedules.values()
            if queues is None or schedule.queue in queues
        ]
        limits = await self.limits() if queues is None else []
        circuits = await self.circuits() if queues is None else []
        return Status(
            at=now,
            backend=backend.url,
            queues=views,
            cron=cron,
            limits=limits,
            circuits=circuits,
        )

    async def circuits(self) -> list[CircuitState]:
        """Each circuit breaker's state, from the store (per queue on Redis), sorted by name;
        then the app's circuits no job has met yet, closed."""
        found = await (await self._backend()).circuit_states()
        seen = {state.name for state in found}
        unused = [
            CircuitState(
                name=name,
                threshold=circuit.failures,
                within=circuit.within,
                reset_after=circuit.reset_after,
            )
            for name, circuit in sorted(self.app.circuits.items())
            if name not in seen
        ]
        return found + unused

    async def open_circuit(self, name: str) -> list[CircuitState]:
        """Open a circuit now, as if its service failed: its jobs wait ``reset_after``."""
        return await (await self._backend()).set_circuit(name, open_=True)

    async def close_circuit(self, name: str) -> list[CircuitState]:
        """Close a circuit and forget its failures. Jobs it held run when they were
        scheduled for (at most ``reset_after`` from when they were held)."""
        return await (await self._backend()).set_circuit(name, open_=False)

    async def limits(self) -> list[LimitState]:
        """Each limit's current use, from the store, sorted by slot.

        One entry per counter the store keeps (a limit, or each key value of a
        keyed limit; per queue on Redis), with ``running`` jobs, ``held`` jobs
        set aside, and ``tokens`` in the rate's bucket now (``refilled_at`` is
        now); then the app's limits no job has passed yet, unused.
        """
        now = time.time()
        found = [
            replace(state, tokens=available(state, now), refilled_at=now)
            if state.rate is not None
            else state
            for state in await (await self._backend()).limit_states()
        ]
        seen = {state.name for state in found}
        unused = [
            replace(
                fresh_state(
                    Gate(
                        name=name,
                        concurrency=limit.concurrency,
                        rate=limit.rate,
                        per=limit.per,
                        burst=limit.burst,
                    )
                ),
                refilled_at=now,
            )
            for name, limit in sorted(self.app.limits.items())
            if name not in seen
        ]
        return found + unused

    async def jobs(
        self,
        *,
        state: JobState | str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 100,
        after: str | None = None,
        newest: bool = False,
        meta: Mapping[str, str] | None = None,
    ) -> list[JobRecord]:
        """Jobs matching every filter given, oldest first; ``after`` (a job id) pages on.

        Dead letters are ``state="dead"``. With ``newest``, newest first (by
        id, descending), ``after`` paging on to older jobs. ``meta``: jobs
        whose metadata has each of these keys with this value (a non-string
        value matches its JSON text: ``{"retries": "3"}``).
        """
        chosen = None if state is None else JobState(state)
        backend = await self._backend()
        return await backend.list_jobs(
            state=chosen,
            queue=queue,
            name=name,
            limit=limit,
            after=after,
            newest=newest,
            meta=meta or None,
        )

    async def job(self, job_id: str) -> JobRecord:
        """One job as stored now, with its payload, errors (tracebacks included) and result.

        Raises:
            JobNotFound: no such job (never enqueued, or purged).
        """
        job = await (await self._backend()).get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def relatives(self, job: JobRecord, *, most: int = 100) -> dict[str, JobState | None]:
        """The state of each parent and child of ``job`` (``None``: gone), at most ``most`` each.

        What ``asyncq job ID`` shows beside the job: one read per relative.
        """
        backend = await self._backend()
        out: dict[str, JobState | None] = {}
        for job_id in (*job.parents[:most], *job.children[:most]):
            found = await backend.get(job_id)
            out[job_id] = None if found is None else found.state
        return out

    async def history(self, job_id: str) -> list[JobEvent]:
        """What happened to one job, in order: its events the store still keeps.

        ``[]`` when the store keeps none of it (events off, or pruned).
        """
        return await job_history(await self._backend(), job_id)

    # -- acting --------------------------------------------------------------------

    async def retry(self, job_ids: Iterable[str]) -> list[str]:
        """Put these dead jobs back in their queue with fresh attempts; return those retried.

        Ids that are unknown or not dead are left out of the result (and so is
        a dead job whose idempotency key another live job holds now).
        """
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return []
        return await (await self._backend()).retry_dead(ids)

    async def retry_all(
        self,
        *,
        queue: str | None = None,
        name: str | None = None,
        batch: int = 500,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Retry every dead job (matching ``queue`` and ``name``) in batches; return how many.

        The dead letters are walked once, oldest first, by id: a job that dies
        again while this runs is not retried a second time, so the call ends
        even while workers keep failing the jobs it retries.

        Args:
            batch: jobs per round trip.
            progress: called with the running total after each batch.
        """
        backend = await self._backend()
        total = 0
        after: str | None = None
        while True:
            page = await backend.list_jobs(
                state=JobState.DEAD, queue=queue, name=name, limit=batch, after=after
            )
            if not page:
                return total
            total += len(await backend.retry_dead([job.id for job in page]))
            after = page[-1].id
            if progress is not None:
                progress(total)

    async def purge(
        self,
        *,
        states: Iterable[JobState | str],
        older_than: float | timedelta,
        queue: str | None = None,
        batch: int = 1000,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Delete finished jobs in ``states`` that finished more than ``older_than`` ago.

        Args:
            states: any of completed, dead, cancelled.
            older_than: an age (seconds or ``timedelta``), counted from now.
            queue: only this queue.
            batch: jobs deleted per round trip.
            progress: called with the running total after each batch.

        Returns:
            How many jobs were deleted.

        Raises:
            ValueError: a state that is not finished (scheduled, queued, active, failed).
        """
        chosen = sorted({JobState(s) for s in states})
        if not chosen:
            msg = "purge needs at least one state (completed, dead, cancelled)"
            raise ValueError(msg)
        live = [s.value for s in chosen if s not in TERMINAL_STATES]
        if live:
            msg = (
                f"purge only removes finished jobs (completed, dead, cancelled), "
                f"not {', '.join(live)}"
            )
            raise ValueError(msg)
        cutoff = time.time() - seconds(older_than)
        backend = await self._backend()
        total = 0
        while True:
            removed = await backend.purge(
                states=chosen, older_than=cutoff, queue=queue, limit=batch
            )
            total += removed
            if removed and progress is not None:
                progress(total)
            if removed < batch:
                return total

    async def cancel(self, job_id: str, *, by: str = "operator") -> JobRecord:
        """Cancel a job and return it after the request.

        ``by`` is written in the job's ``cancelled`` event (the command line
        says ``cli``, the dashboard ``dashboard``).

        A pending job becomes ``cancelled`` at once; a running one gets
        ``cancel_requested`` and its worker cancels it: at once on a store
        that pushes cancels (``PUSHES_CANCEL``), otherwise at its next
        heartbeat; a finished one is returned unchanged.

        Raises:
            JobNotFound: no such job.
        """
        job = await (await self._backend()).cancel(job_id, by=by)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def remove(self, job_ids: Iterable[str]) -> dict[str, JobState | None]:
        """Delete these jobs, in any state but running; return the state each was in.

        Each id maps to the state its job was in when removed, ``active`` for
        a running job, which is refused and left as it is (cancel it first,
        then remove it), or ``None`` for no such job. Removed jobs free their
        id and key at once; callers waiting for their result get ``JobNotFound``.
        """
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        states = await (await self._backend()).remove(ids)
        return dict(zip(ids, states, strict=True))

    async def workers(self) -> list[WorkerInfo]:
        """The workers in the store's registry, by id: running ones, and those
        stopped or lost in the last ``WORKERS_KEPT_FOR`` seconds
        (``WorkerInfo.status`` tells which)."""
        return await (await self._backend()).workers()

    async def pause(self, queue: str) -> None:
        """Pause a queue: it keeps accepting jobs, but no worker claims from it."""
        await (await self._backend()).set_paused(queue, True)

    async def resume(self, queue: str) -> None:
        """Resume a paused queue; waiting workers wake up."""
        await (await self._backend()).set_paused(queue, False)

    def handler(self, name: str) -> Handler[Any, Any]:
        """The app's job called ``name``.

        Raises:
            ConfigurationError: the app has no such job (the message lists those it has).
        """
        handler = self.app.handlers.get(name)
        if handler is None:
            known = ", ".join(sorted(self.app.handlers)) or "none"
            msg = f"app {self.app.name!r} has no job named {name!r}; its jobs: {known}"
            raise ConfigurationError(msg)
        return handler

    async def enqueue(
        self,
        name: str,
        payload: Any,
        **options: Unpack[EnqueueArgs],
    ) -> JobHandle[Any]:
        """Enqueue job ``name`` with a payload given as builtins (a dict for a Struct schema).

        Keyword options: see ``EnqueueArgs`` (``Handler.enqueue``'s); ``timeout``
        is the job's deadline, since nothing here waits.

        Raises:
            ConfigurationError: the app has no such job, or an option is invalid.
            ValidationError: the payload does not match the schema (the message
                names the field); nothing was stored.
        """
        handler = self.handler(name)
        try:
            value = msgspec.convert(payload, handler.schema)
        except msgspec.ValidationError as exc:
            raise ValidationError(handler.name, str(exc)) from exc
        except RecursionError as exc:
            msg = "nested too deeply to convert, or it contains itself"
            raise ValidationError(handler.name, msg) from exc
        return await handler.enqueue(value, **options)

    async def enqueue_json(
        self,
        name: str,
        document: str | bytes,
        **options: Unpack[EnqueueArgs],
    ) -> JobHandle[Any]:
        """Enqueue job ``name`` with its payload as a JSON document (what the CLI does).

        Keyword options: see ``EnqueueArgs``, as on ``enqueue``.

        Raises:
            ConfigurationError: the app has no such job, or an option is invalid.
            ValidationError: the document is not JSON, or does not match the
                schema (the message names the field); nothing was stored.
        """
        handler = self.handler(name)
        try:
            value = msgspec.json.decode(document, type=handler.payload_codec.json_type)
        except msgspec.ValidationError as exc:
            raise ValidationError(handler.name, str(exc)) from exc
        except msgspec.DecodeError as exc:
            raise ValidationError(handler.name, f"not valid JSON: {exc}") from exc
        except RecursionError as exc:
            msg = "the JSON document is nested too deeply to decode"
            raise ValidationError(handler.name, msg) from exc
        return await handler.enqueue(value, **options)

    async def migrate(self) -> list[int] | None:
        """Apply the backend's pending schema migrations; ``None`` if it has none to apply.

        PostgreSQL keeps a versioned schema that this upgrades (the list holds
        the versions applied, empty when it was up to date); the other stores
        have no separate migrations.
        """
        migrates = MIGRATE.of(self.app.backend)
        if migrates is None:
            return None
        return await migrates.migrate()


def _queue_status(
    stats: QueueStats, now: float, before: QueueStatus | None, elapsed: float
) -> QueueStatus:
    oldest = stats.oldest_ready_at
    completed = dead = None
    if before is not None and elapsed > 0:
        completed = _rate(stats, before, JobState.COMPLETED, elapsed)
        dead = _rate(stats, before, JobState.DEAD, elapsed)
    return QueueStatus(
        queue=stats.queue,
        counts={state: stats.counts.get(state, 0) for state in JobState},
        paused=stats.paused,
        oldest_ready_age=None if oldest is None else max(now - oldest, 0.0),
        completed_per_minute=completed,
        dead_per_minute=dead,
    )


def _rate(stats: QueueStats, before: QueueStatus, state: JobState, elapsed: float) -> float:
    # Purges and pruning lower the counts; a negative rate would only confuse.
    delta = stats.counts.get(state, 0) - before.counts.get(state, 0)
    return max(delta, 0) * 60.0 / elapsed
