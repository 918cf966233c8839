"""The SQLite backend alone: claim+settle throughput, and cross-process pickup latency.

Run from the repository root::

    python -m benchmarks.sqlite_latency                  # both
    python -m benchmarks.sqlite_latency throughput --n 10000 --batch 500 --claim 100
    python -m benchmarks.sqlite_latency latency --n 300 --poll-interval 0.1

``throughput`` enqueues ``--n`` jobs in batches of ``--batch``, then claims
``--claim`` at a time and settles each batch as completed until the queue is
empty, all in this process on a fresh file, and reports jobs/s per phase.

``latency`` starts a second process that loops on ``wait_for_work`` and
``claim``; this process enqueues one job at a time at random intervals (so
enqueues fall at random points of the waiter's poll cycle). A job's latency
is from just before its ``enqueue`` call here to the return of
``wait_for_work`` there (same host, same clock). Expect it to be spread over
``0 .. poll_interval``, plus a millisecond or two of overhead.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import msgspec
from anyio.streams.buffered import BufferedByteReceiveStream

from asyncq._records import JobRecord, JobState, Outcome, new_job_id
from asyncq.backends.sqlite import SQLiteBackend

QUEUE = "bench"


def _job(payload: bytes = b"\x90") -> JobRecord:
    now = time.time()
    return JobRecord(
        id=new_job_id(), name="bench.noop", queue=QUEUE, payload=payload,
        enqueued_at=now, scheduled_at=now,
    )  # fmt: skip


async def throughput(path: Path, n: int, batch: int, claim: int) -> dict[str, float]:
    backend = SQLiteBackend(path)
    await backend.open()
    try:
        started = time.perf_counter()
        for start in range(0, n, batch):
            await backend.enqueue([_job() for _ in range(min(batch, n - start))])
        enqueued = time.perf_counter()
        done = 0
        while leases := await backend.claim([QUEUE], claim, worker="bench", lease_for=60):
            outcomes = [Outcome(x.job.id, x.token, JobState.COMPLETED, b"\xc0") for x in leases]
            applied = await backend.settle(outcomes)
            done += sum(applied)
        finished = time.perf_counter()
    finally:
        await backend.close()
    assert done == n, f"settled {done} of {n}"
    return {
        "n": n,
        "enqueue_jobs_per_s": n / (enqueued - started),
        "claim_settle_jobs_per_s": n / (finished - enqueued),
        "end_to_end_jobs_per_s": n / (finished - started),
    }


async def _waiter(path: str, n: int, poll_interval: float) -> None:
    """The other process: report, for each job, wait_for_work's return minus the job's t0."""
    backend = SQLiteBackend(path, poll_interval=poll_interval)
    await backend.open()
    latencies: list[float] = []
    try:
        print("ready", flush=True)
        while len(latencies) < n:
            await backend.wait_for_work([QUEUE], timeout=5.0)
            woke = time.time()
            leases = await backend.claim([QUEUE], 100, worker="waiter", lease_for=60)
            latencies.extend(woke - msgspec.msgpack.decode(x.job.payload) for x in leases)
            await backend.settle([Outcome(x.job.id, x.token, JobState.COMPLETED) for x in leases])
    finally:
        await backend.close()
    print(json.dumps(latencies), flush=True)


async def latency(path: Path, n: int, poll_interval: float) -> dict[str, float]:
    backend = SQLiteBackend(path)
    await backend.open()
    command = [sys.executable, "-m", "benchmarks.sqlite_latency", "_waiter", str(path)]
    command += ["--n", str(n), "--poll-interval", str(poll_interval)]
    try:
        async with await anyio.open_process(command, stderr=None) as process:
            assert process.stdout is not None
            lines = BufferedByteReceiveStream(process.stdout)
            assert await lines.receive_until(b"\n", 100) == b"ready"
            for _ in range(n):
                await anyio.sleep(random.uniform(0.02, 0.08))
                await backend.enqueue([_job(msgspec.msgpack.encode(time.time()))])
            latencies = sorted(json.loads(await lines.receive_until(b"\n", 10_000_000)))
            await process.wait()
    finally:
        await backend.close()
    ms = [x * 1000 for x in latencies]
    return {
        "n": n,
        "poll_interval_s": poll_interval,
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, round(0.99 * len(ms)))],
        "max_ms": ms[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="both")
    parser.add_argument("path", nargs="?")
    parser.add_argument("--n", type=int)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--claim", type=int, default=100)
    parser.add_argument("--poll-interval", type=float, default=0.1)
    args = parser.parse_args()
    if args.what == "_waiter":
        anyio.run(_waiter, args.path, args.n, args.poll_interval)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.what in ("both", "throughput"):
            result = anyio.run(
                throughput, Path(tmp, "throughput.db"), args.n or 10_000, args.batch, args.claim
            )
            print(json.dumps({"benchmark": "sqlite throughput", **result}))
        if args.what in ("both", "latency"):
            result = anyio.run(latency, Path(tmp, "latency.db"), args.n or 300, args.poll_interval)
            print(json.dumps({"benchmark": "sqlite cross-process pickup", **result}))


if __name__ == "__main__":
    main()
