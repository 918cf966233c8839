"""What the chaos tests share: the workers' app, a fleet of ``asyncq run`` processes, the figures.

The workers run ``chaosapp:app`` (written to the test's directory) as real
``python -m asyncq run`` processes on a store the test shares with them. Each
run of the job appends the job's id to an execution log: one file opened with
``O_APPEND`` by every worker, one ``write`` per run, after the job's work and
before it returns. A process killed by ``SIGKILL`` loses nothing it wrote (the
kernel holds it), so the log counts every run whose effect happened.

From the store's counts and the log the tests take their figures:

- ``lost``: jobs that never completed;
- ``duplicates``: runs beyond the first, summed over jobs;
- ``stuck``: jobs left scheduled, queued, active or failed after recovery.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio
import msgspec
import pytest
from anyio.abc import Process

from asyncq import App, BackendUnavailable, Handler, JobRecord, JobState
from asyncq.backends.base import Backend

__all__ = [
    "APP_SOURCE",
    "CONCURRENCY",
    "IN_FLIGHT",
    "JOB",
    "LEASE",
    "PREFETCH",
    "STARTUP",
    "WORKERS",
    "WORKER_ARGS",
    "Figures",
    "Fleet",
    "Task",
    "check_recovered",
    "count_runs",
    "drain",
    "every_job",
    "figures_of",
    "producer",
    "record",
]

#: The job's name, shared by the workers' app and the producers' handles.
JOB = "chaos.work"

#: The fleet: three workers, each running a few jobs and claiming one ahead,
#: on a short lease so that a dead worker's jobs are recovered within seconds.
WORKERS = 3
CONCURRENCY = 4
PREFETCH = 1
LEASE = 2.0
#: Seconds a new worker process may take to start (Python, asyncq, the store).
STARTUP = 30.0
#: Everything one worker can hold: its running jobs and the one claimed ahead.
IN_FLIGHT = CONCURRENCY + PREFETCH
#: ``asyncq run`` options of every worker: running jobs are handed back at once on SIGTERM.
WORKER_ARGS = (
    "--concurrency", str(CONCURRENCY),
    "--prefetch", str(PREFETCH),
    "--lease", str(LEASE),
    "--shutdown-timeout", "0",
)  # fmt: skip

APP_SOURCE = textwrap.dedent(
    f"""
    import os

    import anyio
    import msgspec

    from asyncq import App, JobContext

    app = App("chaos")
    LOG = os.open(os.environ["CHAOS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


    class Task(msgspec.Struct):
        n: int
        seconds: float = 0.0


    # Many attempts: a job may be in flight at several kills in a row.
    @app.job(schema=Task, name={JOB!r}, max_attempts=1000)
    async def work(task: Task, ctx: JobContext) -> int:
        await anyio.sleep(task.seconds)
        os.write(LOG, (ctx.job_id + "\\n").encode())
        return task.n
    """
)


class Task(msgspec.Struct):
    n: int
    seconds: float = 0.0


def producer(url: str | Backend, name: str = "chaos-producer") -> tuple[App, Handler[Task, int]]:
    """An app of the test's own on the shared store, and its handle on the workers' job."""
    app = App(name, backend=url)
    return app, app.handle(JOB, schema=Task, result=int)


class Fleet:
    """``asyncq run chaosapp:app`` processes on one store, signalled and restarted at will.

    Args:
        directory: where the app module, the execution log and each worker's
            stderr live.
        url: the store's URL (``ASYNCQ_BACKEND``).
        args: extra ``asyncq run`` options (``--lease``, ``--concurrency``, ...).
    """

    def __init__(self, directory: Path, url: str, args: Sequence[str]) -> None:
        self.directory = directory
        self.log = directory / "executions.log"
        (directory / "chaosapp.py").write_text(APP_SOURCE)
        self.env = dict(os.environ, CHAOS_LOG=str(self.log), ASYNCQ_BACKEND=url)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(directory), os.environ.get("PYTHONPATH", "")) if p
        )
        # At info a worker logs that it started (and, quietly, little else).
        self.argv = [sys.executable, "-m", "asyncq", "run", "chaosapp:app", *args]
        self.argv += ["--log-level", "info"]
        self._stderr: dict[int, Path] = {}
        self.procs: list[Process] = []
        self.started = 0
        self.exits: list[int] = []

    async def start(self, count: int) -> None:
        """Start ``count`` workers."""
        for _ in range(count):
            self.procs.append(await self._spawn())

    async def _spawn(self) -> Process:
        stderr = self.directory / f"worker{self.started}.log"
        self.started += 1
        with stderr.open("wb") as out:
            proc = await anyio.open_process(
                self.argv, cwd=self.directory, env=self.env, stdout=subprocess.DEVNULL, stderr=out
            )
        self._stderr[proc.pid] = stderr
        return proc

    async def ready(self, index: int) -> None:
        """Return once worker ``index`` runs: it logs that it started once it handles signals.

        Another process's progress shows only in the file system: look until it
        does, for ``STARTUP`` seconds at most.
        """
        proc = self.procs[index]
        stderr = anyio.Path(self._stderr[proc.pid])
        with anyio.fail_after(STARTUP):
            while " started: " not in await stderr.read_text(errors="replace"):
                if proc.returncode is not None:
                    msg = f"worker {stderr.name} exited with {proc.returncode} before it started"
                    raise AssertionError(msg)
                await anyio.sleep(0.05)

    async def replace(self, index: int, sig: signal.Signals) -> int:
        """Once worker ``index`` runs, send it ``sig``, wait for its exit, start another.

        Returns the signalled worker's exit code.
        """
        await self.ready(index)
        proc = self.procs[index]
        proc.send_signal(sig)
        code = await proc.wait()
        await proc.aclose()
        self.exits.append(code)
        self.procs[index] = await self._spawn()
        return code

    async def storm(
        self, sig: signal.Signals, every: tuple[float, float], until: anyio.Event, limit: float
    ) -> int:
        """Replace a random worker after each random pause in ``every``, until ``until``.

        Stops after ``limit`` seconds at the latest; returns how many signals it sent.
        """
        sent = 0
        with anyio.move_on_after(limit):
            while not until.is_set():
                # The pause is the storm's schedule, not a wait for anything.
                with anyio.move_on_after(random.uniform(*every)):
                    await until.wait()
                if until.is_set():
                    break
                await self.replace(random.randrange(len(self.procs)), sig)
                sent += 1
        return sent

    def crashed(self) -> list[str]:
        """The workers' stderr files holding a traceback."""
        return [
            path.name
            for path in sorted(self.directory.glob("worker*.log"))
            if "Traceback" in path.read_text(errors="replace")
        ]

    async def stop(self) -> None:
        """SIGTERM every worker still running, then SIGKILL the ones that do not exit."""
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            with anyio.move_on_after(15):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
            await proc.aclose()


def count_runs(log: Path) -> Counter[str]:
    """Runs per job id, from the execution log."""
    if not log.exists():
        return Counter()
    return Counter(line for line in log.read_text().splitlines() if line)


async def drain(backend: Backend, jobs: int, done: anyio.Event, limit: float) -> None:
    """Set ``done`` once ``jobs`` jobs are completed, or return after ``limit`` seconds.

    The workers are other processes: only the store can tell what they did,
    so this reads its counters (cheap on every store) a few times a second.
    A read that fails because the store is down (a fault the test injects)
    is tried again at the next turn.
    """
    with anyio.move_on_after(limit):
        while True:
            with contextlib.suppress(BackendUnavailable):
                stats = await backend.stats()
                if sum(s.counts[JobState.COMPLETED] for s in stats) >= jobs:
                    done.set()
                    return
            await anyio.sleep(0.1)


async def every_job(backend: Backend) -> list[JobRecord]:
    """Every job in the store, page by page."""
    out: list[JobRecord] = []
    after: str | None = None
    while True:
        page = await backend.list_jobs(limit=500, after=after)
        out += page
        if len(page) < 500:
            return out
        after = page[-1].id


@dataclass
class Figures:
    """What one chaos run measured, as reported in docs/guarantees.md."""

    store: str
    fault: str
    jobs: int
    faults: int
    lost: int
    duplicates: int
    stuck: int
    seconds: float
    #: runs that ended with a ``lost`` error (recovered after their lease lapsed)
    recovered: int = 0
    #: bound on duplicates: faults x (concurrency + prefetch)
    bound: int = 0

    def line(self) -> str:
        return (
            f"chaos {self.fault} on {self.store}: jobs={self.jobs} faults={self.faults}"
            f" lost={self.lost} duplicates={self.duplicates} (bound {self.bound})"
            f" stuck={self.stuck} recovered={self.recovered} seconds={self.seconds:.1f}"
        )


async def figures_of(
    backend: Backend,
    log: Path,
    ids: Sequence[str],
    *,
    store: str,
    fault: str,
    faults: int,
    bound: int,
    started: float,
) -> tuple[Figures, list[JobRecord]]:
    """The figures of a run over the jobs ``ids``, from the store and the execution log."""
    jobs = {job.id: job for job in await every_job(backend)}
    runs = count_runs(log)
    pending = {JobState.SCHEDULED, JobState.QUEUED, JobState.ACTIVE, JobState.FAILED}
    records = [jobs[i] for i in ids if i in jobs]
    figures = Figures(
        store=store,
        fault=fault,
        jobs=len(ids),
        faults=faults,
        lost=sum(1 for i in ids if i not in jobs or jobs[i].state is not JobState.COMPLETED),
        duplicates=sum(runs[i] - 1 for i in ids if runs[i] > 1),
        stuck=sum(1 for job in records if job.state in pending),
        seconds=time.monotonic() - started,
        recovered=sum(1 for job in records for e in job.errors if e.kind == "lost"),
        bound=bound,
    )
    return figures, records


def check_recovered(figures: Figures, fleet: Fleet) -> None:
    """What a run of repeated faults must end with, whatever the fault.

    No job lost or left behind, no more duplicates than the bound, at least
    three faults (fewer means the drain ended before they got going), and no
    worker that printed a traceback.
    """
    assert figures.lost == 0, figures.line()
    assert figures.stuck == 0, figures.line()
    assert figures.duplicates <= figures.bound, figures.line()
    assert figures.faults >= 3, f"the drain ended before the faults got going: {figures.line()}"
    assert not fleet.crashed(), f"a worker printed a traceback: {fleet.crashed()}"


def record(factory: pytest.TempPathFactory, tmp_path: Path, figures: Figures) -> None:
    """Print the figures' line and keep them as JSON: the test's own file and the session's.

    The session's file is ``chaos-figures.jsonl`` in pytest's base temporary
    directory, one object per line.
    """
    print(figures.line())
    data = asdict(figures)
    (tmp_path / "figures.json").write_text(json.dumps(data, indent=2))
    with (factory.getbasetemp() / "chaos-figures.jsonl").open("a") as out:
        out.write(json.dumps(data) + "\n")
