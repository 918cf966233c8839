"""The scenarios, written once against a small ``Peer`` interface.

Each peer module subclasses ``Peer`` with its library's own calls and ends in
``main(ThatPeer)``. The runner starts it in the peers' virtualenv::

    python -m benchmarks.peers.arq_driver SCENARIO --url URL --ns NS --n N [--processes K]

and reads one JSON line from stdout: the figures, or ``{"na": reason}``.
``worker`` is the extra scenario the ``scale`` orchestration starts K times.

The shapes match asyncq's own (``benchmarks/asyncq_bench.py``): batches of
1,000 for ``enqueue-batch``; drains pre-enqueue untimed, then time a worker in
this process from its start to the last job's completion; round trips run one
worker in this process and time 500 sequential enqueue-and-wait calls.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from typing import Any, ClassVar

from ._harness import COUNTER, WorkerSide, emit, peak_rss_mb, run_worker_processes

BATCH = 1000
DRAIN_TIMEOUT = 600.0


class NotAvailable(Exception):
    """The peer has no way to do this scenario; the message says why."""


class Peer:
    """One peer library, configured as its documentation suggests for throughput.

    Subclasses set the class attributes and implement the coroutines; a job
    named ``noop`` does nothing but ``COUNTER.tick()``, one named ``sleep``
    awaits ``asyncio.sleep(0.05)`` first. A peer whose jobs are plain functions
    run by a pool of threads calls ``time.sleep(0.05)`` and ``COUNTER.tick_locked()``.
    """

    name: ClassVar[str]
    distribution: ClassVar[str]
    #: the configuration in one line, for the JSON record and the README
    settings: ClassVar[str] = ""
    #: why enqueue-batch is n/a (None: the peer has a batch API)
    no_batch: ClassVar[str | None] = None
    #: why roundtrip is n/a (None: the peer can enqueue and wait)
    no_roundtrip: ClassVar[str | None] = None
    #: why drain-sleep is n/a (None: one worker process can run ``concurrency`` jobs at once)
    no_sleep: ClassVar[str | None] = None

    def __init__(self, url: str, ns: str, concurrency: int) -> None:
        self.url = url
        self.ns = ns
        self.concurrency = concurrency
        #: set for the roundtrip scenario, for peers whose knobs trade throughput for latency
        self.latency = False
        #: the scenario this process runs (``worker`` for a scale worker process), for
        #: peers whose documentation recommends different settings per kind of job
        self.scenario = ""

    async def open(self) -> None:
        """Connect (and install a schema if the peer needs one)."""

    async def close(self) -> None:
        """Disconnect."""

    async def enqueue(self, i: int, job: str) -> None:
        raise NotImplementedError

    async def enqueue_many(self, items: Sequence[int], job: str) -> None:
        raise NotAvailable(self.no_batch or "no batch API")

    async def work(self, stop: asyncio.Event) -> None:
        """Run a worker at ``self.concurrency`` until ``stop`` is set."""
        raise NotImplementedError

    async def roundtrip(self, i: int) -> None:
        """Enqueue one no-op job and wait for its result."""
        raise NotAvailable(self.no_roundtrip or "no enqueue-and-wait")


async def _prefill(peer: Peer, n: int, job: str) -> None:
    if peer.no_batch is None:
        for start in range(0, n, BATCH):
            await peer.enqueue_many(range(start, min(n, start + BATCH)), job)
    else:
        for i in range(n):
            await peer.enqueue(i, job)


async def _wait_count(n: int, timeout: float, worker: asyncio.Task[None]) -> None:
    # Polls a counter: the figure comes from the jobs' own timestamps, so
    # how soon this notices only delays the stop, not the measurement.
    deadline = time.monotonic() + timeout
    while COUNTER.done < n:
        if worker.done():
            worker.result()
            msg = f"worker ended with {COUNTER.done} of {n} jobs done"
            raise RuntimeError(msg)
        if time.monotonic() > deadline:
            msg = f"timed out with {COUNTER.done} of {n} jobs done"
            raise RuntimeError(msg)
        await asyncio.sleep(0.005)


class _Abandoned:
    """Set when a peer's worker would not stop: the process then ends hard."""

    stuck = False


STOP_GRACE = 15.0


async def _stop(stop: asyncio.Event, worker: asyncio.Task[None]) -> None:
    """Stop the worker; trouble while it shuts down is reported, not fatal.

    The figures are taken by then. Some peers' workers end with an error when
    stopped from outside, or (streaq, now and then) never finish cancelling:
    such a worker is left behind and the process exits without waiting for it.
    """
    stop.set()
    done, _ = await asyncio.wait([worker], timeout=STOP_GRACE)
    if not done:
        worker.cancel()
        done, _ = await asyncio.wait([worker], timeout=STOP_GRACE)
    if not done:
        print("worker shutdown: still running, left behind", file=sys.stderr)
        _Abandoned.stuck = True
    elif not worker.cancelled() and worker.exception() is not None:
        print(f"worker shutdown: {worker.exception()!r}", file=sys.stderr)


async def scenario_enqueue(peer: Peer, n: int) -> dict[str, Any]:
    started = time.perf_counter()
    for i in range(n):
        await peer.enqueue(i, "noop")
    return {"jobs_per_s": n / (time.perf_counter() - started), "n": n}


async def scenario_enqueue_batch(peer: Peer, n: int) -> dict[str, Any]:
    if peer.no_batch is not None:
        raise NotAvailable(peer.no_batch)
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        await peer.enqueue_many(range(start, min(n, start + BATCH)), "noop")
    return {"jobs_per_s": n / (time.perf_counter() - started), "n": n, "batch": BATCH}


async def _drain(peer: Peer, n: int, job: str) -> dict[str, Any]:
    await _prefill(peer, n, job)
    COUNTER.reset()
    stop = asyncio.Event()
    started = time.time()
    worker = asyncio.ensure_future(peer.work(stop))
    try:
        await _wait_count(n, DRAIN_TIMEOUT, worker)
    finally:
        await _stop(stop, worker)
    return {
        "jobs_per_s": n / (COUNTER.last - started),
        "n": n,
        "concurrency": peer.concurrency,
        "peak_rss_mb": peak_rss_mb(),
    }


async def scenario_drain_noop(peer: Peer, n: int) -> dict[str, Any]:
    return await _drain(peer, n, "noop")


async def scenario_drain_sleep(peer: Peer, n: int) -> dict[str, Any]:
    if peer.no_sleep is not None:
        raise NotAvailable(peer.no_sleep)
    return await _drain(peer, n, "sleep")


async def scenario_roundtrip(peer: Peer, n: int) -> dict[str, Any]:
    if peer.no_roundtrip is not None:
        raise NotAvailable(peer.no_roundtrip)
    stop = asyncio.Event()
    peer.latency = True
    worker = asyncio.ensure_future(peer.work(stop))
    samples: list[float] = []
    try:
        await asyncio.wait_for(peer.roundtrip(-1), 30)  # warm up
        for i in range(n):
            started = time.perf_counter()
            await asyncio.wait_for(peer.roundtrip(i), 10)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        await _stop(stop, worker)
    samples.sort()
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "n": n,
    }


SCENARIOS = {
    "enqueue": scenario_enqueue,
    "enqueue-batch": scenario_enqueue_batch,
    "drain-noop": scenario_drain_noop,
    "drain-sleep": scenario_drain_sleep,
    "roundtrip": scenario_roundtrip,
}


async def _worker_process(peer: Peer) -> None:
    side = WorkerSide()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    side.ready()
    await loop.run_in_executor(None, side.go.wait)
    side.start_reporter()
    worker = asyncio.ensure_future(peer.work(stop))
    await loop.run_in_executor(None, side.stop.wait)
    await _stop(stop, worker)
    side.final()


async def _run(peer: Peer, args: argparse.Namespace, record: dict[str, Any]) -> None:
    await peer.open()
    result: dict[str, Any] | None = None
    try:
        if args.scenario == "worker":
            await _worker_process(peer)
        elif args.scenario == "scale":
            await _prefill(peer, args.n, "noop")
        else:
            result = await SCENARIOS[args.scenario](peer, args.n)
    except NotAvailable as exc:
        result = {"na": str(exc)}
    finally:
        if not _Abandoned.stuck:
            # In this task: streaq's client must be left where it was entered.
            async with asyncio.timeout(STOP_GRACE):
                await peer.close()
    if result is not None:
        emit({**record, **result})
    if _Abandoned.stuck:
        # asyncio.run() would wait for the stuck tasks forever on its way out.
        sys.stdout.flush()
        os._exit(0)


def main(peer_class: type[Peer], argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"{peer_class.name} driver")
    parser.add_argument("scenario", choices=[*SCENARIOS, "scale", "worker"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--ns", required=True, help="a name unique to this run")
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--processes", type=int, default=1, help="scale: worker processes")
    args = parser.parse_args(argv)

    peer = peer_class(args.url, args.ns, args.concurrency)
    peer.scenario = args.scenario
    record: dict[str, Any] = {
        "version": metadata.version(peer_class.distribution),
        "config": peer_class.settings,
    }
    asyncio.run(_run(peer, args, record))
    if args.scenario == "scale":
        # Run as ``-m``, the driver's module is __main__: its spec has the real name.
        spec = sys.modules[peer_class.__module__].__spec__
        module = spec.name if spec is not None else peer_class.__module__
        argv_worker = [
            sys.executable, "-m", module, "worker",
            "--url", args.url, "--ns", args.ns, "--concurrency", str(args.concurrency),
        ]  # fmt: skip
        result = run_worker_processes(argv_worker, args.processes, args.n)
        emit({**record, **result, "n": args.n})
    return 0


def pg_url_in_schema(url: str, schema: str) -> str:
    """``url`` with libpq's ``options`` putting ``schema`` first on the search_path.

    Peers whose tables have fixed names then create them in the run's own
    schema, which the runner creates before and drops after.
    """
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"
