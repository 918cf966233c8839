"""Worker processes killed and stopped under load, on every store processes can share.

Three ``asyncq run`` workers drain a queue of short jobs while one of them,
picked at random every 0.3 to 1 s, is signalled and replaced by a new process:

- ``SIGKILL``: the worker dies holding leases; they lapse and a live worker
  recovers them. Jobs in flight at a kill may run twice, no more than the
  killed worker held (concurrency plus prefetch), and none is lost;
- ``SIGTERM`` with ``--shutdown-timeout 0``: the worker cancels its running
  jobs and hands them back before it exits; they run elsewhere, none waits
  for a lease to lapse, and none is lost.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import pytest

from ._support import (
    IN_FLIGHT,
    WORKER_ARGS,
    WORKERS,
    Figures,
    Fleet,
    Task,
    check_recovered,
    drain,
    figures_of,
    producer,
    record,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.chaos]


def store_of(url: str) -> str:
    return url.partition(":")[0].replace("postgresql", "postgres")


async def storm(
    store_url: str,
    tmp_path: Path,
    factory: pytest.TempPathFactory,
    *,
    sig: signal.Signals,
    jobs: int,
    seconds: float,
    limit: float,
) -> tuple[Figures, list[int]]:
    """Drain ``jobs`` jobs of ``seconds`` each under a storm of ``sig``; check and record it.

    The storm lasts until the queue is drained or ``limit`` seconds have
    passed; the workers then get as long again to finish the drain.
    Returns the figures and the signalled workers' exit codes.
    """
    fleet = Fleet(tmp_path, store_url, WORKER_ARGS)
    app, work = producer(store_url)
    started = time.monotonic()
    try:
        async with app:
            handles = await work.enqueue_many([Task(n, seconds) for n in range(jobs)])
            ids = [handle.id for handle in handles]
            await fleet.start(WORKERS)
            done = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain, app.backend, jobs, done, 2 * limit)
                signals = await fleet.storm(sig, (0.3, 1.0), done, limit)
            figures, _ = await figures_of(
                app.backend,
                fleet.log,
                ids,
                store=store_of(store_url),
                fault=sig.name,
                faults=signals,
                bound=signals * IN_FLIGHT,
                started=started,
            )
    finally:
        await fleet.stop()
    record(factory, tmp_path, figures)
    check_recovered(figures, fleet)
    return figures, fleet.exits


@pytest.mark.timeout(150)
async def test_sigkill_storm_loses_no_job(
    store_url: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    figures, exits = await storm(
        store_url, tmp_path, tmp_path_factory, sig=signal.SIGKILL, jobs=2000, seconds=0.02, limit=15
    )
    assert exits == [-signal.SIGKILL] * figures.faults


@pytest.mark.timeout(150)
async def test_sigterm_hands_running_jobs_back(
    store_url: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    figures, exits = await storm(
        store_url, tmp_path, tmp_path_factory, sig=signal.SIGTERM, jobs=600, seconds=0.15, limit=10
    )
    # Each worker stopped cleanly and handed back what it ran: no lease had to lapse.
    assert exits == [0] * figures.faults
    assert figures.recovered == 0, figures.line()
    # A job stopped before its effect was handed back, so no effect ran twice.
    assert figures.duplicates == 0, figures.line()
