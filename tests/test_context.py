"""JobContext, current_job(), and calling a handler directly with or without a context."""

from __future__ import annotations

import logging
import math

import anyio
import anyio.lowlevel
import msgspec
import pytest

from asyncq import App, JobContext, JobRecord, current_job
from asyncq.backends.memory import MemoryBackend


class Nothing(msgspec.Struct):
    pass


class Order(msgspec.Struct):
    order_id: str
    cents: int


def record(**overrides: object) -> JobRecord:
    fields: dict[str, object] = {
        "id": "01jobid",
        "name": "shop.charge",
        "queue": "payments",
        "payload": b"\x80",
        "attempts": 2,
        "max_attempts": 3,
        "enqueued_at": 1_700_000_000.0,
        "headers": {"traceparent": "00-abc-def-01"},
    }
    fields.update(overrides)
    return msgspec.convert(fields, JobRecord)


# -- JobContext ---------------------------------------------------------------------


def test_context_exposes_the_job() -> None:
    ctx = JobContext(record(), state={"pool": "db"})
    assert (ctx.job_id, ctx.name, ctx.queue) == ("01jobid", "shop.charge", "payments")
    assert (ctx.attempt, ctx.max_attempts) == (2, 3)
    assert ctx.enqueued_at == 1_700_000_000.0
    assert ctx.headers == {"traceparent": "00-abc-def-01"}
    assert ctx.state == {"pool": "db"}
    assert not ctx.is_last_attempt
    assert JobContext(record(attempts=3)).is_last_attempt
    assert repr(ctx) == (
        "JobContext(job_id='01jobid', name='shop.charge', queue='payments', attempt=2/3)"
    )


def test_context_logger_tags_records_with_the_job(caplog: pytest.LogCaptureFixture) -> None:
    ctx = JobContext(record())
    with caplog.at_level(logging.INFO, logger="asyncq.job"):
        ctx.logger.info("charging")
    (entry,) = caplog.records
    assert entry.name == "asyncq.job"
    assert entry.getMessage() == "charging"
    assert entry.__dict__["job_id"] == "01jobid"
    assert entry.__dict__["job_name"] == "shop.charge"
    assert entry.__dict__["queue"] == "payments"
    assert entry.__dict__["attempt"] == 2


@pytest.mark.anyio
@pytest.mark.parametrize("value", [0.0, 0.25, 1.0, 1])
async def test_progress_reports_values_within_bounds(value: float) -> None:
    reported: list[float] = []

    async def report(v: float) -> bool:
        reported.append(v)
        return True

    with anyio.fail_after(5):
        await JobContext(record(), progress=report).progress(value)
    assert reported == [value]


@pytest.mark.anyio
@pytest.mark.parametrize("value", [-0.01, 1.0001, -math.inf, math.inf, math.nan, 50])
async def test_progress_outside_zero_to_one_is_a_value_error(value: float) -> None:
    reported: list[float] = []

    async def report(v: float) -> bool:
        reported.append(v)
        return True

    ctx = JobContext(record(), progress=report)
    with anyio.fail_after(5), pytest.raises(ValueError, match=r"between 0\.0 and 1\.0") as info:
        await ctx.progress(value)
    assert "shop.charge" in str(info.value)
    assert reported == []


@pytest.mark.anyio
async def test_progress_without_a_reporter_is_a_no_op() -> None:
    with anyio.fail_after(5):
        await JobContext(record()).progress(0.5)


# -- current_job() ------------------------------------------------------------------


def test_current_job_outside_a_job_raises_lookup_error() -> None:
    with pytest.raises(LookupError, match=r"outside a running job"):
        current_job()


@pytest.mark.anyio
async def test_current_job_is_the_running_jobs_own_context() -> None:
    app = App("ctx-test", backend=MemoryBackend())
    seen: dict[str, bool] = {}

    async def deep_in_the_stack() -> str:
        return current_job().job_id

    @app.job(schema=Order, name="charge")
    async def charge(payload: Order, ctx: JobContext) -> None:
        same = current_job() is ctx
        await anyio.lowlevel.checkpoint()  # let the other jobs interleave
        seen[payload.order_id] = same and await deep_in_the_stack() == ctx.job_id

    with anyio.fail_after(10):
        async with app:
            await charge.enqueue_many([Order(f"o-{i}", i) for i in range(3)])
            worker = app.make_worker(concurrency=3, burst=True, poll_interval=0.05)
            await worker.run()
    assert seen == {"o-0": True, "o-1": True, "o-2": True}
    with pytest.raises(LookupError):
        current_job()


# -- Handler.__call__ ---------------------------------------------------------------


@pytest.mark.anyio
async def test_direct_call_without_context() -> None:
    app = App("direct")

    @app.job(schema=Order, name="total")
    async def total(payload: Order) -> int:
        return payload.cents * 2

    with anyio.fail_after(5):
        assert await total(Order("o-1", 21)) == 42
        # A context passed to a handler that does not take one is not forwarded.
        assert await total(Order("o-1", 21), JobContext(record())) == 42


@pytest.mark.anyio
async def test_direct_call_makes_a_first_attempt_context_when_none_is_given() -> None:
    app = App("direct")
    contexts: list[JobContext] = []

    @app.job(schema=Order, name="charge", queue="payments", max_attempts=4)
    async def charge(payload: Order, ctx: JobContext) -> str:
        contexts.append(ctx)
        return f"{payload.order_id}@{ctx.attempt}"

    with anyio.fail_after(5):
        assert await charge(Order("o-1", 1)) == "o-1@1"
    (ctx,) = contexts
    assert (ctx.name, ctx.queue, ctx.attempt, ctx.max_attempts) == ("charge", "payments", 1, 4)
    assert len(ctx.job_id) == 32
    assert ctx.state is None
    assert ctx.headers == {}


@pytest.mark.anyio
async def test_direct_call_passes_the_given_context_through() -> None:
    app = App("direct")
    given = JobContext(record(attempts=3), state="resources")

    @app.job(schema=Order, name="charge")
    async def charge(payload: Order, ctx: JobContext) -> object:
        return ctx

    with anyio.fail_after(5):
        assert await charge(Order("o-1", 1), given) is given


@pytest.mark.anyio
async def test_direct_call_does_not_validate_or_encode() -> None:
    # A direct call is a plain function call: what the test passes is what the function gets.
    app = App("direct")

    @app.job(schema=Order, name="echo")
    async def echo(payload: Order) -> Order:
        return payload

    odd = Order("o-1", "not cents")  # type: ignore[arg-type]
    with anyio.fail_after(5):
        assert await echo(odd) is odd


@pytest.mark.anyio
async def test_current_job_in_a_direct_call_is_the_handlers_context() -> None:
    app = App("direct")

    @app.job(schema=Nothing, name="nested")
    async def nested(payload: Nothing, ctx: JobContext) -> bool:
        return current_job() is ctx

    with anyio.fail_after(5):
        assert await nested(Nothing())
