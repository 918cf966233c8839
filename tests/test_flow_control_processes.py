"""Flow control across worker processes: three ``asyncq run`` workers share one store.

A ``rate=50, per=1.0`` limit lets through 500 starts (within 5 %) in 10 s,
and ``concurrency=2`` per key is never exceeded, as the handlers themselves
measure it: each writes when it begins and ends to one log (``O_APPEND``, one
``write`` a line), and the test reads the intervals back. A circuit shared by
the three opens after its failures, holds its jobs without using attempts,
lets one probe through, and closes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import pytest

from _services import store_url
from asyncq import App, JobHandle, JobRecord, JobState

__all__ = ["store_url"]

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WORKERS = 3
WINDOW = 10.0
RATE = 50.0
STARTUP = 30.0

APP_SOURCE = textwrap.dedent(
    """
    import os
    import time

    import anyio
    import msgspec

    from asyncq import App, RetryPolicy

    app = App("flow")
    LOG = os.open(os.environ["FLOW_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    rate = app.limit("api", rate=50, per=1.0)
    tenant = app.limit("tenant", concurrency=2, key=lambda task: task.tenant)
    payments = app.circuit("payments", failures=3, within=60.0, reset_after=3.0)


    class Task(msgspec.Struct):
        tenant: str
        seconds: float = 0.0


    def note(what, task):
        os.write(LOG, f"{what} {task.tenant} {time.time():.6f}\\n".encode())


    @app.job(schema=Task, name="flow.rated", limits=[rate])
    async def rated(task: Task) -> None:
        note("start", task)


    @app.job(schema=Task, name="flow.keyed", limits=[tenant])
    async def keyed(task: Task) -> None:
        note("begin", task)
        await anyio.sleep(task.seconds)
        note("end", task)


    @app.job(schema=Task, name="flow.charge", circuit=payments, retry=RetryPolicy.fixed(0.2))
    async def charge(task: Task) -> None:
        # the payment service is down while the test's file says so
        note("begin", task)
        await anyio.sleep(task.seconds)
        if os.path.exists(os.environ["FLOW_DOWN"]):
            note("fail", task)
            raise RuntimeError("payments API down")
        note("end", task)
    """
)
#: the circuit's numbers in APP_SOURCE
FAILURES = 3
RESET_AFTER = 3.0


class Task(msgspec.Struct):
    tenant: str
    seconds: float = 0.0


def lines(log: Path) -> list[tuple[str, str, float]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        what, key, at = line.split()
        out.append((what, key, float(at)))
    return out


def most_at_once(events: list[tuple[str, str, float]]) -> dict[str, int]:
    """Per key, the most intervals (begin..end) open at one time."""
    by_key: defaultdict[str, list[tuple[float, int]]] = defaultdict(list)
    for what, key, at in events:
        if what in ("begin", "end"):
            # an end sorts before a begin at the same instant
            by_key[key].append((at, 1 if what == "begin" else -1))
    most: dict[str, int] = {}
    for key, marks in by_key.items():
        now = 0
        for _, step in sorted(marks):
            now += step
            most[key] = max(most.get(key, 0), now)
    return most


@contextlib.asynccontextmanager
async def three_workers(tmp_path: Path, store_url: str, **env: str) -> AsyncIterator[None]:
    """``WORKERS`` ``asyncq run`` processes of APP_SOURCE on ``store_url``, stopped after."""
    (tmp_path / "flowapp.py").write_text(APP_SOURCE)
    environ = dict(os.environ, ASYNCQ_BACKEND=store_url, **env)
    path = environ.get("PYTHONPATH", "")
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), path) if p)
    argv = [sys.executable, "-m", "asyncq", "run", "flowapp:app", "--concurrency", "8"]
    procs = []
    try:
        for n in range(WORKERS):
            with (tmp_path / f"worker{n}.log").open("wb") as err:
                procs.append(
                    await anyio.open_process(
                        argv, cwd=tmp_path, env=environ, stdout=subprocess.DEVNULL, stderr=err
                    )
                )
        yield
    finally:
        for proc in procs:
            proc.terminate()
        with anyio.move_on_after(20):
            for proc in procs:
                await proc.wait()
        for proc in procs:
            if proc.returncode is None:
                proc.kill()


async def test_three_workers_keep_the_rate_and_the_concurrency_per_key(
    store_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "flow.log"

    # A producer of its own: the limits travel with the jobs it stores.
    app = App("flow-producer", backend=store_url)
    api = app.limit("api", rate=RATE, per=1.0)
    tenant = app.limit("tenant", concurrency=2, key=lambda task: task.tenant)
    rated = app.handle("flow.rated", schema=Task, limits=[api])
    keyed = app.handle("flow.keyed", schema=Task, limits=[tenant])
    # more than the window lets through, so the backlog never runs dry
    await rated.enqueue_many([Task("r") for _ in range(int(RATE * WINDOW * 1.5))])
    await keyed.enqueue_many([Task(t, 0.1) for t in ("a", "b", "c") for _ in range(10)])

    try:
        async with three_workers(tmp_path, store_url, FLOW_LOG=str(log), FLOW_DOWN="-"):
            with anyio.fail_after(STARTUP):
                # Another process's progress shows only in the file: look until it does.
                while True:
                    if [e for e in lines(log) if e[0] == "start"]:
                        break
                    await anyio.sleep(0.1)
            first = min(at for what, _, at in lines(log) if what == "start")
            await anyio.sleep(max(0.0, first + WINDOW + 0.5 - time.time()))
    finally:
        await app.close()

    events = lines(log)
    starts = [at for what, _, at in events if what == "start" and at < first + WINDOW]
    assert abs(len(starts) - RATE * WINDOW) <= 0.05 * RATE * WINDOW, len(starts)
    most = most_at_once(events)
    assert max(most.values()) <= 2, most
    assert set(most) == {"a", "b", "c"}


async def infos(handles: list[JobHandle[None]]) -> list[JobRecord]:
    return [await handle.info() for handle in handles]


async def test_three_workers_share_a_circuit_that_opens_holds_probes_and_closes(
    store_url: str, tmp_path: Path
) -> None:
    log, down = tmp_path / "flow.log", tmp_path / "down"
    down.touch()  # the payment service is down
    app = App("flow-producer", backend=store_url)
    payments = app.circuit("payments", failures=FAILURES, within=60.0, reset_after=RESET_AFTER)
    charge = app.handle("flow.charge", schema=Task, circuit=payments, max_attempts=50)
    handles = await charge.enqueue_many([Task(f"c{n}", 0.05) for n in range(12)])

    try:
        async with three_workers(tmp_path, store_url, FLOW_LOG=str(log), FLOW_DOWN=str(down)):
            with anyio.fail_after(STARTUP):
                # the failures open it, for every worker (the state is in the store,
                # which other processes change: look until it shows)
                while True:
                    if [c for c in await app.admin.circuits() if c.state == "open"]:
                        break
                    await anyio.sleep(0.05)
            (circuit,) = await app.admin.circuits()
            assert circuit.opened_at is not None
            opened = circuit.opened_at
            # open: the jobs wait, queued, and use no attempts
            await anyio.sleep(1.0)
            held = await infos(handles)
            failed = [key for what, key, _ in lines(log) if what == "fail"]
            assert FAILURES <= len(failed) <= FAILURES + WORKERS * 8, failed
            assert sum(job.attempts for job in held) == len(failed)
            # (a job that failed as it opened may still wait for its retry's time)
            assert {job.state for job in held} <= {JobState.QUEUED, JobState.FAILED}, held
            queued = [job for job in held if job.state is JobState.QUEUED]
            assert queued
            assert {job.hold for job in queued} == {"circuit:payments"}
            for job in queued:
                assert job.held_until == pytest.approx(opened + RESET_AFTER)
            down.unlink()  # repaired: the probe, once it is let through, succeeds
            with anyio.fail_after(2 * RESET_AFTER + STARTUP):
                for handle in handles:
                    await handle.result()
            (closed,) = await app.admin.circuits()
            done = await infos(handles)
    finally:
        await app.close()

    assert closed.state == "closed"
    # every job ran once more than it failed: no attempt went to waiting
    assert sum(job.attempts for job in done) == len(failed) + len(handles)
    begins = sorted((at, key) for what, key, at in lines(log) if what == "begin")
    # Started while it was open: none, but those claimed before the failure
    # that opened it was settled (a worker settles in the background).
    late = [at for at, _ in begins if opened + 0.5 < at < opened + RESET_AFTER]
    assert late == [], late
    # half open: one probe runs alone, its success closes the circuit
    probe_at, probe = next((at, key) for at, key in begins if at >= opened + RESET_AFTER - 0.1)
    ended = min(at for what, key, at in lines(log) if what == "end" and key == probe)
    alongside = [key for at, key in begins if probe_at < at < ended]
    assert alongside == [], (probe, alongside)
