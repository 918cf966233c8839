"""The job event stream through the public API: ``app.events()``, ``handle.history()``,
``Admin.history``, ``App(events=False)``; on the memory store (the stores' own
behaviour is ``tests/backends/test_events.py``)."""

from __future__ import annotations

import time

import anyio
import msgspec
import pytest

from asyncq import App, EventKind, EventsLost, JobContext, JobEvent, RetryPolicy
from asyncq.backends.memory import MemoryBackend
from asyncq.testing import run_until_idle

pytestmark = pytest.mark.anyio

BOUND = 10.0


class Order(msgspec.Struct):
    ref: str
    fail_first: int = 0


def make_app(**options: object) -> App:
    options.setdefault("events", True)
    app = App("events", backend=MemoryBackend(**options), telemetry=False)  # type: ignore[arg-type]

    @app.job(schema=Order, name="ship", max_attempts=3, retry=RetryPolicy.fixed(0))
    async def ship(order: Order, ctx: JobContext) -> str:
        await ctx.progress(0.5)
        if ctx.attempt <= order.fail_first:
            raise ValueError(f"carrier down for {order.ref}")
        return order.ref

    @app.job(schema=Order, name="audit")
    async def audit(order: Order) -> None:
        return None

    return app


async def test_a_subscriber_sees_a_job_retry_then_complete_and_its_history() -> None:
    app = make_app()
    ship = app.handlers["ship"]
    with anyio.fail_after(BOUND):
        async with app, app.events(kinds=["started", "retrying", "completed"]) as stream:
            handle = await ship.enqueue(Order("o-1", fail_first=1))
            await run_until_idle(app)
            seen = [await stream.__anext__() for _ in range(4)]
            history = await handle.history()
            assert history == await app.admin.history(handle.id)
    assert all(isinstance(event, JobEvent) for event in seen)
    events = [e for e in seen if isinstance(e, JobEvent)]
    assert [(e.kind, e.attempt) for e in events] == [
        (EventKind.STARTED, 1),
        (EventKind.RETRYING, 1),
        (EventKind.STARTED, 2),
        (EventKind.COMPLETED, 2),
    ]
    assert events[1].error is not None
    assert events[1].error.message == "carrier down for o-1"
    assert [e.kind for e in history] == [
        EventKind.ENQUEUED,
        EventKind.STARTED,
        EventKind.PROGRESS,
        EventKind.RETRYING,
        EventKind.STARTED,
        EventKind.PROGRESS,
        EventKind.COMPLETED,
    ]


async def test_names_filter_and_a_resumed_subscription_repeats_nothing() -> None:
    app = make_app()
    ship, audit = app.handlers["ship"], app.handlers["audit"]
    with anyio.fail_after(BOUND):
        async with app:
            async with app.events(names=["audit"]) as stream:
                first = await audit.enqueue(Order("a-1"))
                await ship.enqueue(Order("s-1"))
                event = await stream.__anext__()
                assert isinstance(event, JobEvent)
                assert (event.kind, event.job_id) == (EventKind.ENQUEUED, first.id)
                resume = stream.last_id
            second = await audit.enqueue(Order("a-2"))
            async with app.events(names=["audit"], since=resume) as stream:
                event = await stream.__anext__()
                assert isinstance(event, JobEvent)
                assert event.job_id == second.id  # not the first again


async def test_since_a_time_reads_the_kept_events_from_then() -> None:
    app = make_app()
    audit = app.handlers["audit"]
    with anyio.fail_after(BOUND):
        async with app:
            old = await audit.enqueue(Order("old"))
            cut = time.time()
            await anyio.sleep(0.01)
            new = await audit.enqueue(Order("new"))
            async with app.events(since=cut) as stream:
                found = await stream.available()
    assert [e.job_id for e in found if isinstance(e, JobEvent)] == [new.id]
    assert old.id != new.id


async def test_a_subscriber_overtaken_by_retention_gets_events_lost() -> None:
    app = make_app(retention=None)
    backend = app.backend
    assert isinstance(backend, MemoryBackend)
    from asyncq.backends import Retention

    backend._retention = Retention(max_events=2)
    audit = app.handlers["audit"]
    with anyio.fail_after(BOUND):
        async with app, app.events() as stream:
            for i in range(5):
                await audit.enqueue(Order(f"a-{i}"))
            await backend.prune()
            found = await stream.available()
    assert isinstance(found[0], EventsLost)
    assert found[0].count == 3
    assert len(found) == 3  # the signal, then the two kept


async def test_an_app_with_events_off_writes_none() -> None:
    app = make_app()
    quiet = App("quiet", backend=app.backend, events=False)
    assert app.backend.events is False  # type: ignore[attr-defined]
    ship = app.handlers["ship"]
    with anyio.fail_after(BOUND):
        async with quiet:
            handle = await ship.enqueue(Order("o"))
            await run_until_idle(app)
            assert await handle.history() == []
