"""App: the job registry, the backend it talks to, and the way to run workers."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack, overload

import anyio

from ._codec import MAX_PAYLOAD_BYTES
from ._context import JobContext
from ._cron import DEFAULT_PAYLOAD, add_schedule, run_schedules
from ._events import EventKind
from ._handler import Handler, JobHandle, JobOptions, return_type
from ._instrumentation import EnqueueNext, Instrumentation
from ._limits import Circuit, Limit
from ._logging import job_fields
from ._loops import LoopBackends
from ._middleware import Middleware
from ._options import name_problem
from ._records import JobRecord
from ._retry import Classifier, FailureClass, RetryPolicy, classifier, seconds
from ._subscribe import EventSubscription
from ._telemetry import Telemetry, default_telemetry
from .backends import DEFAULT_URL, from_url
from .backends.base import ENQUEUE_WAITED, EVENTS, Backend
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from datetime import tzinfo

    from ._cron import CronSchedule
    from ._flow import Flow
    from ._worker import Worker
    from ._worker_types import Service, WorkerOptions
    from .admin import Admin
    from .sync import SyncApp

__all__ = ["App"]

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("asyncq")

Lifespan = Callable[["App"], AbstractAsyncContextManager[Any]]

#: Called before an app falls back to ``DEFAULT_URL`` (no ``backend=``, no
#: ``ASYNCQ_BACKEND``); it may raise. The pytest plugin sets it, so that a test
#: which forgot to isolate fails rather than writing ``./asyncq.db``.
default_guard: Callable[[App], None] | None = None

#: How long a job whose name no worker knows is handed back before it is dead (10 min).
UNKNOWN_JOB_GRACE = 600.0


class JobDecorator(Generic[T]):
    """What ``@app.job(schema=T, ...)`` returns; applied to a function, registers a ``Handler``."""

    def __init__(self, register: Callable[[Callable[..., Any]], Handler[T, Any]]) -> None:
        self._register = register

    # An async function's result is what it returns once awaited; a plain
    # function's (run in a thread) is what it returns.
    @overload
    def __call__(self, fn: Callable[[T, JobContext], Awaitable[R]], /) -> Handler[T, R]: ...
    @overload
    def __call__(self, fn: Callable[[T], Awaitable[R]], /) -> Handler[T, R]: ...
    @overload
    def __call__(self, fn: Callable[[T, JobContext], R], /) -> Handler[T, R]: ...
    @overload
    def __call__(self, fn: Callable[[T], R], /) -> Handler[T, R]: ...
    def __call__(self, fn: Callable[..., Any], /) -> Handler[T, Any]:
        return self._register(fn)


class App:
    """An application: its jobs, its backend, its lifespan.

    Args:
        name: names the app in logs and metrics.
        backend: a URL (``redis://``, ``postgresql://``, ``sqlite:///path``,
            ``memory://``) or a ``Backend`` instance. When ``None``, the
            ``ASYNCQ_BACKEND`` environment variable, else a SQLite file
            ``./asyncq.db``.
        jobs: handlers to include (the declarative alternative to ``@app.job``).
        lifespan: ``lifespan(app)`` returns an async context manager that a
            worker enters once at start; what it yields is ``ctx.state`` in
            every handler (a DB pool, an HTTP client).
        middleware: callables wrapped around every handler call, outermost
            first: ``async def mw(ctx, call_next) -> result``.
        instrumentation: hooks around every enqueue and every attempt, which
            also see each attempt's outcome (``asyncq.Instrumentation``).
        telemetry: OpenTelemetry spans and metrics: ``True`` (default) on the
            global providers, a ``Telemetry`` for chosen providers, ``False``
            for none. It runs first among the instrumentation.
        max_payload_bytes: the largest payload, encoded, that ``enqueue``
            accepts and a worker decodes (default 1 MiB).
        unknown_job_grace: seconds a job whose name this app's workers do not
            know is handed back, with backoff, for a worker that knows it (a
            rolling deploy), counted from the first time a worker handed it
            back; then it is dead (kind ``unknown_job``). Default 10 minutes;
            0 makes it dead at once.
        events: write the job event stream (``app.events()``, job
            histories): ``True`` turns it on on the app's store, ``False``
            off; ``None`` (the default) leaves the store's own setting (on
            unless its URL says ``?events=false``). What it costs each store:
            docs/events.md.

    Raises:
        ConfigurationError: ``max_payload_bytes`` is not a positive int,
            ``unknown_job_grace`` is negative or not finite, or an included job
            breaks the rules for names.
    """

    def __init__(
        self,
        name: str = "asyncq",
        *,
        backend: str | Backend | None = None,
        jobs: Iterable[Handler[Any, Any]] = (),
        lifespan: Lifespan | None = None,
        middleware: Sequence[Middleware] = (),
        instrumentation: Sequence[Instrumentation] = (),
        telemetry: Telemetry | bool = True,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        unknown_job_grace: float | timedelta = UNKNOWN_JOB_GRACE,
        events: bool | None = None,
    ) -> None:
        self.name = name
        #: whether the app's store writes job events; ``None``: as the store is configured
        self.writes_events = events
        if type(max_payload_bytes) is not int or max_payload_bytes < 1:
            msg = f"max_payload_bytes must be a positive int, got {max_payload_bytes!r}"
            raise ConfigurationError(msg)
        grace = seconds(unknown_job_grace)
        if not (math.isfinite(grace) and grace >= 0):
            msg = f"unknown_job_grace must be finite seconds >= 0, got {unknown_job_grace!r}"
            raise ConfigurationError(msg)
        #: seconds a job of an unknown name is handed back before it is dead
        self.unknown_job_grace = grace
        #: the ``classify`` rules, in the order registered
        self.classifiers: list[Classifier] = []
        #: the largest encoded payload enqueued or decoded (see ``docs/guarantees.md``)
        self.max_payload_bytes = max_payload_bytes
        self.handlers: dict[str, Handler[Any, Any]] = {}
        #: the limits declared with ``limit()``, by name
        self.limits: dict[str, Limit] = {}
        #: the circuit breakers declared with ``circuit()``, by name
        self.circuits: dict[str, Circuit] = {}
        self.lifespan = lifespan
        self.middleware: list[Middleware] = list(middleware)
        if telemetry is True:
            telemetry = default_telemetry()
        #: the OpenTelemetry instrumentation, or ``None``
        self.telemetry: Telemetry | None = telemetry or None
        #: hooks around enqueues and attempts, in order (telemetry first)
        self.instrumentation: list[Instrumentation] = list(instrumentation)
        if self.telemetry is not None:
            self.instrumentation.insert(0, self.telemetry)
        #: cron schedules by name (``@app.cron``); every worker keeps them enqueued
        self.cron_schedules: dict[str, CronSchedule] = {}
        self._admin: Admin | None = None
        self._sync: SyncApp | None = None
        self._backend_spec: str | Backend | None = backend
        self._backend: Backend | None = backend if isinstance(backend, Backend) else None
        self._quiet_events(self._backend)
        self._loops = self._loop_backends()
        for handler in jobs:
            self.include(handler)

    def __repr__(self) -> str:
        return f"App({self.name!r}, jobs={len(self.handlers)})"

    # -- registration ------------------------------------------------------------

    def job(
        self,
        *,
        schema: type[T],
        name: str | None = None,
        queue: str = "default",
        timeout: float | timedelta | None = None,
        max_attempts: int = 3,
        retry: RetryPolicy | None = None,
        retry_on: tuple[type[BaseException], ...] | None = None,
        dead_on: tuple[type[BaseException], ...] = (),
        fatal_on: tuple[type[BaseException], ...] = (),
        priority: int = 0,
        result_ttl: float | timedelta | None = 86_400.0,
        process: bool = False,
        limits: Sequence[Limit] = (),
        circuit: Circuit | None = None,
    ) -> JobDecorator[T]:
        """Register a function as a job taking a ``schema`` payload.

        The function takes ``(payload)`` or ``(payload, ctx: JobContext)``; its
        return annotation types the result. An ``async def`` runs on the
        worker's event loop; a plain ``def`` runs in a thread of the worker's
        pool (``threads``); with ``process=True`` either runs in a child process
        of the worker's pool (``processes``): see ``docs/handlers.md``.

        The name defaults to ``module.function``: it is the wire contract between producers and
        workers, so keep it stable (pass ``name=`` before renaming code).

        Args:
            schema: the payload type (Struct, dataclass, TypedDict, builtins).
            timeout: seconds one attempt may run (a timeout is a failed attempt).
            max_attempts: attempts before the job goes dead.
            retry: backoff between attempts (default: exponential from 1 s, doubling,
                capped at 5 min, with full jitter).
            retry_on: only these exceptions are retried (default: all).
            dead_on: these exceptions send the job to the dead letters at once.
            fatal_on: these exceptions mean the worker itself is broken (out of
                memory, a lost device): the attempt is recorded with kind
                ``fatal``, the job is retried per its policy, and the worker
                stops gracefully so that its supervisor restarts it (``asyncq
                run`` exits 3). See ``classify`` for the order of the rules.
            priority: larger runs first.
            result_ttl: how long results (and idempotency keys) are kept; ``None`` for ever.
            process: run it in a child process (CPU-bound work). The function
                must be importable by its module and qualified name (defined at
                the top level of a module, or of the script run as ``__main__``).
            limits: limits (``App.limit``) its jobs pass before they start, in
                the store, across every worker: see ``docs/flow-control.md``.
            circuit: the circuit breaker (``App.circuit``) its jobs run behind.

        Raises:
            ConfigurationError: a job with this name exists, an option is
                invalid, the name or queue breaks the rules for names, or a
                process handler cannot be imported by name.
        """

        def register(fn: Callable[..., Any]) -> Handler[T, Any]:
            policy = retry or RetryPolicy()
            if retry_on is not None or dead_on or fatal_on:
                policy = policy.classify(
                    retry_on if retry_on is not None else policy.retry_on,
                    dead_on or policy.dead_on,
                    fatal_on or None,
                )
            options = JobOptions(
                queue=queue,
                timeout=None if timeout is None else seconds(timeout),
                max_attempts=max_attempts,
                retry=policy,
                priority=priority,
                result_ttl=None if result_ttl is None else seconds(result_ttl),
                limits=tuple(limits),
                circuit=circuit,
            )
            job_name = name or f"{fn.__module__}.{fn.__qualname__}"
            handler: Handler[T, Any] = Handler(
                self, job_name, schema, fn, options, result_type=return_type(fn), process=process
            )
            self.include(handler)
            return handler

        return JobDecorator(register)

    def limit(
        self,
        name: str,
        *,
        rate: float | None = None,
        per: float = 1.0,
        concurrency: int | None = None,
        burst: float = 1.0,
        key: Callable[[Any], object] | None = None,
    ) -> Limit:
        """Declare a limit on when jobs start, held by the store across every worker.

        Attach it with ``@app.job(..., limits=[limit])``; several jobs may share
        it. ``rate`` starts per ``per`` seconds (a token bucket of ``burst``
        tokens), ``concurrency`` jobs running at once, or both. With ``key``
        (a function of the payload), the limit holds per key value, computed at
        enqueue. A job held back stays queued and uses no attempt; the jobs
        behind it keep flowing. See ``docs/flow-control.md``.

        Raises:
            ConfigurationError: the app has a limit with this name, or a
                number is out of range.
        """
        made = Limit(name, rate=rate, per=per, concurrency=concurrency, burst=burst, key=key)
        existing = self.limits.get(name)
        if existing is not None:
            msg = f"app {self.name!r} already has a limit named {name!r}: {existing!r}"
            raise ConfigurationError(msg)
        self.limits[name] = made
        return made

    def circuit(
        self, name: str, *, failures: int = 5, within: float = 60.0, reset_after: float = 30.0
    ) -> Circuit:
        """Declare a circuit breaker, kept in the store and shared by every worker.

        Attach it with ``@app.job(..., circuit=circuit)``. After ``failures``
        failed attempts of its jobs within ``within`` seconds, or a handler's
        ``raise CircuitOpen(...)``, it opens: its jobs wait, without using
        attempts, for ``reset_after`` seconds; then one probe job runs, whose
        success closes it and whose failure opens it again. See
        ``docs/flow-control.md``.

        Raises:
            ConfigurationError: the app has a circuit with this name, or a
                number is out of range.
        """
        made = Circuit(name, failures=failures, within=within, reset_after=reset_after)
        existing = self.circuits.get(name)
        if existing is not None:
            msg = f"app {self.name!r} already has a circuit named {name!r}: {existing!r}"
            raise ConfigurationError(msg)
        self.circuits[name] = made
        return made

    def classify(
        self,
        match: type[BaseException]
        | tuple[type[BaseException], ...]
        | Callable[[BaseException], bool],
        failure_class: FailureClass,
    ) -> None:
        """Classify the exceptions every job of this app may raise.

        ``match`` is an exception class (or a tuple of them), or a predicate
        taking the exception. ``failure_class`` is what a match means:

        - ``"transient"``: retried per the job's policy (while attempts remain);
        - ``"permanent"``: the job goes to the dead letters now;
        - ``"fatal"``: the attempt is recorded with kind ``fatal``, the job is
          retried per its policy, and the worker stops gracefully (no new
          claims, running jobs finish within ``shutdown_timeout``, outcomes
          settled), so that its supervisor restarts it; ``asyncq run`` exits 3.

        The rules apply in this order, the first that matches deciding:

        1. ``raise Retry(...)`` (retried) and ``raise Reject(...)`` (dead);
        2. the job's ``dead_on`` (permanent), then its ``retry_on`` (transient);
        3. the job's ``fatal_on`` (fatal);
        4. the app's ``classify`` rules, in the order registered (a predicate
           that raises is logged and skipped);
        5. the default: transient, or permanent when the job has ``retry_on``.

        Timeouts, payloads that do not decode and results that cannot be
        stored are not classified: they fail as documented in
        ``docs/guarantees.md``.

        Raises:
            ConfigurationError: ``failure_class`` is not one of the three, or
                ``match`` is neither exception classes nor a callable.
        """
        self.classifiers.append(classifier(match, failure_class))

    def include(self, *handlers: Handler[Any, Any]) -> None:
        """Register handlers made elsewhere (for example by another ``App``'s decorator).

        Raises:
            ConfigurationError: two jobs share a name, or a job's name or queue
                breaks the rules for names.
        """
        for handler in handlers:
            _check_names(handler.name, handler.options.queue)
            existing = self.handlers.get(handler.name)
            if existing is not None and existing is not handler:
                msg = (
                    f"two jobs are named {handler.name!r} in app {self.name!r}; "
                    "give one of them name=..."
                )
                raise ConfigurationError(msg)
            handler.app = self
            self.handlers[handler.name] = handler

    @overload
    def handle(
        self,
        name: str,
        *,
        schema: type[T],
        result: type[R],
        queue: str = ...,
        max_attempts: int = ...,
        timeout: float | None = ...,
        priority: int = ...,
        result_ttl: float | None = ...,
        limits: Sequence[Limit] = ...,
        circuit: Circuit | None = ...,
    ) -> Handler[T, R]: ...
    @overload
    def handle(
        self,
        name: str,
        *,
        schema: type[T],
        queue: str = ...,
        max_attempts: int = ...,
        timeout: float | None = ...,
        priority: int = ...,
        result_ttl: float | None = ...,
        limits: Sequence[Limit] = ...,
        circuit: Circuit | None = ...,
    ) -> Handler[T, Any]: ...
    def handle(
        self,
        name: str,
        *,
        schema: type[T],
        result: Any = Any,
        queue: str = "default",
        max_attempts: int = 3,
        timeout: float | None = None,
        priority: int = 0,
        result_ttl: float | None = 86_400.0,
        limits: Sequence[Limit] = (),
        circuit: Circuit | None = None,
    ) -> Handler[T, Any]:
        """A typed producer-side handle for a job implemented in another service.

        It enqueues and waits like a registered handler but has no function,
        so a worker of this app will not run it. A job's limits and circuit
        travel with each job the producer stores: give the same ``limits`` and
        ``circuit`` as the job's ``@app.job`` (see ``docs/flow-control.md``).

        Raises:
            ConfigurationError: an option is invalid, or the name or queue
                breaks the rules for names.
        """
        _check_names(name, queue)
        options = JobOptions(
            queue=queue,
            timeout=timeout,
            max_attempts=max_attempts,
            priority=priority,
            result_ttl=result_ttl,
            limits=tuple(limits),
            circuit=circuit,
        )
        return Handler(self, name, schema, None, options, result_type=result)

    def cron(
        self,
        expression: str,
        *,
        tz: str | tzinfo | None = None,
        name: str | None = None,
        payload: Any = DEFAULT_PAYLOAD,
        queue: str | None = None,
    ) -> Callable[[Handler[T, R]], Handler[T, R]]:
        """Enqueue a job on every tick of a cron expression, once per tick across all workers.

        Put it above ``@app.job(...)``::

            @app.cron("0 3 * * *", tz="Europe/Paris")
            @app.job(schema=Report)
            async def nightly_report(payload: Report) -> None: ...

        Every worker of the app keeps the next tick enqueued (a ``scheduled``
        job with the key ``cron:{name}:{tick}``), so one job runs per tick; a
        downtime is caught up by one run. See ``docs/operations.md``.

        Args:
            expression: five fields (minute hour day month weekday), or six with
                seconds last (``* * * * * */10``).
            tz: the zone the expression is read in (an IANA name or a ``tzinfo``;
                default UTC).
            name: names the schedule (default: the job's name); needed when one
                job has several schedules.
            payload: each run's payload (default: the schema built from no
                fields, for a Struct whose fields all have defaults).
            queue: overrides the job's queue.

        Raises:
            ConfigurationError: croniter is missing (``pip install 'asyncq[cron]'``),
                the expression or zone is invalid, or the name is taken.
            ValidationError: ``payload`` does not match the job's schema.
        """

        def register(handler: Handler[T, R]) -> Handler[T, R]:
            add_schedule(self, handler, expression, tz=tz, name=name, payload=payload, queue=queue)
            return handler

        return register

    @property
    def admin(self) -> Admin:
        """Operator verbs (status, dead letters, retry, purge, pause...): ``asyncq.Admin``."""
        if self._admin is None:
            from .admin import Admin

            self._admin = Admin(self)
        return self._admin

    @property
    def sync(self) -> SyncApp:
        """Blocking producer calls for code without an event loop (``asyncq.sync.SyncApp``)."""
        if self._sync is None:
            from .sync import SyncApp

            self._sync = SyncApp(self)
        return self._sync

    def flow(self) -> Flow:
        """A new, empty ``Flow``: jobs that wait for one another, enqueued in one atomic step."""
        from ._flow import Flow

        return Flow(self)

    def get_job(self, job_id: str) -> JobHandle[Any]:
        """A handle for a stored job id, from any process; its result decodes to builtins."""
        from ._codec import Codec

        return JobHandle(self, job_id, Codec(Any, "?"))

    @property
    def queues(self) -> list[str]:
        """The queues this app's jobs go to, sorted."""
        return sorted({h.options.queue for h in self.handlers.values() if h.fn is not None})

    # -- backend lifecycle ---------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """The backend of the running event loop (not yet opened); outside a loop, the app's own.

        Each event loop gets its own backend, made from the same URL (see
        ``docs/integrations.md``): the first loop uses the app's own.
        """
        return self._loops.current()

    def _home_backend(self) -> Backend:
        """The app's own backend, made from the configured URL on first use."""
        if self._backend is None:
            url = self._url()
            if url is None and default_guard is not None:
                default_guard(self)
            if url is None:
                log.info(
                    "app %r: no backend given (backend= or ASYNCQ_BACKEND); using %s in %s",
                    self.name,
                    DEFAULT_URL,
                    os.getcwd(),
                )
            self._backend = from_url(url or DEFAULT_URL)
            self._quiet_events(self._backend)
        return self._backend

    def _url(self) -> str | None:
        spec = self._backend_spec if isinstance(self._backend_spec, str) else None
        return spec or os.environ.get("ASYNCQ_BACKEND")

    def _loop_backends(self) -> LoopBackends:
        fresh = None
        if not isinstance(self._backend_spec, Backend):
            fresh = self._fresh_backend
        return LoopBackends(self.name, self._home_backend, fresh, _is_shared)

    def _fresh_backend(self) -> Backend:
        """A backend of its own for another event loop, from the app's URL."""
        backend = from_url(self._url() or DEFAULT_URL)
        self._quiet_events(backend)
        return backend

    def _quiet_events(self, backend: Backend | None) -> None:
        """Set the store's job events as ``App(events=...)`` says (``None``: leave them)."""
        if self.writes_events is not None and backend is not None:
            store = EVENTS.of(backend)
            if store is not None:
                store.events = self.writes_events

    def events(
        self,
        *,
        queues: Sequence[str] | None = None,
        names: Collection[str] | None = None,
        kinds: Collection[EventKind | str] | None = None,
        since: str | datetime | float | None = None,
    ) -> EventSubscription:
        """Follow the job events of the app's store: ``async with app.events() as stream``.

        ``async for event in stream`` yields each ``JobEvent`` as the store
        writes it, in order per job, at least once; and an ``EventsLost``
        where the store pruned events before they were read. ``since``: an
        event id (resume right after it, e.g. ``stream.last_id`` of an earlier
        subscription), or a time (``datetime`` or epoch seconds); by default
        from now. ``queues``, ``names``, ``kinds`` filter. See ``docs/events.md``.
        """
        return EventSubscription(self, queues=queues, names=names, kinds=kinds, since=since)

    @property
    def backend_spec(self) -> str | Backend | None:
        """The backend as configured: a URL, an instance, or ``None`` (environment or default)."""
        return self._backend_spec

    def use_backend(self, backend: str | Backend | None) -> None:
        """Replace the backend (a URL, an instance, or ``None`` for the default). Not while open."""
        if self._loops.any_open:
            msg = f"app {self.name!r}: cannot change the backend while it is open"
            raise ConfigurationError(msg)
        self._backend_spec = backend
        self._backend = backend if isinstance(backend, Backend) else None
        self._quiet_events(self._backend)
        self._loops = self._loop_backends()

    async def backend_opened(self) -> Backend:
        """This loop's backend, opened on first use (producers need not enter ``async with app``).

        It is closed by ``close()``, or when its event loop shuts down.
        """
        backend = self._loops.ready()
        if backend is not None:
            return backend
        return await self._loops.opened()

    async def open(self) -> None:
        """Open this loop's backend now."""
        await self._loops.opened()

    async def close(self) -> None:
        """Close this loop's backend. Idempotent."""
        await self._loops.close()

    async def __aenter__(self) -> App:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def enqueue_records(
        self,
        jobs: Sequence[JobRecord],
        *,
        connection: object | None = None,
        waited: bool = False,
        fresh: bool = False,
    ) -> list[JobRecord]:
        """Store built records (``Handler.enqueue`` ends here).

        ``waited``: the caller waits for the jobs next (``enqueue_and_wait``),
        which a backend with ``ENQUEUE_WAITED`` prepares for. ``fresh``: every
        id was made by ``new_job_id`` for this call (see ``Backend.enqueue``).
        """
        backend = await self.backend_opened()
        store: EnqueueNext
        if waited and connection is None and (prepared := ENQUEUE_WAITED.of(backend)) is not None:
            store = prepared.enqueue_waited
        elif connection is None and (batcher := self._loops.batcher(backend)) is not None:
            store = partial(batcher.enqueue, fresh=fresh)
        else:
            store = partial(backend.enqueue, connection=connection, fresh=fresh)
        if self.instrumentation:
            for hook in reversed(self.instrumentation):
                store = partial(hook.enqueue, call_next=store)
        stored = await store(jobs)
        if log.isEnabledFor(logging.DEBUG):
            for job in stored:
                log.debug("job %r (id %s) %s", job.name, job.id, job.state, extra=job_fields(job))
        return stored

    # -- workers -------------------------------------------------------------------

    def default_services(self) -> list[Service]:
        """The services every worker of this app runs, before its own (``Worker(services=)``).

        The queue-depth gauge when telemetry is on, and the cron schedules
        when there are any (see ``cron``).
        """
        services: list[Service] = []
        if self.telemetry is not None:
            services.append(self.telemetry.watch_depth)
        if self.cron_schedules:
            services.append(run_schedules)
        return services

    def make_worker(self, **options: Unpack[WorkerOptions]) -> Worker:
        """A ``Worker`` for this app; see ``Worker`` for the options."""
        from ._worker import Worker

        return Worker(self, **options)

    @asynccontextmanager
    async def worker(self, **options: Unpack[WorkerOptions]) -> AsyncIterator[Worker]:
        """Run a worker in the background of the ``async with`` block (tests, web apps).

        Leaving the block stops it gracefully: no new claims, running jobs finish
        (within ``shutdown_timeout``), and the rest are handed back.
        """
        worker = self.make_worker(**options)
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            try:
                yield worker
            finally:
                worker.stop()

    async def run_worker(self, **options: Unpack[WorkerOptions]) -> Worker:
        """Run a worker until cancelled or signalled (SIGTERM/SIGINT: graceful; a second: now).

        Returns the stopped worker: its ``fatal`` says whether a fatal failure
        stopped it (see ``classify``).
        """
        worker = self.make_worker(**options)
        await worker.run_until_signalled()
        return worker


def _is_shared(backend: Backend) -> bool:
    """The in-process store is one store for every loop of the process."""
    from .backends.memory import MemoryBackend

    return isinstance(backend, MemoryBackend)


def _check_names(name: str, queue: str) -> None:
    """Refuse a job whose name or queue breaks the rules for names (``name_problem``)."""
    problem = name_problem("job name", name)
    if problem is not None:
        msg = f"{problem} (the job's queue: {queue!r:.80})"
        raise ConfigurationError(msg)
    problem = name_problem("queue", queue)
    if problem is not None:
        msg = f"job {name!r}: {problem}"
        raise ConfigurationError(msg)
