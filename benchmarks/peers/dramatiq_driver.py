"""Dramatiq on Redis: ``python -m benchmarks.peers.dramatiq_driver SCENARIO ...``.

Dramatiq is thread-based: ``send()`` and ``get_result()`` are blocking calls,
made here from the driver's event loop (nothing else runs on it meanwhile),
and ``async def`` actors run on the event-loop thread of its AsyncIO middleware.
"""

from __future__ import annotations

import asyncio
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware.asyncio import AsyncIO
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

from ._driver import Peer, main
from ._harness import COUNTER


async def noop(i: int) -> None:
    COUNTER.tick()


async def sleep(i: int) -> None:
    await asyncio.sleep(0.05)
    COUNTER.tick()


class DramatiqPeer(Peer):
    name = "dramatiq"
    distribution = "dramatiq"
    settings = (
        "RedisBroker(url=url, namespace=<run>) with the AsyncIO middleware (async actors) and "
        "Results(backend=RedisBackend(namespace=<run>-results, use_namespace_prefix_keys=True)); "
        "actors max_retries=0, store_results=True; Worker(broker, worker_threads=concurrency) "
        "(worker_timeout 1000 ms, queue prefetch 2x threads: the defaults); "
        "round trip: send() then Message.get_result(block=True)"
    )
    no_batch = "no batch enqueue API (send() enqueues one message; group() sends them one by one)"

    async def open(self) -> None:
        self.broker = RedisBroker(url=self.url, namespace=self.ns)
        self.broker.add_middleware(AsyncIO())
        self.broker.add_middleware(
            Results(
                backend=RedisBackend(
                    url=self.url, namespace=f"{self.ns}-results", use_namespace_prefix_keys=True
                )
            )
        )
        dramatiq.set_broker(self.broker)
        self.actors: dict[str, Any] = {
            name: dramatiq.actor(
                fn, actor_name=name, broker=self.broker, max_retries=0, store_results=True
            )
            for name, fn in (("noop", noop), ("sleep", sleep))
        }

    async def close(self) -> None:
        self.broker.close()

    async def enqueue(self, i: int, job: str) -> None:
        self.actors[job].send(i)

    async def work(self, stop: asyncio.Event) -> None:
        worker = dramatiq.Worker(self.broker, worker_threads=self.concurrency)
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
