"""Flow control across worker processes: three ``asyncq run`` workers share one store.

A ``rate=50, per=1.0`` limit lets through 500 starts (within 5 %) in 10 s,
and ``concurrency=2`` per key is never exceeded, as the handlers themselves
measure it: each writes when it begins and ends to one log (``O_APPEND``, one
``write`` a line), and the test reads the intervals back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import anyio
import msgspec
import pytest

from _services import store_url
from asyncq import App

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

    from asyncq import App

    app = App("flow")
    LOG = os.open(os.environ["FLOW_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    rate = app.limit("api", rate=50, per=1.0)
    tenant = app.limit("tenant", concurrency=2, key=lambda task: task.tenant)


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
    """
)


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


async def test_three_workers_keep_the_rate_and_the_concurrency_per_key(
    store_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "flow.log"
    (tmp_path / "flowapp.py").write_text(APP_SOURCE)
    env = dict(os.environ, FLOW_LOG=str(log), ASYNCQ_BACKEND=store_url)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, "-m", "asyncq", "run", "flowapp:app", "--concurrency", "8"]

    # A producer of its own: the limits travel with the jobs it stores.
    app = App("flow-producer", backend=store_url)
    api = app.limit("api", rate=RATE, per=1.0)
    tenant = app.limit("tenant", concurrency=2, key=lambda task: task.tenant)
    rated = app.handle("flow.rated", schema=Task, limits=[api])
    keyed = app.handle("flow.keyed", schema=Task, limits=[tenant])
    # more than the window lets through, so the backlog never runs dry
    await rated.enqueue_many([Task("r") for _ in range(int(RATE * WINDOW * 1.5))])
    await keyed.enqueue_many([Task(t, 0.1) for t in ("a", "b", "c") for _ in range(10)])

    procs = []
    try:
        for n in range(WORKERS):
            with (tmp_path / f"worker{n}.log").open("wb") as err:
                procs.append(
                    await anyio.open_process(
                        argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err
                    )
                )
        with anyio.fail_after(STARTUP):
            # Another process's progress shows only in the file: look until it does.
            while True:
                if [e for e in lines(log) if e[0] == "start"]:
                    break
                await anyio.sleep(0.1)
        first = min(at for what, _, at in lines(log) if what == "start")
        await anyio.sleep(max(0.0, first + WINDOW + 0.5 - time.time()))
    finally:
        for proc in procs:
            proc.terminate()
        with anyio.move_on_after(20):
            for proc in procs:
                await proc.wait()
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
        await app.close()

    events = lines(log)
    starts = [at for what, _, at in events if what == "start" and at < first + WINDOW]
    assert abs(len(starts) - RATE * WINDOW) <= 0.05 * RATE * WINDOW, len(starts)
    most = most_at_once(events)
    assert max(most.values()) <= 2, most
    assert set(most) == {"a", "b", "c"}
