"""asyncq's side of the benchmark scenarios (see benchmarks/README.md).

Every scenario runs in a fresh namespace of the chosen backend and returns a
dict of figures. The worker runs in this process, as one worker process
would; the producer is idle while a drain is timed.
"""

from __future__ import annotations

import resource
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import msgspec

from asyncq import App, JobContext
from asyncq.backends import from_url
from asyncq.backends.base import DROP, Backend, JobState

Scenario = Callable[[str, int], Awaitable[dict[str, Any]]]
T = TypeVar("T")

DEFAULT_URLS = {
    "memory": "memory://",
    "sqlite": "sqlite:///{tmp}/bench-{ns}.db",
    "redis": "redis://127.0.0.1:6379/0",
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
}


class Noop(msgspec.Struct, array_like=True):
    n: int = 0


def make_backend(url: str, namespace: str | None = None) -> Backend:
    """The backend at ``url`` (or a name of ``DEFAULT_URLS``) in a namespace of its own.

    A Redis key prefix, a PostgreSQL schema (created on open) or a SQLite file
    named after ``namespace`` (a fresh one by default), so that runs never see
    each other's jobs. Worker processes of one run pass the run's namespace.
    """
    url = DEFAULT_URLS.get(url, url)
    ns = namespace or f"bench{uuid.uuid4().hex[:8]}"
    scheme = url.partition("://")[0]
    if scheme == "sqlite":
        import tempfile

        return from_url(url.format(tmp=tempfile.gettempdir(), ns=ns))
    if scheme.startswith(("redis", "valkey")):
        return from_url(url, namespace=ns)
    if scheme.startswith("postgres"):
        return from_url(url, schema=ns, migrate=True)
    return from_url(url)


def run_on(function: Callable[..., Awaitable[T]], *args: Any, loop: str = "asyncio") -> T:
    """``anyio.run`` on the chosen event loop: ``asyncio`` or ``uvloop``."""
    return anyio.run(function, *args, backend_options={"use_uvloop": loop == "uvloop"})


async def drop_all(backend: Backend) -> None:
    """Delete what the run stored (every store offers ``DROP``)."""
    if (droppable := DROP.of(backend)) is not None:
        await droppable.drop()


def noop_sync(payload: Noop) -> None:
    """A plain ``def`` handler: runs in the worker's thread pool."""


def make_app(backend: Backend) -> tuple[App, Any, Any]:
    app = App("bench", backend=backend)

    @app.job(schema=Noop, name="noop", max_attempts=1, result_ttl=3600)
    async def noop(payload: Noop) -> None:
        return None

    @app.job(schema=Noop, name="sleep", max_attempts=1, result_ttl=3600)
    async def sleep(payload: Noop) -> None:
        await anyio.sleep(0.05)

    return app, noop, sleep


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _completed(backend: Backend) -> int:
    (stats,) = await backend.stats(["default"])
    return stats.counts[JobState.COMPLETED]


async def _drain(app: App, total: int, concurrency: int) -> float:
    """Run a worker until the queue is empty and settled; seconds from its start to its end."""
    backend = await app.backend_opened()
    worker = app.make_worker(concurrency=concurrency, poll_interval=0.05, lease=60, burst=True)
    started = time.perf_counter()
    await worker.run()
    elapsed = time.perf_counter() - started
    completed = await _completed(backend)
    if completed != total:
        msg = f"drain finished with {completed} of {total} jobs completed"
        raise RuntimeError(msg)
    return elapsed


async def scenario_enqueue(url: str, n: int) -> dict[str, Any]:
    backend = make_backend(url)
    app, noop, _ = make_app(backend)
    async with app:
        try:
            started = time.perf_counter()
            for i in range(n):
                await noop.enqueue(Noop(i))
            elapsed = time.perf_counter() - started
        finally:
            await drop_all(backend)
    return {"jobs_per_s": n / elapsed, "n": n}


async def scenario_enqueue_batch(url: str, n: int) -> dict[str, Any]:
    backend = make_backend(url)
    app, noop, _ = make_app(backend)
    async with app:
        try:
            payloads = [Noop(i) for i in range(n)]
            started = time.perf_counter()
            for i in range(0, n, 1000):
                await noop.enqueue_many(payloads[i : i + 1000])
            elapsed = time.perf_counter() - started
        finally:
            await drop_all(backend)
    return {"jobs_per_s": n / elapsed, "n": n, "batch": 1000}


async def scenario_enqueue_concurrent(url: str, n: int) -> dict[str, Any]:
    """A web service under load: 100 tasks, each enqueueing one job at a time, n in all."""
    backend = make_backend(url)
    app, noop, _ = make_app(backend)
    producers = 100
    async with app:
        try:

            async def produce(first: int) -> None:
                for i in range(first, n, producers):
                    await noop.enqueue(Noop(i))

            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for first in range(producers):
                    tg.start_soon(produce, first)
            elapsed = time.perf_counter() - started
        finally:
            await drop_all(backend)
    return {"jobs_per_s": n / elapsed, "n": n, "producers": producers}


async def _scenario_drain(url: str, n: int, which: str) -> dict[str, Any]:
    backend = make_backend(url)
    app, noop, sleep = make_app(backend)
    handler = {"noop": noop, "sleep": sleep}.get(which)
    if which == "sync":
        handler = app.job(schema=Noop, name="noop-sync", max_attempts=1, result_ttl=3600)(noop_sync)
    elif which == "process":
        from .process_jobs import noop_process  # a child imports it by name

        app.include(noop_process)
        handler = noop_process
    elif which in ("limit", "rich"):
        # A limit that never binds: the store counts every start and end.
        roomy = app.limit("roomy", concurrency=1_000_000)
        if which == "limit":

            async def limited(payload: Noop) -> None:
                return None

            handler = app.job(
                schema=Noop, name="noop-limited", max_attempts=1, result_ttl=3600, limits=[roomy]
            )(limited)
        else:

            async def rich(payload: Noop, ctx: JobContext) -> None:
                await ctx.log("step one done")
                await ctx.progress(0.5, detail={"step": 1})

            handler = app.job(
                schema=Noop, name="noop-rich", max_attempts=1, result_ttl=3600, limits=[roomy]
            )(rich)
    async with app:
        try:
            payloads = [Noop(i) for i in range(n)]
            for i in range(0, n, 1000):
                await handler.enqueue_many(payloads[i : i + 1000])
            elapsed = await _drain(app, n, concurrency=100)
        finally:
            await drop_all(backend)
    return {"jobs_per_s": n / elapsed, "n": n, "concurrency": 100, "peak_rss_mb": peak_rss_mb()}


async def scenario_drain_noop(url: str, n: int) -> dict[str, Any]:
    return await _scenario_drain(url, n, "noop")


async def scenario_drain_limit(url: str, n: int) -> dict[str, Any]:
    """``drain-noop`` with a limit attached that never binds."""
    return await _scenario_drain(url, n, "limit")


async def scenario_drain_rich(url: str, n: int) -> dict[str, Any]:
    """``drain-limit`` whose handler also stores a log line and a progress update."""
    return await _scenario_drain(url, n, "rich")


async def scenario_drain_sleep(url: str, n: int) -> dict[str, Any]:
    return await _scenario_drain(url, n, "sleep")


async def scenario_drain_noop_sync(url: str, n: int) -> dict[str, Any]:
    return await _scenario_drain(url, n, "sync")


async def scenario_drain_noop_process(url: str, n: int) -> dict[str, Any]:
    return await _scenario_drain(url, n, "process")


async def scenario_roundtrip(url: str, n: int) -> dict[str, Any]:
    backend = make_backend(url)
    app, noop, _ = make_app(backend)
    samples: list[float] = []
    async with app:
        try:
            async with app.worker(concurrency=10, poll_interval=1.0):
                await noop.enqueue_and_wait(Noop(), timeout=10)  # warm up
                for i in range(n):
                    started = time.perf_counter()
                    await noop.enqueue_and_wait(Noop(i), timeout=10)
                    samples.append((time.perf_counter() - started) * 1000)
        finally:
            await drop_all(backend)
    samples.sort()
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "n": n,
    }


#: The shape of one ``flow``: a root, this many children after it, one fan-in after them.
FAN_OUT = 10


async def scenario_flow(url: str, n: int) -> dict[str, Any]:
    """``n`` flows, each a root, ``FAN_OUT`` children after it and a fan-in after those.

    Every flow is stored with one ``flow.enqueue()`` (timed apart), then one
    worker drains them all: each job completes, and each completion of a root
    or of a fan-out's last child releases the next step in its settle.
    """
    backend = make_backend(url)
    app, noop, _ = make_app(backend)
    per_flow = FAN_OUT + 2
    total = n * per_flow
    async with app:
        try:
            started = time.perf_counter()
            for i in range(n):
                flow = app.flow()
                root = flow.add(noop, Noop(i))
                children = [flow.add(noop, Noop(i), after=[root]) for _ in range(FAN_OUT)]
                flow.add(noop, Noop(i), after=children)
                await flow.enqueue()
            enqueued = time.perf_counter() - started
            elapsed = await _drain(app, total, concurrency=100)
        finally:
            await drop_all(backend)
    return {
        "jobs_per_s": total / elapsed,
        "us_per_job": elapsed / total * 1e6,
        "enqueue_us_per_job": enqueued / total * 1e6,
        "n": n,
        "jobs": total,
        "concurrency": 100,
        "peak_rss_mb": peak_rss_mb(),
    }


SCENARIOS: dict[str, tuple[Scenario, int]] = {
    # name: (function, default N)
    "enqueue": (scenario_enqueue, 10_000),
    "enqueue-batch": (scenario_enqueue_batch, 10_000),
    "enqueue-concurrent": (scenario_enqueue_concurrent, 20_000),
    "drain-noop": (scenario_drain_noop, 10_000),
    "drain-sleep": (scenario_drain_sleep, 2_000),
    "roundtrip": (scenario_roundtrip, 500),
    # asyncq only: the same drain with ``def`` handlers and with ``process=True`` ones
    "drain-noop-sync": (scenario_drain_noop_sync, 10_000),
    "drain-noop-process": (scenario_drain_noop_process, 2_000),
    # asyncq only: the features switched on (a limit that never binds; and a log
    # line and a progress update per job besides)
    "drain-limit": (scenario_drain_limit, 10_000),
    "drain-rich": (scenario_drain_rich, 10_000),
    # asyncq only: dependencies; N flows of a root, 10 children and a fan-in (12 jobs each)
    "flow": (scenario_flow, 1_000),
}
#: scenarios only asyncq runs (the peers have no such handler kinds to compare)
ASYNCQ_ONLY = frozenset(
    {
        "drain-noop-sync",
        "drain-noop-process",
        "enqueue-concurrent",
        "flow",
        "drain-limit",
        "drain-rich",
    }
)
