"""What a type checker must see in asyncq's public API (checked by mypy, never run).

``tests/test_typing.py`` runs mypy on this file with ``warn_unused_ignores``,
so each ``# type: ignore[code]`` below is an assertion too: the line must keep
failing with exactly that error. Every check lives in an ``async def`` that
nothing calls; importing the module only defines classes and functions.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, assert_type

import msgspec

from asyncq import (
    App,
    EnqueueAndWaitArgs,
    EnqueueArgs,
    EnqueueManyArgs,
    FatalFailure,
    Flow,
    FlowNode,
    Handler,
    ItemArgs,
    JobContext,
    JobDecorator,
    JobHandle,
    JobRecord,
    RetryPolicy,
    current_job,
)
from asyncq.sync import SyncJob


class Resize(msgspec.Struct):
    url: str
    width: int


class Other(msgspec.Struct):
    name: str


class Thumb(msgspec.Struct):
    data: bytes


@dataclasses.dataclass
class Charge:
    order_id: str
    cents: int


class Event(TypedDict):
    kind: str


async def check_decorated_handler_types(app: App) -> None:
    @app.job(schema=Resize)
    async def resize(p: Resize) -> bytes:
        return p.url.encode()

    assert_type(resize, Handler[Resize, bytes])
    payload = Resize("https://x/1.png", 64)
    assert_type(await resize.enqueue_and_wait(payload), bytes)
    assert_type(await resize.enqueue_and_wait(payload, timeout=5.0), bytes)
    handle = await resize.enqueue(payload)
    assert_type(handle, JobHandle[bytes])
    later = await resize.enqueue(payload, delay=timedelta(seconds=1), key="k", priority=5)
    assert_type(later, JobHandle[bytes])
    assert_type(await handle.result(), bytes)
    assert_type(await handle.result(timeout=1.0), bytes)
    assert_type(await handle.info(), JobRecord)
    assert_type(await handle.cancel(), JobRecord)
    assert_type(handle.id, str)
    assert_type(handle.created, bool)
    assert_type(await resize.enqueue_many([payload, payload]), list[JobHandle[bytes]])
    items: list[Resize | tuple[Resize, ItemArgs]] = [payload, (payload, {"id": "a", "key": "k"})]
    assert_type(await resize.enqueue_many(items), list[JobHandle[bytes]])
    assert_type(await resize.enqueue_many([(payload, {"id": "b"})]), list[JobHandle[bytes]])
    assert_type(await resize.enqueue(payload, id="order-42"), JobHandle[bytes])
    assert_type(await resize.enqueue_and_wait(payload, id="order-42"), bytes)
    assert_type(resize.get_job("order-42"), JobHandle[bytes])
    assert_type(await resize.get_job("order-42").result(), bytes)
    assert_type(app.get_job("order-42"), JobHandle[Any])
    await resize.enqueue_many([(payload, {"queue": "q"})])  # type: ignore[typeddict-unknown-key]
    await resize.enqueue_many([payload], id="x")  # type: ignore[call-arg]
    await resize.enqueue(payload, id=42)  # type: ignore[arg-type]
    assert_type(await resize(payload), bytes)  # a direct call, as in unit tests
    assert_type(resize.record(payload), JobRecord)


async def check_enqueue_options(app: App) -> None:
    @app.job(schema=Resize, timeout=30)
    async def resize(p: Resize) -> bytes:
        return b""

    payload = Resize("u", 1)
    at = datetime.now(UTC)
    handle = await resize.enqueue(payload, at=at, timeout=5.0, max_attempts=2, queue="q")
    assert_type(handle, JobHandle[bytes])
    many = await resize.enqueue_many(
        [payload], delay=1.5, at=None, priority=1, queue="q", timeout=5.0, max_attempts=2
    )
    assert_type(many, list[JobHandle[bytes]])
    # timeout= is how long the caller waits; job_timeout= is the job's own deadline.
    waited = await resize.enqueue_and_wait(
        payload, timeout=5.0, at=at, job_timeout=30.0, max_attempts=1, key="k", priority=2
    )
    assert_type(waited, bytes)
    assert_type(resize.record(payload, at=at, timeout=1.0, max_attempts=1), JobRecord)
    admin = await app.admin.enqueue(
        "resize", {"url": "u", "width": 1}, at=at, timeout=5.0, max_attempts=2
    )
    assert_type(admin, JobHandle[Any])
    assert_type(await app.admin.enqueue_json("resize", "{}", timeout=1.0), JobHandle[Any])
    await resize.enqueue(payload, at="tomorrow")  # type: ignore[arg-type]
    await resize.enqueue_and_wait(payload, job_timeout="30s")  # type: ignore[arg-type]
    await resize.enqueue_many([payload], key="k")  # type: ignore[call-arg]
    await resize.enqueue(payload, 10)  # type: ignore[call-arg]  # options are keyword-only
    await resize.enqueue(payload, priority="x")  # type: ignore[arg-type]
    await resize.enqueue(payload, bogus=1)  # type: ignore[call-arg]
    await resize.enqueue(payload, job_timeout=1.0)  # type: ignore[call-arg]  # enqueue_and_wait's
    await resize.enqueue_and_wait(payload, bogus=1)  # type: ignore[call-arg]
    await resize.enqueue_many([payload], max_attempts="2")  # type: ignore[arg-type]
    resize.record(payload, bogus=1)  # type: ignore[call-arg]
    await app.admin.enqueue("resize", {}, priority="x")  # type: ignore[arg-type]
    await app.admin.enqueue_json("resize", "{}", bogus=1)  # type: ignore[call-arg]


async def check_named_enqueue_options(app: App) -> None:
    @app.job(schema=Resize)
    async def resize(p: Resize) -> bytes:
        return b""

    payload = Resize("u", 1)
    urgent: EnqueueArgs = {"priority": 10, "queue": "fast", "key": "k"}
    assert_type(await resize.enqueue(payload, connection=None, **urgent), JobHandle[bytes])
    # the blocking twins take a driver connection too (a sync psycopg.Connection)
    assert_type(app.sync.enqueue(resize, payload, connection=None, **urgent), SyncJob[bytes])
    assert_type(
        app.sync.enqueue_many(resize, [payload], connection=object(), timeout=5.0),
        list[SyncJob[bytes]],
    )
    assert_type(resize.record(payload, now=0.0, **urgent), JobRecord)
    assert_type(await app.admin.enqueue("resize", {}, **urgent), JobHandle[Any])
    assert_type(await app.admin.enqueue_json("resize", "{}", **urgent), JobHandle[Any])
    bulk: EnqueueManyArgs = {"timeout": 5.0, "max_attempts": 1}
    assert_type(await resize.enqueue_many([payload], **bulk), list[JobHandle[bytes]])
    assert_type(await resize.enqueue(payload, **bulk), JobHandle[bytes])
    waited: EnqueueAndWaitArgs = {"job_timeout": 30.0, "key": "k"}
    assert_type(await resize.enqueue_and_wait(payload, timeout=5.0, **waited), bytes)
    # enqueue_many has no key; enqueue has no job_timeout.
    await resize.enqueue_many([payload], **urgent)  # type: ignore[misc]
    await resize.enqueue(payload, **waited)  # type: ignore[misc]
    bad: EnqueueArgs = {"priority": "high"}  # type: ignore[typeddict-item]
    typo: EnqueueArgs = {"prority": 1}  # type: ignore[typeddict-unknown-key]
    del bad, typo


async def check_handler_taking_a_context(app: App) -> None:
    @app.job(schema=Resize, queue="images", max_attempts=5, retry=RetryPolicy.fixed(1))
    async def thumbnail(p: Resize, ctx: JobContext) -> Thumb:
        await ctx.progress(0.5)
        assert_type(ctx.attempt, int)
        assert_type(ctx.job_id, str)
        assert_type(current_job(), JobContext)
        return Thumb(b"")

    assert_type(thumbnail, Handler[Resize, Thumb])
    assert_type(await thumbnail.enqueue_and_wait(Resize("u", 1)), Thumb)
    assert_type(await thumbnail(Resize("u", 1)), Thumb)
    assert_type(await thumbnail(Resize("u", 1), current_job()), Thumb)


async def check_sync_and_process_handlers(app: App) -> None:
    # A plain def runs in a thread; Handler[T, R] is typed as for an async def.
    @app.job(schema=Resize)
    def blocking(p: Resize, ctx: JobContext) -> Thumb:
        ctx.from_thread(ctx.progress, 0.5)
        assert_type(ctx.from_thread(ctx.progress, 0.5), None)
        assert_type(ctx.cancelled, bool)
        return Thumb(b"")

    @app.job(schema=Resize, process=True)
    def crunch(p: Resize) -> int:
        return p.width

    @app.job(schema=Resize, process=True)
    async def crunch_async(p: Resize) -> int:
        return p.width

    assert_type(blocking, Handler[Resize, Thumb])
    assert_type(await blocking.enqueue_and_wait(Resize("u", 1)), Thumb)
    assert_type(await blocking(Resize("u", 1)), Thumb)
    assert_type(crunch, Handler[Resize, int])
    assert_type(crunch_async, Handler[Resize, int])
    ctx = current_job()
    ctx.from_thread(ctx.progress, "half")  # type: ignore[arg-type]


async def check_other_schema_kinds(app: App) -> None:
    @app.job(schema=list[int], name="sum")
    async def total(p: list[int]) -> int:
        return sum(p)

    @app.job(schema=Charge)
    async def charge(p: Charge) -> None:
        pass

    @app.job(schema=Event)
    async def track(p: Event) -> str:
        return p["kind"]

    assert_type(total, Handler[list[int], int])
    assert_type(await total.enqueue_and_wait([1, 2]), int)
    assert_type(charge, Handler[Charge, None])
    assert_type(await charge.enqueue(Charge("o-1", 500)), JobHandle[None])
    assert_type(track, Handler[Event, str])
    assert_type(await track.enqueue_and_wait({"kind": "click"}), str)


async def check_decorator_object(app: App) -> None:
    decorator = app.job(schema=Resize, timeout=timedelta(seconds=30), dead_on=(KeyError,))
    assert_type(decorator, JobDecorator[Resize])


async def check_failure_classes(app: App) -> None:
    decorator = app.job(schema=Resize, fatal_on=(MemoryError,), dead_on=(KeyError,))
    assert_type(decorator, JobDecorator[Resize])
    app.classify(ConnectionError, "transient")
    app.classify((KeyError, ValueError), "permanent")
    app.classify(lambda exc: "out of memory" in str(exc), "fatal")
    app.classify(OSError, "deadly")  # type: ignore[arg-type]
    app.classify("OSError", "fatal")  # type: ignore[arg-type]
    app.job(schema=Resize, fatal_on=("MemoryError",))  # type: ignore[arg-type]
    worker = await app.run_worker(concurrency=1)
    assert_type(worker.fatal, FatalFailure | None)


async def check_producer_handles(app: App) -> None:
    remote = app.handle("images.resize", schema=Resize, result=bytes)
    assert_type(remote, Handler[Resize, bytes])
    assert_type(await remote.enqueue_and_wait(Resize("u", 1)), bytes)
    untyped = app.handle("images.resize", schema=Resize)
    assert_type(untyped, Handler[Resize, Any])
    assert_type(app.get_job("01h..."), JobHandle[Any])


async def check_rejected_payloads(app: App) -> None:
    @app.job(schema=Resize)
    async def resize(p: Resize) -> bytes:
        return b""

    await resize.enqueue(Other("x"))  # type: ignore[arg-type]
    await resize.enqueue_and_wait(Other("x"))  # type: ignore[arg-type]
    await resize.enqueue_many([Other("x")])  # type: ignore[list-item]
    await resize(Other("x"))  # type: ignore[arg-type]
    await resize.enqueue(Resize("u", 1), delay="soon")  # type: ignore[arg-type]
    result: str = await resize.enqueue_and_wait(Resize("u", 1))  # type: ignore[assignment]
    del result


async def check_rejected_registrations(app: App) -> None:
    # A function must accept the declared schema.
    @app.job(schema=Other)  # type: ignore[arg-type]
    async def resize(p: Resize) -> bytes:
        return b""

    # The second argument, if any, is the JobContext.
    @app.job(schema=Resize)  # type: ignore[arg-type]
    async def two_payloads(p: Resize, q: Resize) -> bytes:
        return b""

    app.job(schema=Resize, max_attempts="3")  # type: ignore[arg-type]


async def check_dependencies_and_flows(app: App, ctx: JobContext) -> None:
    @app.job(schema=Resize)
    async def resize(p: Resize) -> Thumb:
        return Thumb(b"")

    @app.job(schema=Other)
    async def pack(p: Other) -> int:
        return 0

    payload = Resize("u", 1)
    parent = await resize.enqueue(payload)
    child = await pack.enqueue(Other("z"), after=[parent, "other-id"], after_failure="run")
    assert_type(child, JobHandle[int])
    assert_type(await ctx.parent_result(parent), Thumb)
    assert_type(await ctx.parent_result("other-id"), Any)
    assert_type(await ctx.parent_results(), dict[str, Any])
    await pack.enqueue_many([(Other("a"), {"after": [parent]})])
    flow = app.flow()
    assert_type(flow, Flow)
    node = flow.add(resize, payload)
    assert_type(node, FlowNode[Thumb])
    last = flow.add(pack, Other("z"), after=[node, parent, "id"])
    assert_type(last.handle, JobHandle[int])
    assert_type(await flow.enqueue(), list[JobHandle[Any]])
    await pack.enqueue(Other("z"), after_failure="later")  # type: ignore[arg-type]
    flow.add(pack, payload)  # type: ignore[misc]
