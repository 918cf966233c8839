"""SAQ on Redis or PostgreSQL: ``python -m benchmarks.peers.saq_driver SCENARIO ...``."""

from __future__ import annotations

import asyncio
from typing import Any

from saq import Queue, Worker

from ._driver import Peer, main, pg_url_in_schema
from ._harness import COUNTER


async def noop(ctx: dict[str, Any], *, i: int) -> None:
    COUNTER.tick()


async def sleep(ctx: dict[str, Any], *, i: int) -> None:
    await asyncio.sleep(0.05)
    COUNTER.tick()


class SaqPeer(Peer):
    name = "saq"
    distribution = "saq"
    settings = (
        "Queue.from_url(url, name=<run>) (PostgreSQL: tables in the run's schema); "
        "Worker(queue, functions, concurrency=concurrency); "
        "round trip: Queue.apply(timeout=10, poll_interval=0.005)"
    )
    no_batch = (
        "no batch enqueue API (Queue.batch() only groups aborts; enqueue is one job per call)"
    )

    queue: Queue

    async def open(self) -> None:
        url = self.url
        if url.startswith("postgres"):
            url = pg_url_in_schema(url, self.ns)
        self.queue = Queue.from_url(url, name=self.ns)
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def enqueue(self, i: int, job: str) -> None:
        if await self.queue.enqueue(job, i=i) is None:
            raise RuntimeError("saq did not enqueue the job")

    async def work(self, stop: asyncio.Event) -> None:
        worker = Worker(self.queue, functions=[noop, sleep], concurrency=self.concurrency)
        run = asyncio.ensure_future(worker.start())
        await stop.wait()
        await worker.stop()
        await asyncio.gather(run, return_exceptions=True)

    async def roundtrip(self, i: int) -> None:
        await self.queue.apply("noop", timeout=10, poll_interval=0.005, i=i)


if __name__ == "__main__":
    raise SystemExit(main(SaqPeer))
