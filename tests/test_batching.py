"""Concurrent enqueues share store round trips (``asyncq._batching``), on a real SQLite store.

``Counting`` wraps the store to see each call it gets; its first call can be
held in flight (``gate``), so that which calls go together is decided by the
test, not by timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from asyncq import App
from asyncq._batching import EnqueueBatcher
from asyncq._records import JobRecord
from asyncq.backends.sqlite import SQLiteBackend
from backends._waits import all_blocked

pytestmark = pytest.mark.anyio


class Item(msgspec.Struct):
    n: int


class Counting(SQLiteBackend):
    """A SQLite store that records the size of every enqueue call and may hold the first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []
        self.gate: anyio.Event | None = None
        self.refuse: str | None = None

    async def enqueue(
        self, jobs: Sequence[JobRecord], *, connection: object | None = None, fresh: bool = False
    ) -> list[JobRecord]:
        self.calls.append(len(jobs))
        if self.gate is not None:
            gate, self.gate = self.gate, None
            await gate.wait()
        if self.refuse is not None and any(
            job.payload == msgspec.msgpack.encode(self.refuse) for job in jobs
        ):
            raise ValueError("refused by the store")
        return await super().enqueue(jobs, connection=connection, fresh=fresh)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Counting]:
    backend = Counting(str(tmp_path / "jobs.db"))
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def app(store: Counting) -> AsyncIterator[App]:
    app = App("batched", backend=store)
    async with app:
        yield app


async def test_calls_one_at_a_time_go_alone_and_at_once(app: App, store: Counting) -> None:
    item = app.handle("item", schema=Item)
    with anyio.fail_after(10):
        handles = [await item.enqueue(Item(n)) for n in range(5)]
    assert store.calls == [1, 1, 1, 1, 1]
    assert len({h.id for h in handles}) == 5


async def test_concurrent_calls_share_one_round_trip(app: App, store: Counting) -> None:
    item = app.handle("item", schema=Item, result=None)
    store.gate = release = anyio.Event()
    ids: dict[int, str] = {}

    async def one(n: int) -> None:
        ids[n] = (await item.enqueue(Item(n), meta={"n": str(n)})).id

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for n in range(100):
                tg.start_soon(one, n)
            await all_blocked()  # the first is in flight, the other 99 wait for it
            release.set()
        # the first alone, then the 99 that came while it was in flight, together
        assert store.calls == [1, 99]
        for n, job_id in ids.items():
            record = await app.admin.job(job_id)
            assert record.meta == {"n": str(n)}  # each caller got its own job back


async def test_a_batch_holds_at_most_max_jobs(store: Counting) -> None:
    batcher = EnqueueBatcher(store, max_jobs=40)
    app = App("split", backend=store)
    item = app.handle("item", schema=Item)
    records = [item.record(Item(n)) for n in range(100)]
    store.gate = release = anyio.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for record in records:
                tg.start_soon(batcher.enqueue, [record])
            await all_blocked()
            release.set()
    assert store.calls == [1, 40, 40, 19]


async def test_one_callers_refused_job_fails_that_caller_alone(app: App, store: Counting) -> None:
    item = app.handle("item", schema=str)
    store.refuse = "bad"
    store.gate = release = anyio.Event()
    outcomes: dict[str, object] = {}

    async def one(text: str) -> None:
        try:
            outcomes[text] = (await item.enqueue(text)).id
        except ValueError as exc:
            outcomes[text] = exc

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for text in ("first", "a", "bad", "b"):
                tg.start_soon(one, text)
                await all_blocked()
            release.set()
    assert isinstance(outcomes["bad"], ValueError)
    for text in ("first", "a", "b"):
        assert isinstance(outcomes[text], str)
        assert (await app.admin.job(str(outcomes[text]))).payload == msgspec.msgpack.encode(text)
    # the shared call failed, so each of its callers was sent again alone
    assert store.calls == [1, 3, 1, 1, 1]


async def test_a_cancelled_waiting_caller_stores_nothing(app: App, store: Counting) -> None:
    item = app.handle("item", schema=str)
    store.gate = release = anyio.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(item.enqueue, "first")
            await all_blocked()
            async with anyio.create_task_group() as doomed:
                doomed.start_soon(item.enqueue, "cancelled")
                await all_blocked()  # waiting for the call in flight
                doomed.cancel_scope.cancel()
            tg.start_soon(item.enqueue, "after")
            await all_blocked()
            release.set()
        assert store.calls == [1, 1]
        payloads = [job.payload for job in await app.admin.jobs(queue="default")]
    assert msgspec.msgpack.encode("cancelled") not in payloads
    assert len(payloads) == 2


async def test_a_caller_cancelled_as_it_is_given_the_lead_passes_it_on(store: Counting) -> None:
    """A task cancelled after it was woken to lead, before it ran, hands the lead on.

    anyio delivers a cancel scope's cancellation at the next checkpoint, and
    the batch goes out shielded, so only a task cancelled by asyncio itself
    ends here.
    """
    batcher = EnqueueBatcher(store)
    item = App("lead", backend=store).handle("item", schema=str)
    store.gate = release = anyio.Event()
    doomed: list[asyncio.Task[Any]] = []
    outcome: list[str] = []

    async def first() -> None:
        await batcher.enqueue([item.record("first")])
        # The call in flight is over and has woken the next caller to lead the
        # next one; it has not run yet when it is cancelled here.
        doomed[0].cancel()

    async def cancelled() -> None:
        doomed.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await batcher.enqueue([item.record("doomed")])
        except asyncio.CancelledError:
            outcome.append("cancelled")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await all_blocked()
            tg.start_soon(cancelled)
            await all_blocked()
            tg.start_soon(batcher.enqueue, [item.record("next")])
            await all_blocked()
            release.set()
        payloads = [job.payload for job in await store.list_jobs(queue="default", limit=10)]
    assert outcome == ["cancelled"]
    assert sorted(payloads) == sorted(msgspec.msgpack.encode(t) for t in ("first", "next"))
    assert store.calls == [1, 1]
