"""Celery with the Redis broker: ``python -m benchmarks.peers.celery_driver SCENARIO ...``.

Celery is thread- and process-based; its producer calls (``delay()``,
``AsyncResult.get()``) block, and are made here from the driver's event loop
(nothing else runs on it meanwhile). The worker runs in this process, on a
thread of its own, as a ``WorkController`` (what ``celery worker`` builds,
without the signal handlers that only the main thread may install).

Configuration, after Celery's documentation:

- Pool: ``threads`` at the scenario's concurrency. The concurrency guide
  recommends ``prefork`` for CPU-bound work and ``gevent``/``eventlet`` (green
  threads) or ``threads`` for I/O-bound work; prefork would run the jobs in
  child processes, where the one-process drains of this harness cannot count
  them (the ``scale`` scenario is the multi-process comparison), and gevent
  needs the whole process monkey-patched, so ``threads`` is the pool that fits.
- Prefetch: the optimizing guide ("Prefetch Limits") keeps the default of 4
  a slot for mixed work and 1 for long tasks; its earlier editions (2.x)
  spell out the other end: many short tasks, where throughput and round-trip
  latency matter, want a large multiplier, 64 or 128. 64 here, that is
  64 x concurrency messages reserved at most (a trial on a busy machine
  found no clear difference from 4 on the Redis transport).
- No result backend and ``task_ignore_result=True`` except in the round trip,
  which needs the value (Redis backend; ``get()`` waits on its pub/sub).
- ``without_mingle``/``without_gossip``/``without_heartbeat``: the worker
  options for a lone worker (no cluster to synchronise with at start-up).
- Keys: kombu's ``global_keyprefix`` transport option puts the run's
  namespace in front of every broker and result key, so the runner can
  delete them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from celery import Celery
from celery.worker import WorkController, state

from ._driver import Peer, main
from ._harness import COUNTER

PREFETCH_MULTIPLIER = 64


def noop(i: int) -> int:
    COUNTER.tick_locked()
    return i


def sleep(i: int) -> None:
    time.sleep(0.05)
    COUNTER.tick_locked()


class CeleryPeer(Peer):
    name = "celery"
    distribution = "celery"
    settings = (
        "Celery(broker=url, backend=url only for the round trip), task_default_queue=<run>, "
        "broker/result transport global_keyprefix=<run>; task_ignore_result=True except the "
        "round trip; worker: WorkController(pool='threads', concurrency=concurrency, "
        "worker_prefetch_multiplier=64, without mingle/gossip/heartbeat) on a thread; "
        "round trip: delay() then AsyncResult.get(timeout=10)"
    )
    no_batch = "no batch enqueue API (delay()/apply_async() publish one message per call)"

    async def open(self) -> None:
        roundtrip = self.scenario == "roundtrip"
        prefix = {"global_keyprefix": f"{self.ns}:"}
        self.app = Celery(self.ns, broker=self.url, backend=self.url if roundtrip else None)
        self.app.conf.update(
            task_default_queue=self.ns,
            broker_transport_options=prefix,
            result_backend_transport_options=prefix,
            task_ignore_result=not roundtrip,
            worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
            worker_hijack_root_logger=False,
            broker_connection_retry_on_startup=True,
        )
        self.tasks: dict[str, Any] = {
            "noop": self.app.task(name="noop")(noop),
            "sleep": self.app.task(name="sleep")(sleep),
        }
        logging.getLogger("celery").setLevel(logging.WARNING)
        # The threads pool runs a job by looking its task up in the current
        # app, which is per thread unless there is a default: the app is this
        # process's only one, as in a ``celery worker``.
        self.app.set_default()
        self.kept: list[Any] = []

    async def close(self) -> None:
        self.app.close()

    async def enqueue(self, i: int, job: str) -> None:
        self.tasks[job].delay(i)

    async def work(self, stop: asyncio.Event) -> None:
        worker = WorkController(
            app=self.app,
            hostname=f"{self.ns}@bench",
            pool_cls="threads",
            concurrency=self.concurrency,
            loglevel="WARNING",
            without_mingle=True,
            without_gossip=True,
            without_heartbeat=True,
        )
        thread = threading.Thread(target=worker.start, daemon=True)
        thread.start()
        loop = asyncio.get_running_loop()
        try:
            await stop.wait()
        finally:
            # What the worker's own warm-shutdown signal handler does.
            state.should_stop = 0
            await loop.run_in_executor(None, thread.join, 30)
            state.should_stop = None

    async def roundtrip(self, i: int) -> None:
        pending = self.tasks["noop"].delay(i)
        # Kept until the process ends: an AsyncResult whose __del__ runs (from
        # the garbage collector) while the backend's pub/sub client is inside a
        # command unsubscribes re-entrantly on that client, which hangs for good.
        self.kept.append(pending)
        # From a thread that is not a task: the guard against waiting inside a task
        # does not apply (Celery thinks so because a worker runs in this process).
        if pending.get(timeout=10, disable_sync_subtasks=False) != i:
            raise RuntimeError("celery returned another value")


if __name__ == "__main__":
    raise SystemExit(main(CeleryPeer))
