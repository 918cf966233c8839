"""Observability: a worker's spans and metrics, printed by the OpenTelemetry console exporters.

Run it from the repository root (the SDK comes with ``pip install 'asyncq[otel]'``)::

    python examples/observability.py

On the in-memory backend it charges one order under a ``checkout`` span (a
request/response with ``enqueue_and_wait``) and sends one notice whose first
attempt fails, then prints one line per span and per metric point. Follow the
ids: each ``process`` span (CONSUMER) is the child of the ``enqueue`` span
(PRODUCER) that stored the job, in the caller's trace; the failed attempt
carries ``exception`` and ``asyncq.job.retry`` events.

In a service, configure the SDK once, globally, and every ``App`` uses it::

    trace.set_tracer_provider(tracer_provider)   # e.g. BatchSpanProcessor(OTLPSpanExporter())
    metrics.set_meter_provider(meter_provider)   # e.g. PeriodicExportingMetricReader(...)
    app = App("shop")                            # telemetry=True: the global providers

This example hands its providers to ``Telemetry(...)`` instead, which leaves
the process-wide globals alone (its test runs inside the test suite).
"""

from __future__ import annotations

import math
import sys

import anyio
import msgspec
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    HistogramDataPoint,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from asyncq import App, JobContext, RetryPolicy, Telemetry


class _Stdout:
    """Writes to ``sys.stdout`` as it is at each write, so a test can capture the output."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def _short(span_id: int) -> str:
    return f"{span_id:016x}"[:8]


def span_line(span: ReadableSpan) -> str:
    """One line per span instead of the exporter's JSON document."""
    context = span.get_span_context()
    if context is None:
        return ""
    parent = _short(span.parent.span_id) if span.parent else "-"
    outcome = (span.attributes or {}).get("asyncq.job.outcome", "")
    events = " ".join(e.name for e in span.events)
    return (
        f"span   {span.name:<26} {span.kind.name:<8} trace {_short(context.trace_id)} "
        f"id {_short(context.span_id)} parent {parent:<8} {outcome} {events}".rstrip()
        + "\n"
    )


_LABELS = {
    "messaging.destination.name": "queue",
    "asyncq.job.name": "job",
    "asyncq.job.outcome": "outcome",
    "asyncq.job.state": "state",
}


def metric_lines(data: MetricsData) -> str:
    """One line per data point that is not zero."""
    lines = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    if isinstance(point, HistogramDataPoint):
                        value = f"{point.count} in {point.sum * 1000:.2f} ms"
                    elif isinstance(point, NumberDataPoint) and point.value:
                        value = str(point.value)
                    else:
                        continue
                    attrs = (point.attributes or {}).items()
                    labels = " ".join(f"{_LABELS.get(k, k)}={v!s}" for k, v in attrs)
                    lines.append(f"metric {metric.name:<24} {labels:<42} {value}")
    return "\n".join(lines) + "\n"


tracer_provider = TracerProvider()
tracer_provider.add_span_processor(
    SimpleSpanProcessor(ConsoleSpanExporter(out=_Stdout(), formatter=span_line))  # type: ignore[arg-type]
)
# No export timer: the metrics are printed once, by force_flush() at the end.
metric_reader = PeriodicExportingMetricReader(
    ConsoleMetricExporter(out=_Stdout(), formatter=metric_lines),  # type: ignore[arg-type]
    export_interval_millis=math.inf,
)
meter_provider = MeterProvider(metric_readers=[metric_reader], shutdown_on_exit=False)
telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)

app = App("shop", backend="memory://", telemetry=telemetry)


class Charge(msgspec.Struct):
    order_id: str
    cents: int


class Receipt(msgspec.Struct):
    order_id: str
    charged: int


class Notice(msgspec.Struct):
    order_id: str


@app.job(schema=Charge, name="charge", queue="payments")
async def charge(payload: Charge) -> Receipt:
    return Receipt(payload.order_id, payload.cents)


@app.job(schema=Notice, name="notify", max_attempts=3, retry=RetryPolicy.fixed(0.05))
async def notify(payload: Notice, ctx: JobContext) -> None:
    if ctx.attempt == 1:
        raise ConnectionError("mail relay unreachable")


async def main() -> Receipt:
    """Charge an order (request/response) and send a notice that fails once, then print."""
    tracer = tracer_provider.get_tracer("shop")
    async with app, app.worker(concurrency=4):
        with tracer.start_as_current_span("checkout"):
            receipt = await charge.enqueue_and_wait(Charge("o-1", 500), timeout=10)
        notice = await notify.enqueue(Notice("o-1"))
        await notice.result(timeout=10)
        await telemetry.refresh_depth(app.backend)
    meter_provider.force_flush()
    return receipt


if __name__ == "__main__":
    print(anyio.run(main))
