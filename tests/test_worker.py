"""End-to-end behaviour of App + Worker, on every backend.

Each test builds a fresh App on the parametrized ``backend`` fixture, runs a
worker inside the test, and waits on results or events, never on sleeps.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import msgspec
import pytest

from asyncq import (
    App,
    JobCancelled,
    JobContext,
    JobFailed,
    JobState,
    Reject,
    Retry,
    RetryPolicy,
    ValidationError,
    current_job,
)
from asyncq.backends.base import Backend

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy.fixed(0.01)


class Charge(msgspec.Struct):
    order_id: str
    cents: int


class Receipt(msgspec.Struct):
    order_id: str
    charged: int


class Nothing(msgspec.Struct):
    n: int = 0


@pytest.fixture
def app(backend: Backend) -> App:
    return App("test", backend=backend)


def worker_options(**overrides: object) -> dict[str, object]:
    """Short intervals so cancellations and recoveries happen within a test's deadline."""
    options: dict[str, object] = {
        "concurrency": 10,
        "heartbeat": 0.05,
        "poll_interval": 0.2,
        "recover_interval": 0.1,
        "shutdown_timeout": 5.0,
    }
    options.update(overrides)
    return options


async def test_typed_round_trip(app: App) -> None:
    @app.job(schema=Charge, name="charge")
    async def charge(payload: Charge) -> Receipt:
        return Receipt(payload.order_id, payload.cents)

    with anyio.fail_after(10):
        async with app.worker(**worker_options()):
            receipt = await charge.enqueue_and_wait(Charge("o-1", 500), timeout=5)
    assert receipt == Receipt("o-1", 500)
    assert type(receipt) is Receipt


async def test_invalid_payload_is_rejected_and_nothing_stored(app: App) -> None:
    @app.job(schema=Charge, name="charge")
    async def charge(payload: Charge) -> None:
        raise AssertionError("must not run")

    with anyio.fail_after(10):
        with pytest.raises(ValidationError, match=r"charge.*\$\.cents"):
            await charge.enqueue({"order_id": "o-1", "cents": "five"})  # type: ignore[arg-type]
        backend = await app.backend_opened()
        stats = await backend.stats(["default"])
    assert sum(stats[0].counts.values()) == 0
    assert await backend.list_jobs() == []


async def test_retry_then_success_counts_attempts(app: App) -> None:
    seen: list[int] = []

    @app.job(schema=Nothing, name="flaky", max_attempts=3, retry=FAST_RETRY)
    async def flaky(payload: Nothing, ctx: JobContext) -> int:
        seen.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError(f"attempt {ctx.attempt} failed")
        return ctx.attempt

    with anyio.fail_after(10):
        async with app.worker(**worker_options()):
            handle = await flaky.enqueue(Nothing())
            assert await handle.result(timeout=5) == 3
        info = await handle.info()
    assert seen == [1, 2, 3]
    assert info.state is JobState.COMPLETED
    assert info.attempts == 3
    assert [e.type for e in info.errors] == ["ConnectionError", "ConnectionError"]


async def test_retry_signal_asks_for_another_attempt(app: App) -> None:
    @app.job(schema=Nothing, name="patient", max_attempts=2)
    async def patient(payload: Nothing, ctx: JobContext) -> str:
        if ctx.attempt == 1:
            raise Retry("rate limited", delay=0.05)
        return "ok"

    with anyio.fail_after(10):
        async with app.worker(**worker_options()):
            handle = await patient.enqueue(Nothing())
            assert await handle.result(timeout=5) == "ok"
        info = await handle.info()
    assert info.attempts == 2
    assert info.errors[0].kind == "retry"
    assert info.errors[0].message == "rate limited"
    # The job was due again no sooner than the delay the handler asked for.
    assert info.started_at is not None
    assert info.started_at - info.errors[0].at >= 0.04


async def test_dead_after_max_attempts_keeps_errors(app: App) -> None:
    @app.job(schema=Nothing, name="broken", max_attempts=2, retry=FAST_RETRY)
    async def broken(payload: Nothing) -> None:
        raise ValueError("width must be > 0")

    with anyio.fail_after(10):
        async with app.worker(**worker_options()):
            handle = await broken.enqueue(Nothing())
            with pytest.raises(JobFailed) as caught:
                await handle.result(timeout=5)
    job = caught.value.job
    assert job.state is JobState.DEAD
    assert job.attempts == 2
    assert len(job.errors) == 2
    last = job.errors[-1]
    assert last.type == "ValueError"
    assert last.message == "width must be > 0"
    assert last.traceback is not None
    assert "width must be > 0" in last.traceback
    assert "broken" in str(caught.value)
    assert "attempt 2/2" in str(caught.value)


async def test_reject_goes_dead_at_once(app: App) -> None:
    @app.job(schema=Nothing, name="rejecting", max_attempts=5)
    async def rejecting(payload: Nothing) -> None:
        raise Reject("order was refunded")

    with anyio.fail_after(10):
        async with app.worker(**worker_options()):
            handle = await rejecting.enqueue(Nothing())
            with pytest.raises(JobFailed, match="order was refunded"):
                await handle.result(timeout=5)
        info = await handle.info()
    assert info.state is JobState.DEAD
    assert info.attempts == 1


async def test_dead_on_and_retry_on_classify_exceptions(app: App) -> None:
    @app.job(schema=Nothing, name="strict", max_attempts=5, retry=FAST_RETRY, dead_on=(KeyError,))
    async def strict(payload: Nothing) -> None:
        raise KeyError("missing")

    @app.job(schema=Nothing, name="picky", max_attempts=5, retry=FAST_RETRY, retry_on=(OSError,))
    async def picky(payload: Nothing) -> None:
        raise TypeError("not an OSError")

    with anyio.fail_after(10):
        async with app.worker(**worker_options()):
            first = await strict.enqueue(Nothing())
            second = await picky.enqueue(Nothing())
            for handle in (first, second):
                with pytest.raises(JobFailed):
                    await handle.result(timeout=5)
                assert (await handle.info()).attempts == 1


async def test_timeout_cancels_the_handler(app: App) -> None:
    cancelled = anyio.Event()

    @app.job(schema=Nothing, name="slow", timeout=0.1, max_attempts=1)
    async def slow(payload: Nothing) -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    with anyio.fail_after(10):
        async with app.worker(**worker_options()):
            handle = await slow.enqueue(Nothing())
            with pytest.raises(JobFailed, match="timeout"):
                await handle.result(timeout=5)
    assert cancelled.is_set()
    info = await handle.info()
    assert info.errors[-1].kind == "timeout"


async def test_idempotency_key_runs_once_and_returns_stored_result(app: App) -> None:
    runs: list[str] = []

    @app.job(schema=Charge, name="charge")
    async def charge(payload: Charge) -> Receipt:
        runs.append(payload.order_id)
        return Receipt(payload.order_id, payload.cents)

    with anyio.fail_after(10):
        first = await charge.enqueue(Charge("o-1", 500), key="o-1")
        again = await charge.enqueue(Charge("o-1", 999), key="o-1")
        assert first.created
        assert not again.created
        assert again.id == first.id
        async with app.worker(**worker_options()):
            assert await first.result(timeout=5) == Receipt("o-1", 500)
            # The key's job completed: the stored result comes back, nothing runs again.
            assert await charge.enqueue_and_wait(Charge("o-1", 1), key="o-1", timeout=5) == Receipt(
                "o-1", 500
            )
    assert runs == ["o-1"]


async def test_delay_is_respected(app: App) -> None:
    started: list[float] = []

    @app.job(schema=Nothing, name="later")
    async def later(payload: Nothing) -> None:
        started.append(time.time())

    with anyio.fail_after(10):
        async with app.worker(**worker_options()):
            before = time.time()
            handle = await later.enqueue(Nothing(), delay=0.4)
            assert (await handle.info()).state is JobState.SCHEDULED
            await handle.result(timeout=5)
    assert started[0] - before >= 0.35


async def test_larger_priority_runs_first(app: App) -> None:
    order: list[int] = []
    all_ran = anyio.Event()

    @app.job(schema=Nothing, name="ranked")
    async def ranked(payload: Nothing) -> None:
        order.append(payload.n)
        if len(order) == 5:
            all_ran.set()

    with anyio.fail_after(10):
        for priority in (0, 5, -3, 10, 1):
            await ranked.enqueue(Nothing(priority), priority=priority)
        async with app.worker(**worker_options(concurrency=1)):
            await all_ran.wait()
    assert order == [10, 5, 1, 0, -3]


async def test_concurrency_is_bounded_and_used(app: App) -> None:
    running = 0
    peak = 0
    release = anyio.Event()
    full = anyio.Event()

    @app.job(schema=Nothing, name="hold")
    async def hold(payload: Nothing) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 4:
            full.set()
        await release.wait()
        running -= 1

    with anyio.fail_after(15):
        handles = await hold.enqueue_many([Nothing(i) for i in range(12)])
        async with app.worker(**worker_options(concurrency=4)):
            await full.wait()
            assert peak == 4
            release.set()
            for handle in handles:
                await handle.result(timeout=5)
    assert peak == 4


async def test_cancel_pending_never_runs(app: App) -> None:
    ran = False

    @app.job(schema=Nothing, name="doomed")
    async def doomed(payload: Nothing) -> None:
        nonlocal ran
        ran = True

    with anyio.fail_after(10):
        handle = await doomed.enqueue(Nothing(), delay=60)
        job = await handle.cancel()
        assert job.state is JobState.CANCELLED
        with pytest.raises(JobCancelled):
            await handle.result(timeout=1)
        async with app.worker(**worker_options(burst=True)) as worker:
            pass
    assert worker.processed == 0
    assert not ran


async def test_cancel_running_fires_its_cancel_scope(app: App) -> None:
    started = anyio.Event()
    saw_cancel = anyio.Event()

    @app.job(schema=Nothing, name="long")
    async def long(payload: Nothing) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            saw_cancel.set()
            raise

    with anyio.fail_after(10):
        async with app.worker(**worker_options()):
            handle = await long.enqueue(Nothing())
            await started.wait()
            requested = await handle.cancel()
            assert requested.cancel_requested
            with pytest.raises(JobCancelled):
                await handle.result(timeout=5)
    assert saw_cancel.is_set()
    assert (await handle.info()).state is JobState.CANCELLED


async def test_thousand_jobs_via_enqueue_many_all_complete(app: App) -> None:
    @app.job(schema=Nothing, name="double")
    async def double(payload: Nothing) -> int:
        return payload.n * 2

    with anyio.fail_after(60):
        handles = await double.enqueue_many([Nothing(i) for i in range(1000)])
        assert len({h.id for h in handles}) == 1000
        async with app.worker(**worker_options(concurrency=50)):
            results = [await h.result(timeout=30) for h in handles]
        stats = await (await app.backend_opened()).stats(["default"])
    assert results == [i * 2 for i in range(1000)]
    assert stats[0].counts[JobState.COMPLETED] == 1000


async def test_unknown_job_name_is_dead_lettered_with_the_reason(app: App) -> None:
    app.unknown_job_grace = 0  # no grace period for rolling deploys (tests/test_rolling_deploys.py)
    producer = App("producer", backend=app.backend)
    ghost = producer.handle("no.such.job", schema=Nothing)

    @app.job(schema=Nothing, name="known")
    async def known(payload: Nothing) -> None:
        pass

    with anyio.fail_after(10):
        handle = await ghost.enqueue(Nothing())
        async with app.worker(**worker_options()):
            with pytest.raises(JobFailed, match=r"no job named 'no\.such\.job'"):
                await handle.result(timeout=5)
        info = await handle.info()
    assert info.attempts == 1
    assert info.errors[-1].kind == "unknown_job"


async def test_undecodable_payload_is_dead_lettered_not_retried(app: App) -> None:
    producer = App("producer", backend=app.backend)
    old = producer.handle("evolving", schema=dict[str, str])

    @app.job(schema=Charge, name="evolving", max_attempts=5)
    async def evolving(payload: Charge) -> None:
        raise AssertionError("must not run")

    with anyio.fail_after(10):
        handle = await old.enqueue({"order_id": "o-1"})
        async with app.worker(**worker_options()):
            with pytest.raises(JobFailed, match="does not decode"):
                await handle.result(timeout=5)
        info = await handle.info()
    assert info.attempts == 1
    assert info.errors[-1].kind == "decode"


async def test_shutdown_hands_unfinished_jobs_back_at_once(app: App) -> None:
    started = anyio.Event()

    @app.job(schema=Nothing, name="endless")
    async def endless(payload: Nothing) -> None:
        started.set()
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        handle = await endless.enqueue(Nothing())
        async with app.worker(**worker_options(shutdown_timeout=0.1)):
            await started.wait()
        info = await handle.info()
    assert info.state is JobState.QUEUED
    assert info.attempts == 0


async def test_shutdown_lets_running_jobs_finish(app: App) -> None:
    started = anyio.Event()
    finish = anyio.Event()

    @app.job(schema=Nothing, name="polite")
    async def polite(payload: Nothing) -> str:
        started.set()
        await finish.wait()
        return "done"

    with anyio.fail_after(10):
        handle = await polite.enqueue(Nothing())
        async with app.worker(**worker_options(shutdown_timeout=5)) as worker:
            await started.wait()
            worker.stop()
            finish.set()
        info = await handle.info()
    assert info.state is JobState.COMPLETED


async def test_lapsed_lease_of_a_dead_worker_is_recovered(app: App) -> None:
    @app.job(schema=Nothing, name="orphan")
    async def orphan(payload: Nothing) -> str:
        return "recovered"

    with anyio.fail_after(10):
        handle = await orphan.enqueue(Nothing())
        backend = await app.backend_opened()
        # A worker that claims and then vanishes: no heartbeat, no settle.
        (lease,) = await backend.claim(["default"], 1, worker="ghost", lease_for=0.2)
        async with app.worker(**worker_options()):
            assert await handle.result(timeout=5) == "recovered"
        info = await handle.info()
    assert info.attempts == 2
    assert info.errors[0].kind == "lost"
    assert lease.job.id == handle.id


async def test_progress_context_lifespan_and_middleware(backend: Backend) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, str]]:
        events.append("open")
        yield {"db": "pool"}
        events.append("close")

    async def middleware(ctx: JobContext, call_next: object) -> object:
        events.append(f"before {ctx.name}")
        result = await call_next()  # type: ignore[operator]
        events.append(f"after {ctx.name}")
        return result

    app = App("ctx", backend=backend, lifespan=lifespan, middleware=[middleware])

    @app.job(schema=Nothing, name="report")
    async def report(payload: Nothing, ctx: JobContext) -> str:
        await ctx.progress(0.5)
        assert current_job() is ctx
        assert (await app.get_job(ctx.job_id).info()).progress == 0.5
        return str(ctx.state["db"])

    with anyio.fail_after(10):
        async with app.worker(**worker_options()):
            assert await report.enqueue_and_wait(Nothing(), timeout=5) == "pool"
    assert events == ["open", "before report", "after report", "close"]


async def test_get_job_from_a_stored_id(app: App) -> None:
    @app.job(schema=Charge, name="charge")
    async def charge(payload: Charge) -> Receipt:
        return Receipt(payload.order_id, payload.cents)

    with anyio.fail_after(10):
        async with app.worker(**worker_options()):
            handle = await charge.enqueue(Charge("o-9", 9))
            untyped = app.get_job(handle.id)
            assert await untyped.result(timeout=5) == {"order_id": "o-9", "charged": 9}
            assert (await untyped.info()).name == "charge"


async def test_a_result_that_cannot_be_stored_sends_the_job_dead(app: App) -> None:
    @app.job(schema=Nothing, name="leaky", max_attempts=3)
    async def leaky(payload: Nothing) -> object:
        return object()

    with anyio.fail_after(10):
        async with app.worker(**worker_options()):
            handle = await leaky.enqueue(Nothing())
            with pytest.raises(JobFailed, match="cannot be stored"):
                await handle.result(timeout=5)
        info = await handle.info()
    assert info.attempts == 1
