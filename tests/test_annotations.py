"""Job annotations from the handler's and the producer's side, through a real worker.

``ctx.log`` and ``ctx.progress(detail=...)`` in running handlers, read back
while the job runs and after it; ``meta=`` on every way of enqueueing, its
checks, ``Admin.jobs(meta=...)``, the log records and the span attributes.
The store-level contract is in ``backends/test_annotations.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asyncq import Admin, App, ConfigurationError, JobContext, RetryPolicy, Telemetry
from asyncq._annotations import MAX_DETAIL_BYTES, MAX_META_BYTES, MAX_META_KEYS
from asyncq.backends.base import Backend
from asyncq.backends.memory import MemoryBackend
from asyncq.testing import run_until_idle

pytestmark = pytest.mark.anyio

BOUND = 20.0
WORKER = {"concurrency": 2, "heartbeat": 0.05, "poll_interval": 0.2, "shutdown_timeout": 5.0}


class Image(msgspec.Struct):
    name: str
    fail_first: bool = False


@pytest.fixture
def app(backend: Backend) -> App:
    return App("annotations", backend=backend)


async def test_ctx_log_and_progress_detail_are_readable_while_the_job_runs(app: App) -> None:
    logged = anyio.Event()
    release = anyio.Event()

    @app.job(schema=Image, name="resize")
    async def resize(payload: Image, ctx: JobContext) -> str:
        await ctx.log("resized to 640px")
        await ctx.log("disk is slow", level="warning")
        await ctx.progress(0.4, detail={"step": "upload", "bytes": 1024})
        logged.set()
        await release.wait()
        return payload.name

    with anyio.fail_after(BOUND):
        async with app, app.worker(**WORKER):
            handle = await resize.enqueue(Image("cat.png"))
            await logged.wait()
            running = await app.get_job(handle.id).info()
            assert [(x.level, x.message, x.attempt) for x in running.logs] == [
                ("info", "resized to 640px", 1),
                ("warning", "disk is slow", 1),
            ]
            assert running.progress == 0.4
            assert running.progress_detail == {"step": "upload", "bytes": 1024}
            release.set()
            assert await handle.result(timeout=BOUND) == "cat.png"
        done = await app.get_job(handle.id).info()
        assert len(done.logs) == 2


async def test_logs_survive_a_retry_with_their_attempt(app: App) -> None:
    @app.job(schema=Image, name="flaky", max_attempts=2, retry=RetryPolicy.fixed(0.01))
    async def flaky(payload: Image, ctx: JobContext) -> None:
        await ctx.log(f"try {ctx.attempt}")
        if ctx.attempt == 1:
            raise ValueError("first try fails")

    with anyio.fail_after(BOUND):
        async with app, app.worker(**WORKER):
            handle = await flaky.enqueue(Image("x"))
            await handle.result(timeout=BOUND)
            job = await app.get_job(handle.id).info()
    assert [(x.attempt, x.message) for x in job.logs] == [(1, "try 1"), (2, "try 2")]


async def test_ctx_log_goes_to_python_logging_with_the_job_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App("logs", backend=MemoryBackend())

    @app.job(schema=Image, name="resize")
    async def resize(payload: Image, ctx: JobContext) -> None:
        await ctx.log("almost done", level="error")

    with caplog.at_level(logging.DEBUG, logger="asyncq.job"), anyio.fail_after(BOUND):
        async with app:
            handle = await resize.enqueue(Image("x"))
            await run_until_idle(app)
    [record] = [r for r in caplog.records if r.name == "asyncq.job"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "almost done"
    fields: dict[str, Any] = vars(record)
    assert (fields["job_id"], fields["job_name"], fields["attempt"]) == (handle.id, "resize", 1)


async def test_ctx_refuses_bad_levels_and_details() -> None:
    app = App("checks", backend=MemoryBackend())
    problems: list[str] = []

    @app.job(schema=Image, name="picky")
    async def picky(payload: Image, ctx: JobContext) -> None:
        for attempt in (
            ctx.log("x", level="loud"),
            ctx.progress(0.1, detail={"when": object()}),
            ctx.progress(0.1, detail="x" * MAX_DETAIL_BYTES),
        ):
            with pytest.raises(ValueError) as caught:
                await attempt
            problems.append(str(caught.value))

    with anyio.fail_after(BOUND):
        async with app:
            handle = await picky.enqueue(Image("x"))
            await run_until_idle(app)
    assert "log level must be one of debug, info, warning, error" in problems[0]
    assert f"progress detail of job 'picky' (id {handle.id}) must be JSON-able" in problems[1]
    assert f"is {MAX_DETAIL_BYTES + 2:,} bytes as JSON; the limit is" in problems[2]


async def test_meta_on_every_way_of_enqueueing_and_the_admin_filter(app: App) -> None:
    @app.job(schema=Image, name="tag")
    async def tag(payload: Image) -> str:
        return payload.name

    with anyio.fail_after(BOUND):
        async with app:
            one = await tag.enqueue(Image("a"), meta={"tenant": "acme", "n": 1})
            many = await tag.enqueue_many(
                [(Image("b"), {"meta": {"tenant": "acme", "n": 2}}), Image("c")]
            )
            async with app.worker(**WORKER):
                assert await tag.enqueue_and_wait(Image("d"), meta={"tenant": "other"}) == "d"
            admin = Admin(app)
            acme = await admin.jobs(meta={"tenant": "acme"})
            assert [j.id for j in acme] == [one.id, many[0].id]
            assert [j.meta["n"] for j in acme] == [1, 2]
            assert [j.id for j in await admin.jobs(meta={"n": "2"})] == [many[0].id]
            [other] = await admin.jobs(meta={"tenant": "other"})
            assert other.meta == {"tenant": "other"}
            assert (await many[1].info()).meta == {}


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        ({1: "x"}, "meta must have str keys, got 1"),
        ({f"k{i}": i for i in range(MAX_META_KEYS + 1)}, f"the limit is {MAX_META_KEYS}"),
        ({"big": "x" * MAX_META_BYTES}, f"the limit is {MAX_META_BYTES:,}"),
        ({"when": object()}, "meta must be JSON-able"),
        (["tenant"], "meta must be a mapping"),
    ],
)
async def test_meta_is_checked_before_anything_is_stored(meta: Any, problem: str) -> None:
    backend = MemoryBackend()
    app = App("checks", backend=backend)

    @app.job(schema=Image, name="tag")
    async def tag(payload: Image) -> None:
        pass

    async with app:
        with pytest.raises(ConfigurationError) as caught:
            await tag.enqueue(Image("x"), meta=meta)
        assert "job 'tag'" in str(caught.value)
        assert problem in str(caught.value)
        assert await backend.list_jobs() == []


@pytest.fixture
def spans() -> Iterator[tuple[InMemorySpanExporter, Telemetry]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter, Telemetry(tracer_provider=provider)
    provider.shutdown()


async def test_meta_becomes_span_attributes(
    spans: tuple[InMemorySpanExporter, Telemetry],
) -> None:
    exporter, telemetry = spans
    app = App("traced", backend=MemoryBackend(), telemetry=telemetry)

    @app.job(schema=Image, name="tag")
    async def tag(payload: Image) -> None:
        pass

    meta = {"tenant": "acme", "n": 3, "ok": True, "tags": ["a", "b"], "none": None}
    with anyio.fail_after(BOUND):
        async with app:
            await tag.enqueue(Image("x"), meta=meta)
            await tag.enqueue(Image("plain"))
            await run_until_idle(app)
    expected = {
        "asyncq.meta.tenant": "acme",
        "asyncq.meta.n": 3,
        "asyncq.meta.ok": True,
        "asyncq.meta.tags": '["a","b"]',
        "asyncq.meta.none": "null",
    }
    found = exporter.get_finished_spans()
    producers = [s for s in found if s.name == "enqueue default"]
    consumers = [s for s in found if s.name == "process default"]
    assert len(producers) == len(consumers) == 2
    for first, second in (producers, consumers):
        attributes = dict(first.attributes or {})
        assert {k: v for k, v in attributes.items() if k.startswith("asyncq.meta.")} == expected
        assert not any(k.startswith("asyncq.meta.") for k in dict(second.attributes or {}))
