"""``asyncq run --processes N``: a supervisor that runs N worker processes and keeps them running.

The workers and this test share a SQLite file; what a worker process does is
seen through the store (job states, results) and through files its handlers
write, the only thing another process can wait on.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import click
import pytest
from anyio.abc import Process

from _cli import WriteModule, invoke
from asyncq import App
from asyncq.cli._run import run
from asyncq.cli._supervise import child_arguments

APP_SOURCE = textwrap.dedent(
    """
    import os
    from pathlib import Path

    import anyio

    from asyncq import App

    app = App("supervised")
    MARKERS = Path(os.environ["MARKERS"])


    @app.job(schema=str, name="meet", max_attempts=1)
    async def meet(tag: str) -> int:
        # Runs until a job of another worker process has started too: two of
        # these complete only when two processes run at once.
        (MARKERS / f"meet.{os.getpid()}").touch()
        while len({p.name for p in MARKERS.glob("meet.*")}) < 2:
            await anyio.sleep(0.02)
        return os.getpid()


    @app.job(schema=str, name="crash_once", max_attempts=2)
    async def crash_once(tag: str) -> int:
        marker = MARKERS / "crashed"
        if not marker.exists():
            marker.touch()
            os._exit(17)  # the worker process dies with the job
        return os.getpid()


    @app.job(schema=str, name="broken", max_attempts=3, fatal_on=(MemoryError,))
    async def broken(tag: str) -> None:
        raise MemoryError("the worker itself is broken")


    @app.job(schema=str, name="pid", max_attempts=1)
    async def pid(tag: str) -> int:
        (MARKERS / f"running.{os.getpid()}").touch()
        return os.getpid()
    """
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

Spawn = Callable[..., Awaitable[Process]]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "supervised.py").write_text(APP_SOURCE)
    (tmp_path / "markers").mkdir()
    environment = dict(os.environ)
    environment["MARKERS"] = str(tmp_path / "markers")
    environment["ASYNCQ_BACKEND"] = f"sqlite:///{tmp_path / 'jobs.db'}"
    return environment


@pytest.fixture
async def producer(env: dict[str, str]) -> AsyncIterator[App]:
    app = App("producer", backend=env["ASYNCQ_BACKEND"])
    async with app:
        yield app


@pytest.fixture
async def spawn(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[Spawn]:
    """Start ``asyncq run supervised:app --processes N ...``; its stderr goes to supervisor.log."""
    started: list[Process] = []

    async def start(*extra: str) -> Process:
        args = [sys.executable, "-m", "asyncq", "run", "supervised:app", *extra]
        with (tmp_path / "supervisor.log").open("wb") as stderr:
            proc = await anyio.open_process(args, cwd=tmp_path, env=env, stderr=stderr)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await proc.aclose()


def log_of(tmp_path: Path) -> str:
    return (tmp_path / "supervisor.log").read_text()


async def wait_for_log(tmp_path: Path, proc: Process, text: str) -> None:
    """Another process's progress shows in its log: look until ``text`` is there."""
    while text not in log_of(tmp_path):
        if proc.returncode is not None:
            pytest.fail(f"the supervisor exited early with {proc.returncode}:\n{log_of(tmp_path)}")
        await anyio.sleep(0.02)


def test_worker_command_repeats_the_options_but_processes() -> None:
    context = run.make_context(
        "run",
        ["mod:app", "-c", "5", "--burst", "--processes", "3", "-q", "a,b", "--lease", "2.5"],
    )
    arguments = child_arguments(run, context.params, skip=frozenset({"processes"}))
    assert arguments[0] == "mod:app"
    assert "--processes" not in arguments
    pairs = dict(itertools.pairwise(arguments))
    assert pairs["--concurrency"] == "5"
    assert pairs["--queues"] == "a,b"
    assert pairs["--lease"] == "2.5"
    assert "--burst" in arguments
    assert "--metrics" not in arguments  # an unset flag is left out


def test_processes_take_a_count_or_auto() -> None:
    auto = run.make_context("run", ["mod:app", "--processes", "auto"])
    assert auto.params["processes"] == (os.cpu_count() or 1)
    assert run.make_context("run", ["mod:app", "--processes", "3"]).params["processes"] == 3
    assert run.make_context("run", ["mod:app"]).params["processes"] == 1
    for bad in ("0", "many"):
        with pytest.raises(click.BadParameter, match="auto"):
            run.make_context("run", ["mod:app", "--processes", bad])


def test_processes_refuse_the_memory_store(write_module: WriteModule) -> None:
    name = write_module(
        """
        from asyncq import App

        app = App("mem", backend="memory://")


        @app.job(schema=int, name="noop")
        async def noop(n: int) -> None: ...
        """
    )
    result = invoke("run", f"{name}:app", "--processes", "2")
    assert result.exit_code == 2
    assert "memory store" in result.stderr
    assert "sqlite:///" in result.stderr  # says what to use instead


def test_processes_refuse_a_health_port(write_module: WriteModule) -> None:
    name = write_module(
        """
        from asyncq import App

        app = App("probed", backend="sqlite:///probed.db")


        @app.job(schema=int, name="noop")
        async def noop(n: int) -> None: ...
        """
    )
    result = invoke("run", f"{name}:app", "--processes", "2", "--health-port", "0")
    assert result.exit_code == 2
    assert "one worker process per container" in result.stderr


async def test_two_processes_run_jobs_at_once(tmp_path: Path, spawn: Spawn, producer: App) -> None:
    meet = producer.handle("meet", schema=str, result=int)
    with anyio.fail_after(60):
        first, second = await meet.enqueue("a"), await meet.enqueue("b")
        # One slot each and no prefetch: the second job can only run in the other process.
        proc = await spawn("--processes", "2", "-c", "1", "--prefetch", "0", "--burst")
        assert await proc.wait() == 0, log_of(tmp_path)
        pids = {await first.result(), await second.result()}
    assert len(pids) == 2
    assert proc.pid not in pids
    assert "worker 0 started" in log_of(tmp_path)
    assert "worker 1 started" in log_of(tmp_path)


async def test_a_crashing_worker_is_restarted_by_the_supervisor(
    tmp_path: Path, spawn: Spawn, producer: App
) -> None:
    crash_once = producer.handle("crash_once", schema=str, result=int)
    with anyio.fail_after(60):
        handle = await crash_once.enqueue("y")
        proc = await spawn("--processes", "2", "-c", "1", "--lease", "1")
        await wait_for_log(tmp_path, proc, "exited with code 17; starting it again")
        assert await handle.result(timeout=30) > 0
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0, log_of(tmp_path)
    assert log_of(tmp_path).count("started (pid") >= 3  # two workers, then one again


async def test_sigterm_stops_every_worker_gracefully(
    tmp_path: Path, spawn: Spawn, producer: App
) -> None:
    pid = producer.handle("pid", schema=str, result=int)
    markers = tmp_path / "markers"
    with anyio.fail_after(60):
        proc = await spawn("--processes", "2", "-c", "1")
        await wait_for_log(tmp_path, proc, "worker 1 started")
        handle = await pid.enqueue("z")
        worker_pid = await handle.result(timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0, log_of(tmp_path)
    assert (markers / f"running.{worker_pid}").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)  # the worker is gone with its supervisor
    assert "SIGTERM: stopping 2 worker(s) gracefully" in log_of(tmp_path)


async def test_a_fatal_failure_stops_every_worker_and_exits_3(
    tmp_path: Path, spawn: Spawn, producer: App
) -> None:
    broken = producer.handle("broken", schema=str)
    with anyio.fail_after(60):
        handle = await broken.enqueue("boom")
        proc = await spawn("--processes", "2")
        assert await proc.wait() == 3, log_of(tmp_path)
        info = await handle.info()
    assert info.errors[0].kind == "fatal"
    assert "stopping the others (exit 3)" in log_of(tmp_path)
