"""``asyncq run`` as a real process: signals, graceful shutdown, hand-back.

The worker process and this test share a SQLite file. The handler writes a
marker file when it starts, which is the only thing another process can wait
on; the test then signals the worker and checks the job's final state.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import msgspec
import pytest
from anyio.abc import Process

from _services import store_url
from asyncq import App, Handler, JobHandle, JobState

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
__all__ = ["store_url"]  # the fixture from ``_services``, where pytest looks for it

APP_SOURCE = textwrap.dedent(
    """
    import os
    import time
    from pathlib import Path

    import anyio
    import msgspec

    from asyncq import App

    app = App("sigtest")
    MARKERS = Path(os.environ["MARKERS"])


    class Work(msgspec.Struct):
        tag: str
        seconds: float


    @app.job(schema=Work, name="work", max_attempts=1)
    async def work(payload: Work) -> str:
        (MARKERS / f"{payload.tag}.started").touch()
        await anyio.sleep(payload.seconds)
        return f"finished {payload.tag}"


    @app.job(schema=Work, name="work_sync", max_attempts=1)
    def work_sync(payload: Work) -> str:
        (MARKERS / f"{payload.tag}.started").touch()
        time.sleep(payload.seconds)
        return f"finished {payload.tag}"


    @app.job(schema=Work, name="work_process", max_attempts=1, process=True)
    def work_process(payload: Work) -> str:
        (MARKERS / f"{payload.tag}.started").touch()
        time.sleep(payload.seconds)
        return f"finished {payload.tag}"
    """
)


class Work(msgspec.Struct):
    tag: str
    seconds: float


@pytest.fixture
def worker_env(tmp_path: Path, store_url: str) -> dict[str, str]:
    (tmp_path / "sigapp.py").write_text(APP_SOURCE)
    markers = tmp_path / "markers"
    markers.mkdir()
    env = dict(os.environ)
    env["MARKERS"] = str(markers)
    env["ASYNCQ_BACKEND"] = store_url
    return env


@pytest.fixture
async def spawn(tmp_path: Path, worker_env: dict[str, str]) -> AsyncIterator[Spawn]:
    procs: list[Process] = []

    async def start(*extra: str) -> Process:
        args = [sys.executable, "-m", "asyncq", "run", "sigapp:app", "--lease", "5", *extra]
        log = tmp_path / f"worker{len(procs)}.log"
        with log.open("wb") as stderr:
            proc = await anyio.open_process(args, cwd=tmp_path, env=worker_env, stderr=stderr)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.aclose()


Spawn = Callable[..., Awaitable[Process]]


async def wait_for_file(path: Path, proc: Process) -> None:
    """Another process's progress can only be seen in the file system: look until it shows."""
    while not await anyio.Path(path).exists():
        if proc.returncode is not None:
            pytest.fail(f"worker exited early with {proc.returncode}")
        await anyio.sleep(0.02)


@pytest.fixture
async def work(worker_env: dict[str, str]) -> AsyncIterator[Handler[Work, str]]:
    """The producer's handle on the workers' job, on the shared store."""
    producer = App("producer", backend=worker_env["ASYNCQ_BACKEND"])
    async with producer:
        yield producer.handle("work", schema=Work, result=str)


async def start_job(
    work: Handler[Work, str],
    spawn: Spawn,
    markers: str,
    payload: Work,
    *worker_args: str,
    max_attempts: int | None = None,
) -> tuple[JobHandle[str], Process]:
    """Enqueue ``payload``, start a worker, and return once the handler has started."""
    handle = await work.enqueue(payload, max_attempts=max_attempts)
    proc = await spawn(*worker_args)
    await wait_for_file(Path(markers) / f"{payload.tag}.started", proc)
    return handle, proc


async def test_sigterm_finishes_the_running_job_then_exits_zero(
    tmp_path: Path, worker_env: dict[str, str], spawn: Spawn, work: Handler[Work, str]
) -> None:
    with anyio.fail_after(30):
        handle, proc = await start_job(work, spawn, worker_env["MARKERS"], Work("a", 1.0))
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
        info = await handle.info()
    assert info.state is JobState.COMPLETED
    assert info.attempts == 1
    assert "SIGTERM" in (tmp_path / "worker0.log").read_text()


async def test_second_signal_stops_now_and_hands_the_job_back(
    worker_env: dict[str, str], spawn: Spawn, work: Handler[Work, str]
) -> None:
    with anyio.fail_after(30):
        handle, proc = await start_job(work, spawn, worker_env["MARKERS"], Work("b", 600.0))
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)
        assert await proc.wait() == 0
        info = await handle.info()
    assert info.state is JobState.QUEUED
    assert info.attempts == 0


async def test_shutdown_timeout_hands_back_a_job_that_would_not_finish(
    worker_env: dict[str, str], spawn: Spawn, work: Handler[Work, str]
) -> None:
    with anyio.fail_after(30):
        handle, proc = await start_job(
            work, spawn, worker_env["MARKERS"], Work("c", 600.0), "--shutdown-timeout", "0.2"
        )
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0
        info = await handle.info()
    assert info.state is JobState.QUEUED


async def test_sigkilled_worker_job_is_recovered_by_another_worker(
    worker_env: dict[str, str], spawn: Spawn, work: Handler[Work, str]
) -> None:
    with anyio.fail_after(60):
        handle, first = await start_job(
            work, spawn, worker_env["MARKERS"], Work("d", 0.5), "--lease", "1", max_attempts=2
        )
        first.kill()
        assert await first.wait() == -signal.SIGKILL
        await spawn("--lease", "1")
        assert await handle.result(timeout=30) == "finished d"
        info = await handle.info()
    assert info.attempts == 2
    assert info.errors[0].kind == "lost"


async def test_sigterm_lets_thread_and_process_handlers_finish_and_hands_back_the_rest(
    worker_env: dict[str, str], spawn: Spawn
) -> None:
    """Sync and process handlers get the shutdown timeout; the rest go back, and it exits."""
    markers = Path(worker_env["MARKERS"])
    producer = App("producer", backend=worker_env["ASYNCQ_BACKEND"])
    with anyio.fail_after(40):
        async with producer:
            in_thread = producer.handle("work_sync", schema=Work, result=str)
            in_child = producer.handle("work_process", schema=Work, result=str)
            handles = {
                "thread-short": await in_thread.enqueue(Work("thread-short", 1.5)),
                "child-short": await in_child.enqueue(Work("child-short", 1.5)),
                "thread-long": await in_thread.enqueue(Work("thread-long", 600.0)),
                "child-long": await in_child.enqueue(Work("child-long", 600.0)),
            }
            proc = await spawn(
                "--shutdown-timeout", "4", "--threads", "2", "--handler-processes", "2"
            )
            for tag in handles:
                await wait_for_file(markers / f"{tag}.started", proc)
            proc.send_signal(signal.SIGTERM)
            # An abandoned thread cannot be stopped: the command exits without waiting for it.
            assert await proc.wait() == 0
            states = {tag: (await h.info()).state for tag, h in handles.items()}
    assert states == {
        "thread-short": JobState.COMPLETED,
        "child-short": JobState.COMPLETED,
        "thread-long": JobState.QUEUED,
        "child-long": JobState.QUEUED,
    }
