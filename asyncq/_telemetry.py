"""OpenTelemetry traces and metrics for every job: asyncq's implementation of the hooks.

``Telemetry`` implements ``Instrumentation`` (``asyncq._instrumentation``):
a PRODUCER span over each enqueue, a CONSUMER span over each attempt, a span
over each ``enqueue_and_wait``, and the metrics. Every app has one unless it
passes ``telemetry=False``.

Only the OpenTelemetry API is imported. Without an SDK nothing records, and
a job costs a clock read and a comparison: no span, no context, no callback.
With one, span attributes are built once, metric attribute dicts are cached,
and nothing costly (exceptions, events, status) happens unless
``span.is_recording()``. Queue depth is read from ``Backend.stats`` by a
worker service, off the hot path, and only while metrics are collected.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import Token
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from opentelemetry import baggage, metrics, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from ._instrumentation import AttemptEnd, EnqueueNext, Instrumentation, RequestEnd, outcome_name
from ._records import CircuitState, JobRecord, LimitState, Outcome
from .exceptions import BackendError

if TYPE_CHECKING:
    from ._context import JobContext
    from ._offload import Offload
    from ._worker_types import ServiceContext
    from .backends.base import Backend

__all__ = ["Telemetry", "default_telemetry"]

log = logging.getLogger("asyncq.telemetry")


# Messaging semantic conventions (v1.26+) and asyncq's own attributes.
SYSTEM = "messaging.system"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
DESTINATION = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
BODY_SIZE = "messaging.message.body.size"
BATCH_COUNT = "messaging.batch.message_count"
ERROR_TYPE = "error.type"
JOB_NAME = "asyncq.job.name"
JOB_ATTEMPT = "asyncq.job.attempt"
JOB_OUTCOME = "asyncq.job.outcome"
JOB_STATE = "asyncq.job.state"
JOB_DUPLICATE = "asyncq.job.duplicate"
#: Prefix of the job's metadata (``enqueue(meta=...)``), one attribute a key.
META_PREFIX = "asyncq.meta."

_SCOPE = "asyncq"
_SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"
_EMPTY = otel_context.Context()
# Jobs run from milliseconds to many minutes; the SDK's default buckets are for milliseconds.
_SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
# Attribute dicts are cached per (queue, job name); names come from the queue,
# so a flood of unknown names must not grow the cache without bound.
_CACHE_LIMIT = 4096


def _error_type(error: BaseException) -> str:
    cls = type(error)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _is_sdk(provider: object) -> bool:
    """Whether a tracer or meter provider records: any but the API's own no-op and proxy ones."""
    return not type(provider).__module__.startswith(
        ("opentelemetry.trace", "opentelemetry.metrics")
    )


def _version() -> str:
    try:
        return importlib.metadata.version("asyncq")
    except importlib.metadata.PackageNotFoundError:
        return ""


class Telemetry(Instrumentation):
    """OpenTelemetry spans and metrics for an app's enqueues and attempts.

    Span names, attributes and instruments are listed in ``docs/observability.md``.

    Args:
        tracer_provider: where spans go (default: the global provider, which
            may be set later: the API's proxy picks it up).
        meter_provider: where metrics go (default: the global provider).
        propagator: how trace context is written into ``JobRecord.headers``
            and read back (default: the global one, W3C trace context and baggage).
        depth_interval: seconds between reads of ``Backend.stats`` for the
            ``asyncq.queue.depth`` gauge, by each worker, while it is collected.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        propagator: TextMapPropagator | None = None,
        depth_interval: float = 15.0,
    ) -> None:
        version = _version()
        self.tracer = trace.get_tracer(_SCOPE, version, tracer_provider, schema_url=_SCHEMA_URL)
        meter = metrics.get_meter(_SCOPE, version, meter_provider, schema_url=_SCHEMA_URL)
        self.propagator = propagator
        self.depth_interval = depth_interval
        # Counters are tallied here and read by the SDK when it collects:
        # a dict update a job instead of an SDK measurement (see _Tally).
        self._enqueued = _Tally(
            meter,
            "asyncq.jobs.enqueued",
            "{job}",
            "Jobs stored by enqueue (idempotent duplicates excluded)",
        )
        self._started = _Tally(meter, "asyncq.jobs.started", "{attempt}", "Attempts started")
        self._completed = _Tally(meter, "asyncq.jobs.completed", "{job}", "Jobs completed")
        self._failed = _Tally(
            meter, "asyncq.jobs.failed", "{attempt}", "Attempts that failed (then retried or dead)"
        )
        self._retried = _Tally(meter, "asyncq.jobs.retried", "{job}", "Retries scheduled")
        self._dead = _Tally(meter, "asyncq.jobs.dead", "{job}", "Jobs sent to the dead letters")
        self._cancelled = _Tally(
            meter, "asyncq.jobs.cancelled", "{job}", "Jobs cancelled while running"
        )
        self._run_time = _histogram(meter, "asyncq.job.run.duration", "Time one attempt ran")
        self._wait_time = _histogram(
            meter,
            "asyncq.job.wait.duration",
            "Time from ready (enqueued, scheduled, retry due) to start",
        )
        meter.create_observable_gauge(
            "asyncq.queue.depth", [self._observe_depth], "{job}", "Jobs in each queue, by state"
        )
        # Flow control (app.limit), read with the depth from Backend.limit_states.
        meter.create_observable_gauge(
            "asyncq.limit.held",
            [self._observe_held],
            "{job}",
            "Queued jobs held back by each limit (per key value of a keyed limit)",
        )
        meter.create_observable_gauge(
            "asyncq.circuit.state",
            [self._observe_circuits],
            "1",
            "Each circuit breaker's state: 0 closed, 1 half open, 2 open",
        )
        meter.create_observable_gauge(
            "asyncq.limit.running",
            [self._observe_running],
            "{job}",
            "Running jobs counted by each concurrency limit",
        )
        # Sync handlers' threads that outlived their attempt, read off the
        # workers' pools when the SDK collects (see watch_offload).
        self._offloads: weakref.WeakSet[Offload] = weakref.WeakSet()
        meter.create_observable_counter(
            "asyncq.worker.threads.abandoned",
            [self._observe_abandoned],
            "{thread}",
            "Sync handler threads abandoned because their attempt ended first"
            " (deadline, cancel, shutdown)",
        )
        meter.create_observable_up_down_counter(
            "asyncq.worker.threads.abandoned_running",
            [self._observe_abandoned_running],
            "{thread}",
            "Abandoned sync handler threads that have not returned yet",
        )
        # Whether an SDK records spans / metrics. The global providers may be set
        # after this object is made, so while they are unset they are looked at
        # again, at most once a second (_refresh); a set global never changes.
        self._global_tracer = tracer_provider is None
        self._global_meter = meter_provider is None
        self._tracing_on = tracer_provider is not None and _is_sdk(tracer_provider)
        self._metering_on = meter_provider is not None and _is_sdk(meter_provider)
        self._recheck_at = 0.0
        self._refresh()
        self._attrs: dict[tuple[str, str], dict[str, Any]] = {}
        self._outcome_attrs: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._depth: dict[str, list[Observation]] = {}
        self._held: list[Observation] = []
        self._running: list[Observation] = []
        self._circuits: list[Observation] = []
        self._last_headers: dict[str, str] = {}
        self._last_parent: Context = _EMPTY
        # Set when a reader first collects the gauge: with no SDK, no worker reads stats.
        self._depth_observed = False

    def __repr__(self) -> str:
        return f"Telemetry(depth_interval={self.depth_interval})"

    # -- producer --------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[JobRecord], call_next: EnqueueNext) -> list[JobRecord]:
        """A PRODUCER span over the store; its context goes into every job's headers."""
        if not jobs:
            return await call_next(jobs)
        if time.monotonic() >= self._recheck_at:
            self._refresh()
        if not self._tracing_on:
            # No spans, but a context that came from elsewhere still travels on.
            stored = await call_next(self._inject(jobs, otel_context.get_current()))
            self._count_enqueued(jobs, stored)
            return stored
        first = jobs[0]
        attrs: dict[str, Any] = {
            SYSTEM: "asyncq",
            OPERATION_TYPE: "send",
            OPERATION_NAME: "enqueue",
        }
        if len(jobs) == 1:
            attrs[MESSAGE_ID] = first.id
            attrs[BODY_SIZE] = len(first.payload)
            one_queue = one_name = True
        else:
            attrs[BATCH_COUNT] = len(jobs)
            one_queue = all(j.queue == first.queue for j in jobs)
            one_name = all(j.name == first.name for j in jobs)
        if one_queue:
            attrs[DESTINATION] = first.queue
        if one_name:
            attrs[JOB_NAME] = first.name
        if first.meta and all(j.meta == first.meta for j in jobs):
            _add_meta(attrs, first.meta)
        span_name = f"enqueue {first.queue}" if one_queue else "enqueue"
        span = self.tracer.start_span(span_name, kind=SpanKind.PRODUCER, attributes=attrs)
        # One producer span per call: every job of a batch carries its context,
        # so each job's consumer spans are its children.
        ctx = trace.set_span_in_context(span)
        jobs = self._inject(jobs, ctx)
        # Current while the backend works, so a driver's own spans nest under it.
        token = otel_context.attach(ctx)
        try:
            stored = await call_next(jobs)
            if len(stored) == 1 and stored[0].id != first.id and span.is_recording():
                span.set_attribute(JOB_DUPLICATE, True)
        except BaseException as exc:
            if span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                span.set_attribute(ERROR_TYPE, _error_type(exc))
            raise
        finally:
            span.end()
            otel_context.detach(token)
        self._count_enqueued(jobs, stored)
        return stored

    def _inject(self, jobs: Sequence[JobRecord], ctx: Context) -> Sequence[JobRecord]:
        """``jobs`` with the trace context and baggage of ``ctx`` in their headers, if any."""
        if not trace.get_current_span(ctx).get_span_context().is_valid and not baggage.get_all(ctx):
            return jobs
        carrier: dict[str, str] = {}
        (self.propagator or propagate.get_global_textmap()).inject(carrier, ctx)
        if not carrier:
            return jobs
        return [
            msgspec.structs.replace(j, headers={**j.headers, **carrier} if j.headers else carrier)
            for j in jobs
        ]

    def _count_enqueued(self, sent: Sequence[JobRecord], stored: Sequence[JobRecord]) -> None:
        # Counted per run of jobs with the same queue and name: a batch is usually one run.
        run: tuple[str, str] | None = None
        count = 0
        for job, kept in zip(sent, stored, strict=True):
            if job.id != kept.id:
                continue  # an idempotent duplicate: nothing was stored
            if run != (job.queue, job.name):
                if run is not None:
                    self._enqueued.add(self._job_attrs(*run), count)
                run, count = (job.queue, job.name), 0
            count += 1
        if run is not None:
            self._enqueued.add(self._job_attrs(*run), count)

    # -- consumer --------------------------------------------------------------------

    def on_start(self, job: JobRecord, ctx: JobContext) -> AttemptEnd | None:
        """A CONSUMER span continuing the job's headers, current until the attempt ends."""
        headers = job.headers
        span: Span | None = None
        token: Token[Context] | None = None
        if time.monotonic() >= self._recheck_at:
            self._refresh()
        if self._tracing_on:
            parent = self._extract(headers) if headers else _EMPTY
            attributes: dict[str, Any] = {
                SYSTEM: "asyncq",
                OPERATION_TYPE: "process",
                OPERATION_NAME: "process",
                DESTINATION: job.queue,
                MESSAGE_ID: job.id,
                BODY_SIZE: len(job.payload),
                JOB_NAME: job.name,
                JOB_ATTEMPT: job.attempts,
            }
            if job.meta:
                _add_meta(attributes, job.meta)
            span = self.tracer.start_span(
                f"process {job.queue}", parent, SpanKind.CONSUMER, attributes
            )
            token = otel_context.attach(trace.set_span_in_context(span, parent))
        elif headers:
            # No spans here, but jobs this one enqueues keep the producer's context.
            token = otel_context.attach(self._extract(headers))
        elif not self._metering_on:
            return None  # nothing records: the cheapest way through
        attrs = self._job_attrs(job.queue, job.name)
        self._started.add(attrs)
        if job.scheduled_at > 0:
            started = job.started_at if job.started_at is not None else time.time()
            self._wait_time.record(max(0.0, started - job.scheduled_at), attrs)
        return _Attempt(self, job, span, token).end

    def _extract(self, headers: dict[str, str]) -> Context:
        # Jobs of one enqueue_many share their producer's headers, and a worker
        # starts them one after the other: parsing them once serves the batch.
        # A Context is immutable, so handing the same one out again is safe.
        if headers == self._last_headers:
            return self._last_parent
        parent = (self.propagator or propagate.get_global_textmap()).extract(headers, _EMPTY)
        self._last_headers, self._last_parent = headers, parent
        return parent

    def _refresh(self) -> None:
        self._recheck_at = time.monotonic() + 1.0
        if self._global_tracer and not self._tracing_on:
            self._tracing_on = _is_sdk(trace.get_tracer_provider())
        if self._global_meter and not self._metering_on:
            self._metering_on = _is_sdk(metrics.get_meter_provider())
        if (self._tracing_on or not self._global_tracer) and (
            self._metering_on or not self._global_meter
        ):
            self._recheck_at = math.inf

    def _finish(
        self,
        job: JobRecord,
        span: Span | None,
        elapsed: float,
        outcome: Outcome | None,
        error: BaseException | None,
    ) -> None:
        name = outcome_name(outcome, error)
        attrs = self._outcome_attributes(job.queue, job.name, name)
        self._run_time.record(elapsed, attrs)
        if name == "completed":
            self._completed.add(attrs)
        elif name == "retried":
            self._failed.add(attrs)
            self._retried.add(attrs)
        elif name == "dead":
            self._failed.add(attrs)
            self._dead.add(attrs)
        elif name == "cancelled":
            self._cancelled.add(attrs)
        if span is not None and span.is_recording():
            _annotate(span, name, outcome, error)

    # -- queue depth -----------------------------------------------------------------

    async def refresh_depth(self, backend: Backend, queues: Sequence[str] | None = None) -> None:
        """Read ``backend.stats`` now for the ``asyncq.queue.depth`` gauge (workers do this)."""
        fresh: dict[str, list[Observation]] = {}
        for stats in await backend.stats(queues):
            fresh[stats.queue] = [
                Observation(count, {DESTINATION: stats.queue, JOB_STATE: str(s)})
                for s, count in stats.counts.items()
            ]
        # Replaced, never mutated: the metrics reader's thread may be iterating it.
        self._depth = {**self._depth, **fresh}
        states = await backend.limit_states()
        self._held = [Observation(state.held, _limit_attrs(state)) for state in states]
        self._running = [
            Observation(state.running, _limit_attrs(state))
            for state in states
            if state.concurrency is not None
        ]
        self._circuits = [
            Observation(_CIRCUIT_LEVELS.get(circuit.state, 2), _circuit_attrs(circuit))
            for circuit in await backend.circuit_states()
        ]

    async def watch_depth(self, service: ServiceContext) -> None:
        """A worker service: refresh the depth gauge every ``depth_interval`` while collected."""
        while True:
            if self._metering_on or self._depth_observed:
                try:
                    await self.refresh_depth(service.backend, service.queues)
                except BackendError as exc:
                    log.debug("queue depth not read: %s", exc)
            await anyio.sleep(self.depth_interval)

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        self._depth_observed = True
        return [o for observations in self._depth.values() for o in observations]

    def _observe_held(self, options: CallbackOptions) -> Iterable[Observation]:
        self._depth_observed = True
        return self._held

    def _observe_running(self, options: CallbackOptions) -> Iterable[Observation]:
        self._depth_observed = True
        return self._running

    def _observe_circuits(self, options: CallbackOptions) -> Iterable[Observation]:
        self._depth_observed = True
        return self._circuits

    # -- request/response ------------------------------------------------------------

    def on_request(self, name: str, queue: str) -> RequestEnd | None:
        """A span around a whole ``enqueue_and_wait``, current for the enqueue and the job."""
        if time.monotonic() >= self._recheck_at:
            self._refresh()
        if not self._tracing_on:
            return None
        attrs = {
            SYSTEM: "asyncq",
            OPERATION_NAME: "enqueue_and_wait",
            DESTINATION: queue,
            JOB_NAME: name,
        }
        span = self.tracer.start_span(
            f"enqueue_and_wait {queue}", kind=SpanKind.INTERNAL, attributes=attrs
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        return _Request(span, token).end

    @contextmanager
    def request(self, name: str, queue: str) -> Iterator[Span]:
        """``on_request`` as a context manager: the request's span (invalid when not tracing)."""
        end = self.on_request(name, queue)
        if end is None:
            yield trace.INVALID_SPAN
            return
        try:
            yield trace.get_current_span()
        except BaseException as exc:
            end(None, exc)
            raise
        end(None, None)

    # -- attributes ------------------------------------------------------------------

    def _job_attrs(self, queue: str, name: str) -> dict[str, Any]:
        attrs = self._attrs.get((queue, name))
        if attrs is None:
            # No messaging.system here: the instrument names already say asyncq,
            # and every attribute costs the SDK on each measurement.
            attrs = {DESTINATION: queue, JOB_NAME: name}
            if len(self._attrs) < _CACHE_LIMIT:
                self._attrs[queue, name] = attrs
        return attrs

    def _outcome_attributes(self, queue: str, name: str, outcome: str) -> dict[str, Any]:
        attrs = self._outcome_attrs.get((queue, name, outcome))
        if attrs is None:
            attrs = {**self._job_attrs(queue, name), JOB_OUTCOME: outcome}
            if len(self._outcome_attrs) < _CACHE_LIMIT:
                self._outcome_attrs[queue, name, outcome] = attrs
        return attrs

    def watch_offload(self, offload: Offload) -> None:
        """Count the abandoned threads of a worker's pools in the metrics while it lives."""
        self._offloads.add(offload)

    def _observe_abandoned(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(sum(o.threads.abandoned for o in list(self._offloads)))]

    def _observe_abandoned_running(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(sum(o.threads.abandoned_running for o in list(self._offloads)))]


class _Attempt:
    """One attempt's span and timing, between ``on_start`` and its end."""

    __slots__ = ("job", "span", "started", "telemetry", "token")

    def __init__(
        self,
        telemetry: Telemetry,
        job: JobRecord,
        span: Span | None,
        token: Token[Context] | None,
    ) -> None:
        self.telemetry = telemetry
        self.job = job
        self.span = span
        self.token = token
        self.started = time.perf_counter()

    def end(self, outcome: Outcome | None, error: BaseException | None) -> None:
        try:
            self.telemetry._finish(
                self.job, self.span, time.perf_counter() - self.started, outcome, error
            )
        finally:
            if self.span is not None:
                self.span.end()
            if self.token is not None:
                otel_context.detach(self.token)


class _Request:
    """One ``enqueue_and_wait``'s span, between ``on_request`` and its end."""

    __slots__ = ("span", "token")

    def __init__(self, span: Span, token: Token[Context]) -> None:
        self.span = span
        self.token = token

    def end(self, job_id: str | None, error: BaseException | None) -> None:
        span = self.span
        try:
            if span.is_recording():
                if job_id is not None:
                    span.set_attribute(MESSAGE_ID, job_id)
                # As the API's use_span does: cancellation and exits are not errors.
                if isinstance(error, Exception):
                    span.record_exception(error)
                    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        finally:
            span.end()
            otel_context.detach(self.token)


def _add_meta(attrs: dict[str, Any], meta: dict[str, Any]) -> None:
    """The job's metadata as ``asyncq.meta.<key>`` attributes: scalars as they are, else JSON."""
    for key, value in meta.items():
        scalar = type(value) in (str, bool, int, float)
        attrs[META_PREFIX + key] = value if scalar else msgspec.json.encode(value).decode()


def _annotate(span: Span, name: str, outcome: Outcome | None, error: BaseException | None) -> None:
    """Outcome attributes, events and status on a recording consumer span."""
    span.set_attribute(JOB_OUTCOME, name)
    if name == "completed":
        return
    if error is not None:
        span.record_exception(error)
    info = outcome.error if outcome is not None else None
    if name == "retried" and outcome is not None and info is not None:
        retry_at = outcome.retry_at or info.at
        span.add_event(
            "asyncq.job.retry",
            {
                "asyncq.job.retry_at": retry_at,
                "asyncq.job.retry_delay": max(0.0, retry_at - info.at),
            },
        )
    elif name == "dead":
        span.add_event("asyncq.job.dead", {"asyncq.job.error.kind": str(info.kind) if info else ""})
    elif name == "cancelled":
        span.add_event("asyncq.job.cancelled")
    elif name == "released":
        # Handed back on shutdown: not a failure of the job; it runs again elsewhere.
        span.add_event("asyncq.job.released")
        return
    elif name == "lost":
        span.add_event("asyncq.job.lease_lost")
    if error is not None:
        span.set_attribute(ERROR_TYPE, _error_type(error))
    elif info is not None:
        span.set_attribute(ERROR_TYPE, str(info.kind))
    else:
        span.set_attribute(ERROR_TYPE, name)
    description = info.one_line() if info is not None else name
    span.set_status(Status(StatusCode.ERROR, description))


class _Tally:
    """A monotonic count per attribute set, reported by an observable counter.

    ``add`` is one dict update on the event loop; the SDK's own ``Counter.add``
    costs a few microseconds a call, several times a no-op job's whole budget.
    The metrics reader calls ``_observe`` from its own thread when it collects,
    and exporters see the same cumulative sum a counter would give. The
    attribute dicts come from ``Telemetry``'s caches, so one per attribute set;
    when a cache is full a new dict may come each time, hence the key is built
    from the dict's items, not its identity.
    """

    __slots__ = ("_attrs", "_counts")

    def __init__(self, meter: metrics.Meter, name: str, unit: str, description: str) -> None:
        self._counts: dict[tuple[Any, ...], int] = {}
        self._attrs: dict[tuple[Any, ...], dict[str, Any]] = {}
        meter.create_observable_counter(name, [self._observe], unit, description)

    def add(self, attrs: dict[str, Any], amount: int = 1) -> None:
        key = tuple(attrs.values())
        count = self._counts.get(key)
        if count is None:
            self._attrs[key] = attrs
            count = 0
        self._counts[key] = count + amount

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        # dict() of a dict is one C call: no event-loop update lands half-way.
        counts = dict(self._counts)
        return [Observation(count, self._attrs[key]) for key, count in counts.items()]


def _histogram(meter: metrics.Meter, name: str, description: str) -> metrics.Histogram:
    try:
        return meter.create_histogram(
            name, "s", description, explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS
        )
    except TypeError:  # opentelemetry-api before 1.30 takes no bucket advice
        return meter.create_histogram(name, "s", description)


_default: Telemetry | None = None


def recheck_providers() -> None:
    """Have the shared ``Telemetry`` look at the global providers at its next use.

    It checks them at most once a second until both record; after setting one
    (``asyncq run --metrics``), this makes the very next job count.
    """
    if _default is not None:
        _default._recheck_at = 0.0


def default_telemetry() -> Telemetry:
    """The process-wide ``Telemetry`` on the global providers, shared by apps that do not pass one.

    Shared because the SDK keeps one observable gauge per name and meter.
    """
    global _default
    if _default is None:
        _default = Telemetry()
    return _default


def _limit_attrs(state: LimitState) -> dict[str, str]:
    """A limit counter's attributes: the limit's name, and the counter (a key value's) slot."""
    attrs = {"asyncq.limit.name": state.name, "asyncq.limit.slot": state.slot}
    if state.queue is not None:
        attrs[DESTINATION] = state.queue
    return attrs


#: ``asyncq.circuit.state``'s values.
_CIRCUIT_LEVELS = {"closed": 0, "half_open": 1, "open": 2}


def _circuit_attrs(state: CircuitState) -> dict[str, str]:
    attrs = {"asyncq.circuit.name": state.name}
    if state.queue is not None:
        attrs[DESTINATION] = state.queue
    return attrs
