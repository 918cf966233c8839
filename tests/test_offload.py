"""Sync handlers in threads and process handlers in child processes, through a real Worker.

The process handlers live in ``offload_jobs`` (a child process imports them by
name); thread handlers may be defined anywhere.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import offload_jobs as jobs
from asyncq import (
    App,
    CallNext,
    ConfigurationError,
    JobCancelled,
    JobContext,
    JobFailed,
    JobState,
    Telemetry,
    current_job,
)
from asyncq._records import Lease
from asyncq.backends.base import Backend
from asyncq.backends.memory import MemoryBackend

pytestmark = pytest.mark.anyio


class Order(msgspec.Struct):
    order_id: str
    cents: int


class Receipt(msgspec.Struct):
    order_id: str
    charged: int
    thread: str


def options(**overrides: object) -> dict[str, object]:
    """Short intervals, so timeouts and retries happen within a test's deadline."""
    chosen: dict[str, object] = {
        "concurrency": 4,
        "heartbeat": 0.05,
        "poll_interval": 0.2,
        "recover_interval": 0.1,
        "shutdown_timeout": 5.0,
        "threads": 2,
        "processes": 2,
    }
    chosen.update(overrides)
    return chosen


def app_with(backend: Backend, *handlers: str, started: Started | None = None) -> App:
    """An app of the named ``offload_jobs`` handlers (and ``started`` as its middleware)."""
    return App(
        "offload",
        backend=backend,
        jobs=[getattr(jobs, h) for h in handlers],
        middleware=[] if started is None else [started],
    )


class Started:
    """Middleware that tells when ``count`` attempts have started (in the worker)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.all = anyio.Event()

    async def __call__(self, ctx: JobContext, call_next: CallNext) -> Any:
        self.count -= 1
        if self.count == 0:
            self.all.set()
        return await call_next()


# -- sync handlers -----------------------------------------------------------------


async def test_sync_handler_completes_with_a_typed_result(backend: Backend) -> None:
    app = App("offload", backend=backend)

    @app.job(schema=Order, name="charge")
    def charge(payload: Order, ctx: JobContext) -> Receipt:
        assert current_job() is ctx
        ctx.from_thread(ctx.progress, 0.5)
        ctx.from_thread(ctx.log, "charging", level="warning")
        return Receipt(payload.order_id, payload.cents, threading.current_thread().name)

    with anyio.fail_after(20):
        async with app.worker(**options()):
            handle = await charge.enqueue(Order("o-1", 500))
            receipt = await handle.result(timeout=10)
        info = await handle.info()
    assert type(receipt) is Receipt
    assert receipt.order_id == "o-1"
    assert receipt.charged == 500
    assert receipt.thread != threading.main_thread().name
    assert info.progress == 0.5
    assert [(line.level, line.message) for line in info.logs] == [("warning", "charging")]


async def test_sync_handler_past_its_timeout_is_retried_and_its_thread_reported(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    reader = InMemoryMetricReader()
    telemetry = Telemetry(meter_provider=MeterProvider(metric_readers=[reader]))
    app = App("offload", backend=backend, telemetry=telemetry)
    saw_cancel = threading.Event()

    @app.job(schema=Order, name="slow_sync", queue="mail", timeout=0.3, max_attempts=2)
    def slow_sync(payload: Order, ctx: JobContext) -> int:
        if ctx.attempt == 1:
            deadline = time.monotonic() + 10
            while not ctx.cancelled and time.monotonic() < deadline:
                time.sleep(0.01)
            if ctx.cancelled:
                saw_cancel.set()
            return -1  # discarded
        return ctx.attempt

    caplog.set_level(logging.WARNING, "asyncq.worker")
    with anyio.fail_after(20):
        async with app.worker(**options()) as worker:
            handle = await slow_sync.enqueue(Order("o-1", 1))
            assert await handle.result(timeout=15) == 2
            assert await anyio.to_thread.run_sync(saw_cancel.wait, 5)
            assert worker.offload.threads.abandoned == 1
            assert _metric(reader, "asyncq.worker.threads.abandoned") == 1
        info = await handle.info()
    assert info.state is JobState.COMPLETED
    assert [e.kind for e in info.errors] == ["timeout"]
    abandoned = [r.getMessage() for r in caplog.records if "abandoned it" in r.getMessage()]
    assert len(abandoned) == 1
    assert "'slow_sync'" in abandoned[0]
    assert "'mail'" in abandoned[0]


async def test_an_abandoned_thread_gives_its_slot_back() -> None:
    """With one thread and a stuck handler, the next sync job still runs."""
    app = App("offload", backend=MemoryBackend())
    release = threading.Event()

    @app.job(schema=Order, name="stuck", timeout=0.2, max_attempts=1)
    def stuck(payload: Order) -> None:
        release.wait(10)

    @app.job(schema=Order, name="quick")
    def quick(payload: Order) -> str:
        return payload.order_id

    try:
        with anyio.fail_after(20):
            async with app, app.worker(**options(threads=1)) as worker:
                handle = await stuck.enqueue(Order("o-1", 1))
                with pytest.raises(JobFailed):
                    await handle.result(timeout=10)
                assert worker.offload.threads.abandoned_running == 1
                assert await quick.enqueue_and_wait(Order("o-2", 1), timeout=10) == "o-2"
                assert worker.offload.stats()["threads_abandoned_running"] == 1
    finally:
        release.set()


async def test_a_sync_handler_called_directly_runs_in_a_thread() -> None:
    app = App("offload", backend=MemoryBackend())

    @app.job(schema=Order, name="direct")
    def direct(payload: Order, ctx: JobContext) -> str:
        assert not ctx.cancelled
        return threading.current_thread().name

    with anyio.fail_after(5):
        assert await direct(Order("o-1", 1)) != threading.main_thread().name


async def test_context_from_thread_outside_a_thread_says_so() -> None:
    app = App("offload", backend=MemoryBackend())

    @app.job(schema=Order, name="wrong")
    async def wrong(payload: Order, ctx: JobContext) -> None:
        assert not ctx.cancelled
        ctx.from_thread(ctx.progress, 0.5)

    with anyio.fail_after(5), pytest.raises(RuntimeError):
        await wrong(Order("o-1", 1))


async def test_cancelling_a_running_sync_job_abandons_its_thread() -> None:
    app = App("offload", backend=MemoryBackend())
    running = threading.Event()
    stopped = threading.Event()

    @app.job(schema=Order, name="polls")
    def polls(payload: Order, ctx: JobContext) -> None:
        running.set()
        deadline = time.monotonic() + 10
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        if ctx.cancelled:
            stopped.set()

    with anyio.fail_after(20):
        async with app, app.worker(**options()) as worker:
            handle = await polls.enqueue(Order("o-1", 1))
            assert await anyio.to_thread.run_sync(running.wait, 10)
            await handle.cancel()
            with pytest.raises(JobCancelled):
                await handle.result(timeout=10)
            assert await anyio.to_thread.run_sync(stopped.wait, 5)
    assert worker.offload.threads.abandoned == 1


class Watched(MemoryBackend):
    """A memory store that tells when a job first reports progress."""

    def __init__(self) -> None:
        super().__init__()
        self.reported = anyio.Event()

    async def progress(self, lease: Lease, value: float) -> bool:
        self.reported.set()
        return await super().progress(lease, value)


async def test_cancelling_a_running_process_job_kills_its_child() -> None:
    backend = Watched()
    app = app_with(backend, "reports")
    with anyio.fail_after(20):
        async with app, app.worker(**options()) as worker:
            handle = await jobs.reports.enqueue(jobs.Work(1, spin=60))
            await backend.reported.wait()  # the child runs it
            await handle.cancel()
            with pytest.raises(JobCancelled):
                await handle.result(timeout=10)
    assert worker.offload.processes.killed == 1


def test_generators_are_refused() -> None:
    app = App("offload", backend=MemoryBackend())
    with pytest.raises(ConfigurationError, match="not a generator"):

        @app.job(schema=Order, name="gen")
        def gen(payload: Order):  # type: ignore[no-untyped-def]
            yield 1


# -- process handlers --------------------------------------------------------------


def test_a_process_handler_must_be_importable_by_name() -> None:
    app = App("offload", backend=MemoryBackend())
    with pytest.raises(ConfigurationError, match=r"'inner'.*top level of a module"):

        @app.job(schema=Order, name="inner", process=True)
        def inner(payload: Order) -> None:
            return None


async def test_process_handler_completes_with_a_typed_result(backend: Backend) -> None:
    app = app_with(backend, "crunch", "crunch_async")
    with anyio.fail_after(30):
        async with app.worker(**options()) as worker:
            handle = await jobs.crunch.enqueue(jobs.Work(10))
            total = await handle.result(timeout=20)
            again = await jobs.crunch_async.enqueue_and_wait(jobs.Work(10), timeout=20)
        info = await handle.info()
    assert type(total) is jobs.Total
    assert total.total == 45
    assert total.pid != os.getpid()
    assert again.total == 46
    assert info.progress == 0.5
    assert worker.offload.processes.started >= 1


async def test_process_handler_past_its_deadline_is_killed_and_retried(backend: Backend) -> None:
    app = app_with(backend, "stuck")
    with anyio.fail_after(30):
        async with app.worker(**options()) as worker:
            handle = await jobs.stuck.enqueue(jobs.Work(7))
            total = await handle.result(timeout=20)
        info = await handle.info()
    assert total.total == 7
    assert [e.kind for e in info.errors] == ["timeout"]
    assert worker.offload.processes.killed == 1


async def test_a_child_that_dies_is_replaced() -> None:
    app = app_with(MemoryBackend(), "dies", "crunch")
    with anyio.fail_after(30):
        async with app, app.worker(**options(processes=1)) as worker:
            first = await jobs.crunch.enqueue_and_wait(jobs.Work(3), timeout=20)
            handle = await jobs.dies.enqueue(jobs.Work(5))
            assert (await handle.result(timeout=20)).total == 5
            after = await jobs.crunch.enqueue_and_wait(jobs.Work(3), timeout=20)
            info = await handle.info()
    assert info.errors[0].kind == "error"
    assert "exit code 3" in info.errors[0].message
    assert worker.offload.processes.died == 1
    assert after.pid != first.pid


async def test_a_failure_in_a_child_keeps_its_type_traceback_and_class() -> None:
    app = app_with(MemoryBackend(), "fails")
    with anyio.fail_after(30):
        async with app, app.worker(**options()):
            handle = await jobs.fails.enqueue(jobs.Work(5))
            with pytest.raises(JobFailed):
                await handle.result(timeout=20)
            info = await handle.info()
    assert info.state is JobState.DEAD
    assert info.attempts == 1  # dead_on=(KeyError,) was applied in the child
    (error,) = info.errors
    assert error.type == "KeyError"
    assert error.traceback is not None
    assert "offload_jobs.py" in error.traceback


async def test_a_cpu_bound_process_job_does_not_stall_the_event_loop(backend: Backend) -> None:
    """A child spinning a CPU for 2 s: async jobs and the loop (heartbeats) keep their pace.

    The bounds hold on a loaded 2-core machine; the figures measured are printed (``-s``).
    """
    started = Started(2)
    app = app_with(backend, "crunch", started=started)

    @app.job(schema=Order, name="ping")
    async def ping(payload: Order) -> float:
        return time.perf_counter()

    lags: list[float] = []
    latencies: list[float] = []
    with anyio.fail_after(30):
        async with app.worker(**options()):
            await jobs.crunch.enqueue_and_wait(jobs.Work(1), timeout=20)  # the child is up
            spinning = await jobs.crunch.enqueue(jobs.Work(1, spin=2.0))
            await started.all.wait()
            end = time.perf_counter() + 1.5
            while time.perf_counter() < end:
                before = time.perf_counter()
                await anyio.sleep(0.02)
                lags.append(time.perf_counter() - before - 0.02)
                sent = time.perf_counter()
                latencies.append(await ping.enqueue_and_wait(Order("p", 1), timeout=5) - sent)
            assert (await spinning.info()).state is JobState.ACTIVE  # still spinning
            await spinning.result(timeout=20)
    print(f"max loop lag {max(lags) * 1000:.1f} ms, max async job {max(latencies) * 1000:.1f} ms")
    assert max(lags) < 0.5
    assert max(latencies) < 0.5


async def test_shutdown_lets_thread_and_process_handlers_finish_and_hands_back_the_rest() -> None:
    started = Started(4)
    app = app_with(MemoryBackend(), "slow", started=started)
    release = threading.Event()

    @app.job(schema=Order, name="sync_short")
    def sync_short(payload: Order) -> str:
        time.sleep(0.2)
        return "done"

    @app.job(schema=Order, name="sync_long")
    def sync_long(payload: Order) -> str:
        release.wait(10)
        return "late"

    try:
        with anyio.fail_after(30):
            async with app:
                async with app.worker(**options(shutdown_timeout=1.5, concurrency=6)) as worker:
                    short = await sync_short.enqueue(Order("a", 1))
                    done_child = await jobs.slow.enqueue(jobs.Work(1, spin=0.3))
                    long_thread = await sync_long.enqueue(Order("b", 1))
                    long_child = await jobs.slow.enqueue(jobs.Work(2, spin=30))
                    await started.all.wait()
                    worker.stop()
                states = {h.id: (await h.info()).state for h in (short, done_child)}
                assert set(states.values()) == {JobState.COMPLETED}
                assert (await long_thread.info()).state is JobState.QUEUED
                assert (await long_child.info()).state is JobState.QUEUED
                assert worker.offload.processes.killed == 1
                assert worker.offload.threads.abandoned == 1
    finally:
        release.set()


async def test_sync_and_process_jobs_have_their_consumer_span() -> None:
    """The span is current in a sync handler's thread; a process job's span covers its child."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(tracer_provider=provider, meter_provider=MeterProvider())
    app = App("offload", backend=MemoryBackend(), jobs=[jobs.crunch], telemetry=telemetry)
    seen: list[trace.SpanContext] = []

    @app.job(schema=Order, name="traced", queue="mail")
    def traced(payload: Order) -> None:
        seen.append(trace.get_current_span().get_span_context())

    try:
        with anyio.fail_after(20):
            async with app, app.worker(**options()):
                await traced.enqueue_and_wait(Order("o-1", 1), timeout=10)
                await jobs.crunch.enqueue_and_wait(jobs.Work(3), timeout=10)
    finally:
        provider.shutdown()
    spans = {s.name: s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER}
    mail, default = spans["process mail"], spans["process default"]
    assert mail.context is not None
    assert seen[0].span_id == mail.context.span_id
    assert (mail.attributes or {})["asyncq.job.outcome"] == "completed"
    assert (default.attributes or {})["asyncq.job.name"] == "crunch"
    assert (default.attributes or {})["asyncq.job.outcome"] == "completed"


def _metric(reader: InMemoryMetricReader, name: str) -> float:
    """The one data point's value of metric ``name`` that ``reader`` collects now."""
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    [point] = metric.data.data_points
                    return point.value  # type: ignore[union-attr]
    msg = f"no metric {name!r}"
    raise AssertionError(msg)
