"""RQ on Redis: ``python -m benchmarks.peers.rq_driver SCENARIO ...``.

RQ is synchronous: ``enqueue()`` and ``Job.latest_result()`` block, and are
called here from the driver's event loop (nothing else runs on it meanwhile).

Its default ``Worker`` forks a child process for every job (a sandbox against
crashes and leaks). RQ's performance notes (docs/benchmark.md, "Notes on
Performance") measure ``SimpleWorker``, which runs jobs in its own process, at
about 6x the forking one, and name it for jobs of a few milliseconds whose
code is trusted: that is this harness's no-op job, so every scenario uses
``SimpleWorker``. An RQ worker runs one job at a time; its concurrency is
its number of processes (``rq worker-pool -n N``, or N ``rq worker``\\ s), so:

- ``drain-noop``: one ``SimpleWorker`` (concurrency 1 costs a no-op job
  nothing: the worker's time goes to its per-job Redis calls);
- ``drain-sleep``: n/a: 100 concurrent 50 ms jobs would take 100 worker
  processes; the ``scale`` scenario is where RQ runs several;
- ``scale``: one ``SimpleWorker`` per process, as ``rq worker-pool
  --worker-class rq.worker.SimpleWorker`` would start.

The drains run the worker the way ``rq worker --burst`` does, on this process's
main thread (RQ times a job out with SIGALRM, which only the main thread may
set): it blocks the driver's event loop until the queue is empty, which is
fine, since the figure is the last job's own timestamp. The round trip needs
the loop for its producer, so there the worker runs on a thread with
``TimerDeathPenalty``, RQ's timeout for where SIGALRM is unavailable (a
timer thread a job), and stops after a second without jobs.

Results: ``result_ttl=0`` (RQ keeps no result) except in the round trip.
Job ids and the worker's name carry the run's namespace, so that the runner
can delete every key of the run.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence

from redis import Redis
from rq import Queue, SimpleWorker
from rq.timeouts import TimerDeathPenalty

from ._driver import Peer, main
from ._harness import COUNTER


def noop(i: int) -> int:
    COUNTER.tick_locked()
    return i


def sleep(i: int) -> None:
    time.sleep(0.05)
    COUNTER.tick_locked()


# By import path: RQ refuses functions of ``__main__``, which this module is
# when run with ``-m`` (the worker imports it again under this name).
FUNCTIONS = {"noop": f"{__spec__.name}.noop", "sleep": f"{__spec__.name}.sleep"}


class _ThreadWorker(SimpleWorker):
    """A ``SimpleWorker`` that can run off the main thread (round trip only)."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        pass  # only the main thread may; this worker stops when idle


class RqPeer(Peer):
    name = "rq"
    distribution = "rq"
    settings = (
        "Queue(<run>, connection=Redis.from_url(url)); SimpleWorker (no fork a job, as RQ's "
        "performance notes advise for short trusted jobs), work(burst=True) on the main "
        "thread, one worker a process (RQ runs one job at a time); result_ttl=0 except the "
        "round trip; batches: Queue.enqueue_many(); round trip: enqueue() then "
        "Job.latest_result(timeout=10) (a blocking XREAD), worker on a thread "
        "with TimerDeathPenalty"
    )
    no_sleep = (
        "one job at a time per RQ worker: concurrency 100 would be 100 worker processes "
        "(see scale for several)"
    )

    async def open(self) -> None:
        self.redis = Redis.from_url(self.url)
        self.queue = Queue(self.ns, connection=self.redis)
        self.result_ttl = 60 if self.scenario == "roundtrip" else 0

    async def close(self) -> None:
        # RQ lists every queue in one global set: the run's must not stay there.
        self.redis.srem("rq:queues", self.queue.key)
        self.redis.close()

    async def enqueue(self, i: int, job: str) -> None:
        self.queue.enqueue(FUNCTIONS[job], i, job_id=f"{self.ns}-{i}", result_ttl=self.result_ttl)

    async def enqueue_many(self, items: Sequence[int], job: str) -> None:
        fn = FUNCTIONS[job]
        self.queue.enqueue_many(
            [
                Queue.prepare_data(fn, (i,), job_id=f"{self.ns}-{i}", result_ttl=self.result_ttl)
                for i in items
            ]
        )

    def _worker(self, cls: type[SimpleWorker]) -> SimpleWorker:
        return cls([self.queue], connection=self.redis, name=f"{self.ns}-{os.getpid()}")

    async def work(self, stop: asyncio.Event) -> None:
        if self.scenario != "roundtrip":
            self._worker(SimpleWorker).work(burst=True, logging_level="WARNING")
            await stop.wait()
            return
        worker = self._worker(_ThreadWorker)
        thread = threading.Thread(
            target=worker.work, kwargs={"max_idle_time": 1, "logging_level": "WARNING"}
        )
        thread.start()
        try:
            await stop.wait()
        finally:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 30)

    async def roundtrip(self, i: int) -> None:
        job = self.queue.enqueue(
            FUNCTIONS["noop"], i, job_id=f"{self.ns}-rt{i}", result_ttl=self.result_ttl
        )
        result = job.latest_result(timeout=10)
        if result is None or result.return_value != i:
            raise RuntimeError(f"rq job {job.id} ended without its result: {result!r}")


if __name__ == "__main__":
    raise SystemExit(main(RqPeer))
