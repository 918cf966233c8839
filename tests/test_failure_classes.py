"""Failure classes: ``fatal_on``, ``App.classify``, the order of the rules, ``run`` exiting 3."""

from __future__ import annotations

import logging

import anyio
import msgspec
import pytest

from _cli import WriteModule, invoke
from asyncq import App, ConfigurationError, ErrorKind, JobState, RetryPolicy
from asyncq.backends.base import Backend
from asyncq.testing import in_memory, run_until_idle

pytestmark = pytest.mark.anyio

#: long enough that a retried job is still ``failed`` when the test looks
LATER = RetryPolicy.fixed(60)


class Nothing(msgspec.Struct):
    n: int = 0


class DeviceLost(Exception):
    """The worker's machine is broken: no attempt here can succeed."""


async def test_fatal_on_stops_the_worker_gracefully_and_the_job_is_retried_later(
    backend: Backend,
) -> None:
    app = App("fatal", backend=backend)
    slow_started, release = anyio.Event(), anyio.Event()
    broken = [True]

    @app.job(schema=Nothing, name="slow")
    async def slow(payload: Nothing) -> str:
        slow_started.set()
        await release.wait()
        return "finished"

    @app.job(
        schema=Nothing,
        name="render",
        fatal_on=(DeviceLost,),
        retry=RetryPolicy.fixed(0.01),
        max_attempts=3,
    )
    async def render(payload: Nothing) -> str:
        if broken[0]:
            raise DeviceLost("gpu 0 is gone")
        return "rendered"

    worker = app.make_worker(concurrency=2, prefetch=0, poll_interval=0.05, heartbeat=0.05)
    stopped = anyio.Event()
    stop = worker.stop

    def stop_and_tell() -> None:
        stop()
        stopped.set()

    worker.stop = stop_and_tell  # type: ignore[method-assign]
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            long = await slow.enqueue(Nothing())
            await slow_started.wait()
            doomed = await render.enqueue(Nothing())
            await stopped.wait()
            # Graceful: the running job is not cancelled, it finishes.
            assert (await long.info()).state is JobState.ACTIVE
            later = await slow.enqueue(Nothing(1))
            release.set()
        assert await long.result(timeout=5) == "finished"

        assert worker.fatal is not None
        assert (worker.fatal.job_id, worker.fatal.job_name) == (doomed.id, "render")
        assert worker.fatal.queue == "default"
        assert "DeviceLost: gpu 0 is gone" in str(worker.fatal)
        info = await doomed.info()
        assert info.state is JobState.FAILED  # follows its retry policy
        assert info.attempts == 1
        assert info.errors[-1].kind is ErrorKind.FATAL
        assert info.errors[-1].type == "DeviceLost"
        # No new claims once stopped.
        assert (await later.info()).state is JobState.QUEUED

        broken[0] = False  # the supervisor restarted the worker on a healthy machine
        async with app.worker(poll_interval=0.05):
            assert await doomed.result(timeout=10) == "rendered"
            assert await later.result(timeout=10) == "finished"


async def test_a_fatal_failure_on_the_last_attempt_is_dead(backend: Backend) -> None:
    app = App("fatal-last", backend=backend)

    @app.job(schema=Nothing, name="render", fatal_on=(DeviceLost,), max_attempts=1)
    async def render(payload: Nothing) -> None:
        raise DeviceLost("gpu 0 is gone")

    handle = await render.enqueue(Nothing())
    worker = await run_until_idle(app)
    assert worker.fatal is not None
    info = await handle.info()
    assert info.state is JobState.DEAD
    assert info.errors[-1].kind is ErrorKind.FATAL


async def test_classify_by_type_and_by_predicate(backend: Backend) -> None:
    app = App("classify", backend=backend)
    app.classify(KeyError, "permanent")
    app.classify(lambda exc: "disk" in str(exc), "fatal")

    @app.job(schema=Nothing, name="lookup", max_attempts=3, retry=LATER)
    async def lookup(payload: Nothing) -> None:
        raise KeyError("sku-1")

    @app.job(schema=Nothing, name="write", max_attempts=3, retry=LATER)
    async def write(payload: Nothing) -> None:
        raise OSError("disk full")

    @app.job(schema=Nothing, name="fetch", max_attempts=3, retry=LATER)
    async def fetch(payload: Nothing) -> None:
        raise ConnectionError("reset by peer")

    missing = await lookup.enqueue(Nothing())
    flaky = await fetch.enqueue(Nothing())
    worker = await run_until_idle(app, concurrency=1)
    assert worker.fatal is None
    assert (await missing.info()).state is JobState.DEAD  # permanent: no retry left unused
    assert (await missing.info()).attempts == 1
    info = await flaky.info()
    assert (info.state, info.errors[-1].kind) == (JobState.FAILED, ErrorKind.ERROR)

    full = await write.enqueue(Nothing())
    worker = await run_until_idle(app, concurrency=1)
    assert worker.fatal is not None
    assert worker.fatal.job_name == "write"
    info = await full.info()
    assert (info.state, info.errors[-1].kind) == (JobState.FAILED, ErrorKind.FATAL)


@pytest.mark.parametrize(
    ("options", "rules", "expected"),
    [
        # the job's own rules come before the app's
        ({"retry_on": (KeyError,)}, [(KeyError, "permanent")], (JobState.FAILED, "error")),
        ({"dead_on": (KeyError,)}, [(KeyError, "transient")], (JobState.DEAD, "error")),
        ({"fatal_on": (KeyError,)}, [(KeyError, "permanent")], (JobState.FAILED, "fatal")),
        # dead_on before fatal_on
        (
            {"dead_on": (KeyError,), "fatal_on": (LookupError,)},
            [],
            (JobState.DEAD, "error"),
        ),
        # retry_on before fatal_on
        (
            {"retry_on": (KeyError,), "fatal_on": (LookupError,)},
            [],
            (JobState.FAILED, "error"),
        ),
        # the app's rules in the order registered: the first match decides
        ({}, [(LookupError, "fatal"), (KeyError, "permanent")], (JobState.FAILED, "fatal")),
        ({}, [(KeyError, "permanent"), (LookupError, "fatal")], (JobState.DEAD, "error")),
        # the app's rules decide what retry_on's default would not retry
        (
            {"retry_on": (ConnectionError,)},
            [(KeyError, "transient")],
            (JobState.FAILED, "error"),
        ),
        # the default: transient, or permanent when retry_on is given
        ({}, [(ValueError, "fatal")], (JobState.FAILED, "error")),
        ({"retry_on": (ConnectionError,)}, [], (JobState.DEAD, "error")),
    ],
)
async def test_the_order_of_the_rules(
    options: dict[str, object],
    rules: list[tuple[type[BaseException], str]],
    expected: tuple[JobState, str],
) -> None:
    app = App("order", telemetry=False)
    for match, failure_class in rules:
        app.classify(match, failure_class)  # type: ignore[arg-type]

    @app.job(schema=Nothing, name="lookup", max_attempts=3, retry=LATER, **options)  # type: ignore[arg-type]
    async def lookup(payload: Nothing) -> None:
        raise KeyError("sku-1")

    async with in_memory(app):
        handle = await lookup.enqueue(Nothing())
        await run_until_idle(app)
        info = await handle.info()
    assert (info.state, info.errors[-1].kind) == expected


async def test_retry_and_reject_come_before_every_rule() -> None:
    from asyncq import Reject, Retry

    app = App("signals", telemetry=False)
    app.classify(Exception, "fatal")

    @app.job(schema=Nothing, name="again", max_attempts=3, retry=LATER)
    async def again(payload: Nothing) -> None:
        raise Retry(delay=60)

    @app.job(schema=Nothing, name="refuse", max_attempts=3, fatal_on=(Exception,))
    async def refuse(payload: Nothing) -> None:
        raise Reject("bad order")

    async with in_memory(app):
        retried = await again.enqueue(Nothing())
        rejected = await refuse.enqueue(Nothing())
        worker = await run_until_idle(app)
        assert worker.fatal is None
        assert (await retried.info()).errors[-1].kind is ErrorKind.RETRY
        assert (await rejected.info()).state is JobState.DEAD


async def test_a_predicate_that_raises_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    app = App("broken-rule", telemetry=False)

    def broken(exc: BaseException) -> bool:
        raise RuntimeError("bug in the rule")

    app.classify(broken, "fatal")
    app.classify(KeyError, "permanent")

    @app.job(schema=Nothing, name="lookup", max_attempts=3, retry=LATER)
    async def lookup(payload: Nothing) -> None:
        raise KeyError("sku-1")

    async with in_memory(app):
        handle = await lookup.enqueue(Nothing())
        with caplog.at_level(logging.ERROR, logger="asyncq.worker"):
            worker = await run_until_idle(app)
        assert worker.fatal is None
        assert (await handle.info()).state is JobState.DEAD
    assert any("broken" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("match", "failure_class", "words"),
    [
        (KeyError, "deadly", "failure class must be one of"),
        ("KeyError", "fatal", "takes an exception class"),
        (int, "fatal", "takes an exception class"),
        ((KeyError, int), "fatal", "takes an exception class"),
        ((), "fatal", "takes an exception class"),
    ],
)
def test_classify_refuses_what_it_cannot_use(match: object, failure_class: str, words: str) -> None:
    app = App("refuses", telemetry=False)
    with pytest.raises(ConfigurationError, match=words):
        app.classify(match, failure_class)  # type: ignore[arg-type]
    assert app.classifiers == []


def test_fatal_on_must_hold_exception_classes() -> None:
    app = App("refuses", telemetry=False)
    with pytest.raises(ConfigurationError, match="fatal_on"):

        @app.job(schema=Nothing, fatal_on=("MemoryError",))  # type: ignore[arg-type]
        async def job(payload: Nothing) -> None: ...


# -- asyncq run -------------------------------------------------------------------------

APP_MODULE = """
    from contextlib import asynccontextmanager

    import msgspec

    from asyncq import App


    class DeviceLost(Exception):
        pass


    class Nothing(msgspec.Struct):
        n: int = 0


    @asynccontextmanager
    async def lifespan(app):
        await render.enqueue(Nothing())
        yield None


    app = App("cli-fatal", backend="memory://", lifespan=lifespan, telemetry=False)


    @app.job(schema=Nothing, name="render", queue="gpu", fatal_on=(DeviceLost,), max_attempts=5)
    async def render(payload: Nothing) -> None:
        raise DeviceLost("gpu 0 is gone")
"""


@pytest.fixture
def app_path(write_module: WriteModule) -> str:
    """``MODULE:APP`` of a fresh module in the test's directory."""
    return f"{write_module(APP_MODULE)}:app"


@pytest.mark.timeout(30)
def test_run_exits_3_after_a_fatal_failure(app_path: str) -> None:
    # --burst: without the fatal stop the worker would retry the job to its end and exit 0.
    result = invoke("run", app_path, "--burst")
    assert result.exit_code == 3, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "'render'" in line
    assert "queue 'gpu'" in line
    assert "DeviceLost: gpu 0 is gone" in line
    assert "Traceback" not in result.output
