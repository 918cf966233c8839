"""Dramatiq on Redis: ``python -m benchmarks.peers.dramatiq_driver SCENARIO ...``.

Two configurations, two system names:

- ``dramatiq`` (this module): plain ``def`` actors run by the worker's threads,
  the way Dramatiq's user guide writes every actor. The ``dramatiq`` command
  sizes a worker with ``--processes`` and ``--threads`` (8 threads a process
  by default, a number its author calls arbitrary in django_dramatiq issue
  115); a thread runs one job at a time, so here the worker has one thread
  per job slot (concurrency 100). That also suits no-op jobs: the Redis consumer
  prefetches 2x the thread count (``dramatiq_queue_prefetch`` overrides it),
  and a trial on a busy shared machine drained 2,000-2,100 no-op jobs/s with
  8 threads (prefetch 16) against 4,400-5,200 with 100 (prefetch 200); 8
  threads with a prefetch of 200 did as well as 100: the prefetch, not the
  thread count, is what limits it.
- ``dramatiq-async`` (``dramatiq_async_driver``): ``async def`` actors through the
  ``AsyncIO`` middleware (one event loop per worker process; each worker thread
  waits on the coroutine it submitted, so concurrency still needs threads).

Results: Dramatiq stores return values only with the ``Results`` middleware and
``store_results=True`` on the actor (docs, "Results" in the cookbook); that costs
a write per job, so only the round trip, which needs the value, turns it on.

Dramatiq's producer API is synchronous: ``send()`` and ``get_result()`` are
blocking calls, made here from the driver's event loop (nothing else runs on
it meanwhile); the worker's threads never touch that loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, ClassVar

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from ._driver import Peer, main
from ._harness import COUNTER


def noop(i: int) -> None:
    COUNTER.tick_locked()


def sleep(i: int) -> None:
    time.sleep(0.05)
    COUNTER.tick_locked()


class DramatiqPeer(Peer):
    name = "dramatiq"
    distribution = "dramatiq"
    settings = (
        "RedisBroker(url=url, namespace=<run>), no extra middleware; plain def actors, "
        "max_retries=0; Worker(broker, worker_threads=concurrency), worker_timeout and "
        "prefetch (2x threads) at their defaults; round trip only: Results(RedisBackend) "
        "and store_results=True, send() then Message.get_result(block=True)"
    )
    no_batch = "no batch enqueue API (send() enqueues one message; group() sends them one by one)"

    functions: ClassVar[dict[str, Callable[..., Any]]] = {"noop": noop, "sleep": sleep}

    def _middleware(self) -> None:
        """Add the middleware this configuration needs besides the defaults."""

    def threads(self) -> int:
        return self.concurrency

    async def open(self) -> None:
        self.broker = RedisBroker(url=self.url, namespace=self.ns)
        self._middleware()
        options: dict[str, Any] = {"max_retries": 0}
        if self.scenario == "roundtrip":
            self.broker.add_middleware(
                Results(
                    backend=RedisBackend(
                        url=self.url, namespace=f"{self.ns}-results", use_namespace_prefix_keys=True
                    )
                )
            )
            options["store_results"] = True
        dramatiq.set_broker(self.broker)
        self.actors: dict[str, Any] = {
            name: dramatiq.actor(fn, actor_name=name, broker=self.broker, **options)
            for name, fn in self.functions.items()
        }

    async def close(self) -> None:
        self.broker.close()

    async def enqueue(self, i: int, job: str) -> None:
        self.actors[job].send(i)

    async def work(self, stop: asyncio.Event) -> None:
        worker = dramatiq.Worker(self.broker, worker_threads=self.threads())
        worker.start()
        try:
            await stop.wait()
        finally:
            await asyncio.get_running_loop().run_in_executor(None, worker.stop, 30_000)

    async def roundtrip(self, i: int) -> None:
        message = self.actors["noop"].send(i)
        message.get_result(block=True, timeout=10_000)


if __name__ == "__main__":
    raise SystemExit(main(DramatiqPeer))
