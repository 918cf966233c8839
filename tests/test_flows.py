"""Dependencies and flows through the public API, with a worker, on every backend:
``enqueue(after=...)``, ``ctx.parent_results()``, ``app.flow()``."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from asyncq import (
    App,
    ConfigurationError,
    ErrorKind,
    JobContext,
    JobFailed,
    JobState,
    UnknownParent,
)
from asyncq.backends.base import Backend

pytestmark = pytest.mark.anyio

BOUND = 30.0


class Part(msgspec.Struct):
    n: int


class Sum(msgspec.Struct):
    total: int


@pytest.fixture
def app(backend: Backend) -> App:
    return App("flows-test", backend=backend)


def jobs(app: App):  # type: ignore[no-untyped-def]
    @app.job(schema=Part, name="square")
    async def square(payload: Part) -> Part:
        if payload.n < 0:
            raise ValueError("negative")
        return Part(payload.n * payload.n)

    @app.job(schema=Sum, name="total")
    async def total(payload: Sum, ctx: JobContext) -> Sum:
        results = await ctx.parent_results()
        return Sum(payload.total + sum(part.n for part in results.values()))

    return square, total


async def test_after_runs_the_child_with_its_parents_results(app: App) -> None:
    square, total = jobs(app)
    with anyio.fail_after(BOUND):
        parts = [await square.enqueue(Part(n)) for n in (1, 2, 3)]
        done = await total.enqueue(Sum(100), after=parts)
        assert (await done.info()).state is JobState.WAITING
        assert (await done.info()).parents == tuple(p.id for p in parts)
        async with app.worker(concurrency=4):
            result = await done.result(timeout=BOUND)
        assert result == Sum(100 + 1 + 4 + 9)
        assert (await parts[0].info()).children == (done.id,)


async def test_parent_result_is_typed_by_the_handle(app: App) -> None:
    square, _ = jobs(app)
    seen: list[Part] = []

    @app.job(schema=Sum, name="one")
    async def one(payload: Sum, ctx: JobContext) -> int:
        got = await ctx.parent_result(first)
        seen.append(got)
        return got.n

    with anyio.fail_after(BOUND):
        first = await square.enqueue(Part(7))
        child = await one.enqueue(Sum(0), after=[first.id])
        async with app.worker(concurrency=2):
            assert await child.result(timeout=BOUND) == 49
        assert seen == [Part(49)]


async def test_a_dead_parent_fails_the_child_and_run_runs_it(app: App) -> None:
    square, total = jobs(app)
    with anyio.fail_after(BOUND):
        bad = await square.enqueue(Part(-1))
        good = await square.enqueue(Part(2))
        dead = await total.enqueue(Sum(0), after=[bad, good])
        runs = await total.enqueue(Sum(0), after=[bad, good], after_failure="run")
        async with app.worker(concurrency=4):
            with pytest.raises(JobFailed) as caught:
                await dead.result(timeout=BOUND)
            assert await runs.result(timeout=BOUND) == Sum(4)
        error = caught.value.job.last_error
        assert error is not None
        assert error.kind is ErrorKind.DEPENDENCY
        assert bad.id in error.message


async def test_flow_fan_out_fan_in(app: App) -> None:
    square, total = jobs(app)
    with anyio.fail_after(BOUND):
        flow = app.flow()
        parts = [flow.add(square, Part(n)) for n in range(10)]
        fan_in = flow.add(total, Sum(0), after=parts)
        handles = await flow.enqueue()
        assert [h.id for h in handles] == [*(p.id for p in parts), fan_in.id]
        assert all(h.created for h in handles)
        async with app.worker(concurrency=5):
            assert await fan_in.handle.result(timeout=BOUND) == Sum(sum(n * n for n in range(10)))


async def test_flow_with_an_unknown_parent_stores_nothing(app: App) -> None:
    square, total = jobs(app)
    with anyio.fail_after(BOUND):
        flow = app.flow()
        a = flow.add(square, Part(1))
        b = flow.add(total, Sum(0), after=[a, "not-a-job"])
        with pytest.raises(UnknownParent, match="not-a-job"):
            await flow.enqueue()
        for node in (a, b):
            assert await app.admin.jobs(queue="default") == []
            assert await (await app.backend_opened()).get(node.id) is None


async def test_flow_refuses_cycles_and_foreign_nodes_before_storing(app: App) -> None:
    square, total = jobs(app)
    other = app.flow()
    foreign = other.add(square, Part(1))
    flow = app.flow()
    with pytest.raises(ConfigurationError, match="another flow"):
        flow.add(total, Sum(0), after=[foreign])
    flow.add(square, Part(1), id="a", after=["b"])
    flow.add(square, Part(2), id="b", after=["a"])
    with pytest.raises(ConfigurationError, match="cycle"):
        await flow.enqueue()
    with anyio.fail_after(BOUND):
        assert await (await app.backend_opened()).get("a") is None


async def test_after_options_are_checked(app: App) -> None:
    square, _ = jobs(app)
    with pytest.raises(ConfigurationError, match="after_failure"):
        await square.enqueue(Part(1), after=["x"], after_failure="maybe")  # type: ignore[typeddict-item]
    with pytest.raises(ConfigurationError, match="list"):
        await square.enqueue(Part(1), after="x")  # type: ignore[typeddict-item]
    with pytest.raises(ConfigurationError, match="itself"):
        await square.enqueue(Part(1), id="me", after=["me"])


async def test_enqueue_many_items_take_after(app: App) -> None:
    square, total = jobs(app)
    with anyio.fail_after(BOUND):
        first = await square.enqueue(Part(3))
        (child, plain) = await total.enqueue_many([(Sum(1), {"after": [first]}), Sum(2)])
        assert (await child.info()).state is JobState.WAITING
        assert (await plain.info()).state is JobState.QUEUED
        async with app.worker(concurrency=2):
            assert await child.result(timeout=BOUND) == Sum(10)


async def test_cancelling_a_parent_cancels_its_waiting_children(app: App) -> None:
    square, total = jobs(app)
    with anyio.fail_after(BOUND):
        parent = await square.enqueue(Part(1), delay=3600)
        child = await total.enqueue(Sum(0), after=[parent])
        await parent.cancel()
        info = await child.info()
        assert info.state is JobState.CANCELLED
        assert info.last_error is not None
        assert info.last_error.kind is ErrorKind.DEPENDENCY
        stats = await app.admin.status()
        assert stats.queues[0].counts[JobState.WAITING] == 0


async def test_admin_enqueue_takes_after(app: App) -> None:
    square, _ = jobs(app)
    with anyio.fail_after(BOUND):
        parent = await square.enqueue(Part(2))
        child = await app.admin.enqueue("square", {"n": 3}, after=[parent.id])
        assert (await child.info()).parents == (parent.id,)
        assert (await child.info()).state is JobState.WAITING
