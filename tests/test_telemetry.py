"""Traces, metrics, logs and the instrumentation hook, end to end on every backend.

Each test gets its own SDK ``TracerProvider`` (in-memory span exporter) and
``MeterProvider`` (in-memory reader) through ``Telemetry(...)``, so nothing
touches the process-wide OpenTelemetry globals.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import anyio
import msgspec
import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from asyncq import (
    App,
    BackendError,
    Instrumentation,
    JobCancelled,
    JobContext,
    JobFailed,
    JobRecord,
    JobState,
    RetryPolicy,
    Telemetry,
    ValidationError,
)
from asyncq._instrumentation import AttemptEnd, EnqueueNext, RequestEnd, outcome_name
from asyncq._logging import JSONFormatter, TraceContextFilter, configure_logging
from asyncq._records import Outcome
from asyncq._telemetry import _Tally
from asyncq.backends.base import Backend
from asyncq.backends.memory import MemoryBackend

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy.fixed(0.01)
WORKER = {
    "concurrency": 4,
    "heartbeat": 0.05,
    "poll_interval": 0.2,
    "recover_interval": 0.1,
    "shutdown_timeout": 5.0,
}


class Order(msgspec.Struct):
    order_id: str
    fail: bool = False


class Observed:
    """What one test's providers collected."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.telemetry = Telemetry(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            propagator=CompositePropagator(
                [TraceContextTextMapPropagator(), W3CBaggagePropagator()]
            ),
        )
        self.tracer = self.tracer_provider.get_tracer("tests")

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = self.exporter.get_finished_spans()
        return [s for s in found if name is None or s.name == name]

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, value) of every data point of ``metric`` (histograms: the count)."""
        data = self.reader.get_metrics_data()
        out: list[tuple[dict[str, Any], Any]] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        for p in m.data.data_points:
                            value = getattr(p, "value", None)
                            out.append((dict(p.attributes or {}), getattr(p, "count", value)))
        return out

    def total(self, metric: str) -> Any:
        return sum(v for _, v in self.points(metric))


@pytest.fixture
def observed() -> Iterator[Observed]:
    seen = Observed()
    yield seen
    seen.tracer_provider.shutdown()
    seen.meter_provider.shutdown()


@pytest.fixture
def app(backend: Backend, observed: Observed) -> App:
    return App("telemetry", backend=backend, telemetry=observed.telemetry)


def child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    assert span.parent is not None, f"{span.name} has no parent"
    assert parent.context is not None
    same_span: bool = span.parent.span_id == parent.context.span_id
    return same_span and span.parent.trace_id == parent.context.trace_id


def attempt_of(span: ReadableSpan) -> int:
    attempt = (span.attributes or {}).get("asyncq.job.attempt")
    assert isinstance(attempt, int)
    return attempt


async def test_consumer_span_continues_the_producer_span(app: App, observed: Observed) -> None:
    seen: dict[str, Any] = {}

    @app.job(schema=Order, name="ship", queue="orders")
    async def ship(payload: Order, ctx: JobContext) -> str:
        seen["span"] = trace.get_current_span().get_span_context()
        seen["tenant"] = baggage.get_baggage("tenant")
        seen["headers"] = dict(ctx.headers)
        return payload.order_id

    with anyio.fail_after(15):
        with observed.tracer.start_as_current_span("request"):
            token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
            try:
                handle = await ship.enqueue(Order("o-1"))
            finally:
                otel_context.detach(token)
        async with app.worker(**WORKER):
            assert await handle.result(timeout=10) == "o-1"

    (request,) = observed.spans("request")
    (producer,) = observed.spans("enqueue orders")
    (consumer,) = observed.spans("process orders")
    assert producer.kind is SpanKind.PRODUCER
    assert consumer.kind is SpanKind.CONSUMER
    assert child_of(producer, request)
    assert child_of(consumer, producer)
    assert consumer.context is not None
    assert seen["span"].span_id == consumer.context.span_id
    assert seen["tenant"] == "acme"
    assert "traceparent" in seen["headers"]
    assert "baggage" in seen["headers"]

    assert producer.attributes is not None
    assert consumer.attributes is not None
    assert dict(producer.attributes) == {
        "messaging.system": "asyncq",
        "messaging.operation.type": "send",
        "messaging.operation.name": "enqueue",
        "messaging.destination.name": "orders",
        "messaging.message.id": handle.id,
        "messaging.message.body.size": len(msgspec.msgpack.encode(Order("o-1"))),
        "asyncq.job.name": "ship",
    }
    assert dict(consumer.attributes) == {
        "messaging.system": "asyncq",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "orders",
        "messaging.message.id": handle.id,
        "messaging.message.body.size": producer.attributes["messaging.message.body.size"],
        "asyncq.job.name": "ship",
        "asyncq.job.attempt": 1,
        "asyncq.job.outcome": "completed",
    }
    assert consumer.status.status_code is StatusCode.UNSET


async def test_failures_retries_and_dead_letters_show_on_spans(
    app: App, observed: Observed
) -> None:
    @app.job(schema=Order, name="flaky", max_attempts=2, retry=FAST_RETRY)
    async def flaky(payload: Order) -> None:
        raise ValueError(f"no stock for {payload.order_id}")

    with anyio.fail_after(15):
        handle = await flaky.enqueue(Order("o-2"))
        async with app.worker(**WORKER):
            with pytest.raises(JobFailed):
                await handle.result(timeout=10)

    (producer,) = observed.spans("enqueue default")
    first, second = sorted(observed.spans("process default"), key=attempt_of)
    for span, attempt in ((first, 1), (second, 2)):
        assert child_of(span, producer)
        assert span.attributes is not None
        assert span.attributes["asyncq.job.attempt"] == attempt
        assert span.attributes["error.type"] == "ValueError"
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "ValueError: no stock for o-2"
        (exception,) = [e for e in span.events if e.name == "exception"]
        assert exception.attributes is not None
        assert exception.attributes["exception.type"] == "ValueError"
    assert first.attributes is not None
    assert second.attributes is not None
    assert first.attributes["asyncq.job.outcome"] == "retried"
    (retry,) = [e for e in first.events if e.name == "asyncq.job.retry"]
    assert retry.attributes is not None
    assert retry.attributes["asyncq.job.retry_delay"] == pytest.approx(0.01)
    assert second.attributes["asyncq.job.outcome"] == "dead"
    (dead,) = [e for e in second.events if e.name == "asyncq.job.dead"]
    assert dead.attributes == {"asyncq.job.error.kind": "error"}


async def test_metrics_count_the_jobs_run(app: App, observed: Observed, backend: Backend) -> None:
    @app.job(schema=Order, name="pack", max_attempts=2, retry=FAST_RETRY)
    async def pack(payload: Order) -> None:
        if payload.fail:
            raise RuntimeError("torn box")

    with anyio.fail_after(15):
        handles = await pack.enqueue_many([Order("a"), Order("b"), Order("c")])
        bad = await pack.enqueue(Order("d", fail=True))
        again = await pack.enqueue(Order("a"), key="k1")
        assert (await pack.enqueue(Order("a"), key="k1")).created is False
        async with app.worker(**WORKER):
            for handle in [*handles, again]:
                await handle.result(timeout=10)
            with pytest.raises(JobFailed):
                await bad.result(timeout=10)
        await observed.telemetry.refresh_depth(backend, ["default"])

    assert observed.total("asyncq.jobs.enqueued") == 5  # the duplicate key is not counted
    assert observed.total("asyncq.jobs.started") == 6
    assert observed.total("asyncq.jobs.completed") == 4
    assert observed.total("asyncq.jobs.failed") == 2
    assert observed.total("asyncq.jobs.retried") == 1
    assert observed.total("asyncq.jobs.dead") == 1
    assert observed.total("asyncq.jobs.cancelled") == 0
    assert observed.total("asyncq.job.run.duration") == 6
    assert observed.total("asyncq.job.wait.duration") == 6
    runs = {a["asyncq.job.outcome"]: n for a, n in observed.points("asyncq.job.run.duration")}
    assert runs == {"completed": 4, "retried": 1, "dead": 1}
    for attrs, _ in observed.points("asyncq.jobs.completed"):
        assert attrs == {
            "messaging.destination.name": "default",
            "asyncq.job.name": "pack",
            "asyncq.job.outcome": "completed",
        }
    depth = {a["asyncq.job.state"]: n for a, n in observed.points("asyncq.queue.depth")}
    assert depth["completed"] == 4
    assert depth["dead"] == 1
    assert depth["queued"] == 0
    assert set(depth) == {str(s) for s in JobState}


async def test_enqueue_and_wait_nests_under_the_callers_span(app: App, observed: Observed) -> None:
    @app.job(schema=Order, name="quote")
    async def quote(payload: Order) -> int:
        return 42

    with anyio.fail_after(15):
        async with app.worker(**WORKER):
            with observed.tracer.start_as_current_span("checkout"):
                assert await quote.enqueue_and_wait(Order("o-3"), timeout=10) == 42

    (caller,) = observed.spans("checkout")
    (request,) = observed.spans("enqueue_and_wait default")
    (producer,) = observed.spans("enqueue default")
    (consumer,) = observed.spans("process default")
    assert child_of(request, caller)
    assert child_of(producer, request)
    assert child_of(consumer, producer)
    assert request.attributes is not None
    assert producer.attributes is not None
    assert request.attributes["messaging.message.id"] == producer.attributes["messaging.message.id"]
    assert request.start_time is not None
    assert consumer.end_time is not None
    assert request.end_time is not None
    assert request.start_time <= consumer.end_time <= request.end_time


async def test_enqueue_many_is_one_producer_span_parenting_every_job(
    app: App, observed: Observed
) -> None:
    @app.job(schema=Order, name="label")
    async def label(payload: Order) -> None:
        return None

    with anyio.fail_after(15):
        handles = await label.enqueue_many([Order(str(i)) for i in range(3)])
        async with app.worker(**WORKER):
            for handle in handles:
                await handle.result(timeout=10)

    (producer,) = observed.spans("enqueue default")
    assert producer.attributes is not None
    assert producer.attributes["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in producer.attributes
    consumers = observed.spans("process default")
    assert len(consumers) == 3
    assert all(child_of(c, producer) for c in consumers)
    ids = {(c.attributes or {}).get("messaging.message.id") for c in consumers}
    assert ids == {h.id for h in handles}


async def test_each_job_continues_its_own_producer_when_batches_follow_each_other(
    app: App, observed: Observed
) -> None:
    # The worker parses a batch's shared headers once; a job of the next
    # batch must not inherit the previous one's parent.
    @app.job(schema=Order, name="label")
    async def label(payload: Order) -> None:
        return None

    with anyio.fail_after(15):
        batches = [
            await label.enqueue_many([Order("a1"), Order("a2")]),
            [await label.enqueue(Order("b1"))],
            await label.enqueue_many([Order("c1"), Order("c2")]),
        ]
        async with app.worker(**{**WORKER, "concurrency": 1}):
            for batch in batches:
                for handle in batch:
                    await handle.result(timeout=10)

    producers = observed.spans("enqueue default")
    assert len(producers) == 3
    consumers = {
        (c.attributes or {}).get("messaging.message.id"): c
        for c in observed.spans("process default")
    }
    for batch in batches:
        # the producer of this batch: the one whose trace its first job continues
        first = consumers[batch[0].id]
        assert first.parent is not None
        (producer,) = [
            p
            for p in producers
            if p.context is not None and p.context.span_id == first.parent.span_id
        ]
        assert all(child_of(consumers[h.id], producer) for h in batch)
    assert len({c.parent.span_id for c in consumers.values() if c.parent is not None}) == 3


async def test_cancelling_a_running_job_shows_on_its_span(app: App, observed: Observed) -> None:
    started = anyio.Event()

    @app.job(schema=Order, name="slow")
    async def slow(payload: Order) -> None:
        started.set()
        await anyio.sleep_forever()

    with anyio.fail_after(15):
        async with app.worker(**WORKER):
            handle = await slow.enqueue(Order("o-4"))
            await started.wait()
            await handle.cancel()
            with pytest.raises(JobCancelled):
                await handle.result(timeout=10)

    (consumer,) = observed.spans("process default")
    assert consumer.attributes is not None
    assert consumer.attributes["asyncq.job.outcome"] == "cancelled"
    assert [e.name for e in consumer.events] == ["asyncq.job.cancelled"]
    assert consumer.status.status_code is StatusCode.ERROR
    assert observed.total("asyncq.jobs.cancelled") == 1


# -- one backend is enough below: nothing here depends on the store ---------------------


class Recorder(Instrumentation):
    """A user's instrumentation: sees enqueues, starts and outcomes."""

    def __init__(self) -> None:
        self.enqueued: list[str] = []
        self.outcomes: list[tuple[str, int, str, str | None]] = []

    async def enqueue(self, jobs: Sequence[JobRecord], call_next: EnqueueNext) -> list[JobRecord]:
        self.enqueued.extend(j.name for j in jobs)
        return await call_next(jobs)

    def on_start(self, job: JobRecord, ctx: JobContext) -> AttemptEnd:
        def end(outcome: Outcome | None, error: BaseException | None) -> None:
            kind = type(error).__name__ if error is not None else None
            self.outcomes.append((job.name, ctx.attempt, outcome_name(outcome, error), kind))

        return end


class Broken(Instrumentation):
    def on_start(self, job: JobRecord, ctx: JobContext) -> AttemptEnd:
        raise RuntimeError("hook bug")


async def test_instrumentation_sees_every_outcome_and_its_bugs_are_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    app = App(
        "hooks",
        backend=MemoryBackend(),
        instrumentation=[Broken(), recorder],
        telemetry=False,
    )
    assert app.instrumentation == [app.instrumentation[0], recorder]
    assert app.telemetry is None

    @app.job(schema=Order, name="try", max_attempts=2, retry=FAST_RETRY)
    async def attempt(payload: Order) -> None:
        if payload.fail:
            raise KeyError(payload.order_id)

    with anyio.fail_after(15):
        async with app, app.worker(**WORKER):
            await (await attempt.enqueue(Order("ok"))).result(timeout=10)
            with pytest.raises(JobFailed):
                await (await attempt.enqueue(Order("bad", fail=True))).result(timeout=10)

    assert recorder.enqueued == ["try", "try"]
    assert sorted(recorder.outcomes) == [
        ("try", 1, "completed", None),
        ("try", 1, "retried", "KeyError"),
        ("try", 2, "dead", "KeyError"),
    ]
    assert "hook bug" in caplog.text


class BrokenEnd(Instrumentation):
    def on_start(self, job: JobRecord, ctx: JobContext) -> AttemptEnd:
        def end(outcome: Outcome | None, error: BaseException | None) -> None:
            raise RuntimeError("attempt end bug")

        return end


async def test_a_broken_attempt_end_is_logged_and_the_outcome_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    app = App(
        "ends",
        backend=MemoryBackend(),
        instrumentation=[recorder, BrokenEnd()],
        telemetry=False,
    )

    @app.job(schema=Order, name="try")
    async def attempt(payload: Order) -> str:
        return payload.order_id

    with anyio.fail_after(15):
        async with app, app.worker(**WORKER):
            assert await (await attempt.enqueue(Order("ok"))).result(timeout=10) == "ok"

    # Ends run in reverse order: the broken one first, and the recorder still hears.
    assert recorder.outcomes == [("try", 1, "completed", None)]
    failed = [r for r in caplog.records if r.getMessage().endswith("at the end of an attempt")]
    assert [r.name for r in failed] == ["asyncq.worker"]


class Requests(Instrumentation):
    """A user's instrumentation of enqueue_and_wait: what it saw, and the span then current."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None, str | None, str]] = []

    def on_request(self, name: str, queue: str) -> RequestEnd:
        current = trace.get_current_span()
        started_in = current.name if isinstance(current, ReadableSpan) else "-"

        def end(job_id: str | None, error: BaseException | None) -> None:
            kind = type(error).__name__ if error is not None else None
            self.seen.append((name, queue, job_id, kind, started_in))

        return end


class BrokenRequests(Instrumentation):
    def on_request(self, name: str, queue: str) -> RequestEnd:
        def end(job_id: str | None, error: BaseException | None) -> None:
            raise RuntimeError("request end bug")

        return end


async def test_any_instrumentation_sees_a_request_within_the_telemetry_span(
    observed: Observed, caplog: pytest.LogCaptureFixture
) -> None:
    requests = Requests()
    app = App(
        "requests",
        backend=MemoryBackend(),
        telemetry=observed.telemetry,
        instrumentation=[requests, BrokenRequests()],
    )

    release = anyio.Event()

    @app.job(schema=Order, name="quote", queue="quotes")
    async def quote(payload: Order) -> int:
        if payload.fail:
            await release.wait()
        return 7

    with anyio.fail_after(15):
        async with app, app.worker(**WORKER, queues=["quotes"]):
            assert await quote.enqueue_and_wait(Order("o-1"), timeout=10) == 7
            with pytest.raises(TimeoutError):
                await quote.enqueue_and_wait(Order("o-2", fail=True), timeout=0.2)
            release.set()

    done, timed_out = observed.spans("enqueue_and_wait quotes")
    ids = [(span.attributes or {}).get("messaging.message.id") for span in (done, timed_out)]
    assert requests.seen == [
        ("quote", "quotes", ids[0], None, "enqueue_and_wait quotes"),
        ("quote", "quotes", ids[1], "TimeoutError", "enqueue_and_wait quotes"),
    ]
    assert done.status.status_code is StatusCode.UNSET
    assert timed_out.status.status_code is StatusCode.ERROR
    assert [event.name for event in timed_out.events] == ["exception"]
    # A broken hook is logged; the result and the caller's error come through untouched.
    failed = [r for r in caplog.records if r.getMessage().endswith("at the end of a request")]
    assert [r.name for r in failed] == ["asyncq.telemetry"] * 2


def test_telemetry_request_is_a_span_around_a_block(observed: Observed) -> None:
    with observed.telemetry.request("quote", "quotes") as span:
        assert span is trace.get_current_span()
        assert span.is_recording()
    with pytest.raises(KeyError), observed.telemetry.request("quote", "quotes"):
        raise KeyError("o-1")
    ok, failed = observed.spans("enqueue_and_wait quotes")
    assert (ok.status.status_code, failed.status.status_code) == (
        StatusCode.UNSET,
        StatusCode.ERROR,
    )
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_a_payload_refused_before_storing_ends_the_request_without_a_job(
    observed: Observed,
) -> None:
    requests = Requests()
    app = App("refused", backend=MemoryBackend(), instrumentation=[requests], telemetry=False)
    quote = app.handle("quote", schema=Order, result=int)

    with anyio.fail_after(5), pytest.raises(ValidationError):
        await quote.enqueue_and_wait({"order_id": 1})  # type: ignore[arg-type]
    assert requests.seen == [("quote", "default", None, "ValidationError", "-")]


async def test_without_an_sdk_jobs_run_and_carry_no_headers() -> None:
    app = App("plain", backend=MemoryBackend())
    assert app.telemetry is not None
    assert app.instrumentation == [app.telemetry]

    @app.job(schema=Order, name="plain")
    async def plain(payload: Order, ctx: JobContext) -> dict[str, str]:
        return dict(ctx.headers)

    with anyio.fail_after(15):
        async with app, app.worker(**WORKER):
            assert await plain.enqueue_and_wait(Order("x"), timeout=10) == {}


async def test_job_log_lines_carry_job_fields_and_the_trace_id(observed: Observed) -> None:
    app = App("logs", backend=MemoryBackend(), telemetry=observed.telemetry)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("asyncq.worker")
    logger.addHandler(handler)

    @app.job(schema=Order, name="doomed", max_attempts=1)
    async def doomed(payload: Order) -> None:
        raise ValueError("nope")

    try:
        with anyio.fail_after(15):
            async with app, app.worker(**WORKER):
                handle = await doomed.enqueue(Order("o-5"))
                with pytest.raises(JobFailed):
                    await handle.result(timeout=10)
    finally:
        logger.removeHandler(handler)

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (dead,) = [line for line in lines if line.get("job_state") == "dead"]
    (consumer,) = observed.spans("process default")
    assert consumer.context is not None
    assert dead["level"] == "error"
    assert dead["job_id"] == handle.id
    assert dead["job_name"] == "doomed"
    assert dead["queue"] == "default"
    assert dead["attempt"] == 1
    assert dead["trace_id"] == format(consumer.context.trace_id, "032x")
    assert dead["span_id"] == format(consumer.context.span_id, "016x")


async def test_workers_refresh_queue_depth_while_it_is_collected(observed: Observed) -> None:
    backend = MemoryBackend()
    refreshed = anyio.Event()
    stats = backend.stats

    async def counting_stats(queues: Sequence[str] | None = None) -> Any:
        result = await stats(queues)
        refreshed.set()
        return result

    backend.stats = counting_stats  # type: ignore[method-assign]
    observed.telemetry.depth_interval = 0.01
    app = App("depth", backend=backend, telemetry=observed.telemetry)

    @app.job(schema=Order, name="idle")
    async def idle(payload: Order) -> None:
        return None

    with anyio.fail_after(15):
        async with app:
            await idle.enqueue(Order("waiting"), delay=60)
            async with app.worker(**WORKER):
                await refreshed.wait()
    depth = {a["asyncq.job.state"]: n for a, n in observed.points("asyncq.queue.depth")}
    assert depth["scheduled"] == 1


async def test_limits_show_held_and_running_jobs(observed: Observed) -> None:
    backend = MemoryBackend()
    app = App("limited", backend=backend, telemetry=observed.telemetry)
    smtp = app.limit("smtp", concurrency=1)
    release = anyio.Event()
    started = anyio.Event()

    @app.job(schema=Order, name="mail", limits=[smtp])
    async def mail(payload: Order) -> None:
        started.set()
        await release.wait()

    with anyio.fail_after(15):
        async with app:
            await mail.enqueue_many([Order(str(n)) for n in range(3)])
            async with app.worker(**WORKER):
                await started.wait()
                await observed.telemetry.refresh_depth(backend)
                release.set()
    attrs = {"asyncq.limit.name": "smtp", "asyncq.limit.slot": "smtp"}
    assert observed.points("asyncq.limit.held") == [(attrs, 2)]
    assert observed.points("asyncq.limit.running") == [(attrs, 1)]


async def test_circuits_show_their_state(observed: Observed) -> None:
    backend = MemoryBackend()
    await backend.set_circuit("payments-api", open_=True)
    await observed.telemetry.refresh_depth(backend)
    assert observed.points("asyncq.circuit.state") == [({"asyncq.circuit.name": "payments-api"}, 2)]


def test_outcome_names() -> None:
    def outcome(state: JobState) -> Outcome:
        return Outcome(job_id="j", token="t", state=state)

    assert outcome_name(outcome(JobState.QUEUED)) == "released"
    assert outcome_name(None) == "lost"
    assert outcome_name(None, KeyboardInterrupt()) == "interrupted"


async def test_without_an_sdk_a_received_trace_context_still_propagates() -> None:
    app = App("relay", backend=MemoryBackend())
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    seen: list[str] = []

    @app.job(schema=Order, name="child")
    async def child(payload: Order) -> None:
        return None

    @app.job(schema=Order, name="parent")
    async def parent(payload: Order) -> str:
        seen.append(format(trace.get_current_span().get_span_context().trace_id, "032x"))
        return (await child.enqueue(payload)).id

    record = parent.record(Order("o-6"))
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    with anyio.fail_after(15):
        async with app, app.worker(**WORKER):
            (stored,) = await app.enqueue_records(
                [msgspec.structs.replace(record, headers=headers)]
            )
            child_id = await app.get_job(stored.id).result(timeout=10)
            child_job = await app.get_job(child_id).info()
    assert seen == [trace_id]
    assert child_job.headers["traceparent"].split("-")[1] == trace_id


def test_a_global_tracer_provider_set_later_is_picked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    telemetry = Telemetry()
    assert not telemetry._tracing_on
    monkeypatch.setattr(trace, "get_tracer_provider", TracerProvider)
    telemetry._refresh()
    assert telemetry._tracing_on


class StoreDown(Instrumentation):
    async def enqueue(self, jobs: Sequence[JobRecord], call_next: EnqueueNext) -> list[JobRecord]:
        raise BackendError("store down")


async def test_a_failed_enqueue_marks_the_producer_span(observed: Observed) -> None:
    app = App(
        "down", backend=MemoryBackend(), telemetry=observed.telemetry, instrumentation=[StoreDown()]
    )

    @app.job(schema=Order, name="lost")
    async def lost(payload: Order) -> None:
        return None

    with anyio.fail_after(5), pytest.raises(BackendError):
        await lost.enqueue(Order("o-7"))
    (producer,) = observed.spans("enqueue default")
    assert producer.status.status_code is StatusCode.ERROR
    assert producer.attributes is not None
    assert producer.attributes["error.type"] == "asyncq.exceptions.BackendError"
    assert [e.name for e in producer.events] == ["exception"]
    assert observed.total("asyncq.jobs.enqueued") == 0
    await app.close()


async def test_a_batch_across_queues_names_no_destination(observed: Observed) -> None:
    app = App("mixed", backend=MemoryBackend(), telemetry=observed.telemetry)

    @app.job(schema=Order, name="a", queue="qa")
    async def a(payload: Order) -> None:
        return None

    @app.job(schema=Order, name="b", queue="qb")
    async def b(payload: Order) -> None:
        return None

    async with app:
        stored = await app.enqueue_records([a.record(Order("1")), b.record(Order("2"))])
    (producer,) = observed.spans("enqueue")
    assert producer.attributes is not None
    assert "messaging.destination.name" not in producer.attributes
    assert "asyncq.job.name" not in producer.attributes
    assert all("traceparent" in job.headers for job in stored)


async def test_a_job_handed_back_on_shutdown_is_released_not_failed(observed: Observed) -> None:
    app = App("release", backend=MemoryBackend(), telemetry=observed.telemetry)
    started = anyio.Event()

    @app.job(schema=Order, name="long")
    async def long(payload: Order) -> None:
        started.set()
        await anyio.sleep_forever()

    with anyio.fail_after(15):
        async with app:
            handle = await long.enqueue(Order("o-8"))
            async with app.worker(**{**WORKER, "shutdown_timeout": 0.0}):
                await started.wait()
            assert (await handle.info()).state is JobState.QUEUED
    (consumer,) = observed.spans("process default")
    assert consumer.attributes is not None
    assert consumer.attributes["asyncq.job.outcome"] == "released"
    assert [e.name for e in consumer.events] == ["asyncq.job.released"]
    assert consumer.status.status_code is StatusCode.UNSET


def test_a_lost_lease_ends_the_span_in_error(observed: Observed) -> None:
    job = JobRecord(id="j1", name="n", queue="q", payload=b"", attempts=1, max_attempts=3)
    end = observed.telemetry.on_start(job, JobContext(job))
    assert end is not None
    assert trace.get_current_span().get_span_context().is_valid
    end(None, None)
    assert not trace.get_current_span().get_span_context().is_valid
    (span,) = observed.spans("process q")
    assert span.attributes is not None
    assert span.attributes["asyncq.job.outcome"] == "lost"
    assert span.attributes["error.type"] == "lost"
    assert [e.name for e in span.events] == ["asyncq.job.lease_lost"]
    assert span.status.status_code is StatusCode.ERROR


def test_configured_json_logs_carry_the_trace(
    observed: Observed, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("debug", "json")
    try:
        with observed.tracer.start_as_current_span("op") as span:
            try:
                raise ValueError("bad")
            except ValueError:
                logging.getLogger("asyncq.test").exception("it broke", extra={"job_id": "j2"})
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    (line,) = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert line["message"] == "it broke"
    assert line["job_id"] == "j2"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "ValueError: bad" in line["exception"]


def test_tallied_counters_sum_per_attribute_set_across_collections() -> None:
    seen = Observed()
    tally = _Tally(seen.meter_provider.get_meter("t"), "t.jobs", "{job}", "test")
    for _ in range(3):
        # a fresh dict each time, as when the attribute cache is full
        tally.add({"messaging.destination.name": "q", "asyncq.job.name": "a"})
    tally.add({"messaging.destination.name": "q", "asyncq.job.name": "b"})
    first = {a["asyncq.job.name"]: v for a, v in seen.points("t.jobs")}
    tally.add({"messaging.destination.name": "q", "asyncq.job.name": "b"})
    second = {a["asyncq.job.name"]: v for a, v in seen.points("t.jobs")}
    assert first == {"a": 3, "b": 1}
    assert second == {"a": 3, "b": 2}  # cumulative, as a counter's sum
    seen.meter_provider.shutdown()


async def test_enqueued_counts_follow_each_job_of_a_mixed_batch(
    app: App, observed: Observed
) -> None:
    @app.job(schema=Order, name="a")
    async def a(payload: Order) -> None:
        return None

    @app.job(schema=Order, name="b", queue="other")
    async def b(payload: Order) -> None:
        return None

    records = [
        a.record(Order("1")),
        a.record(Order("2")),
        b.record(Order("3")),
        a.record(Order("4")),
    ]
    with anyio.fail_after(10):
        await app.enqueue_records(records)
        await app.enqueue_records([a.record(Order("5"), key="k"), a.record(Order("6"), key="k")])
    counts = {
        (attrs["messaging.destination.name"], attrs["asyncq.job.name"]): n
        for attrs, n in observed.points("asyncq.jobs.enqueued")
    }
    assert counts == {("default", "a"): 4, ("other", "b"): 1}  # the second "k" is a duplicate
