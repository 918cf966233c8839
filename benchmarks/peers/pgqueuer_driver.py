"""PgQueuer on PostgreSQL: ``python -m benchmarks.peers.pgqueuer_driver SCENARIO ...``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import asyncpg
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
from pgqueuer.core.completion import CompletionWatcher

from ._driver import Peer, main
from ._harness import COUNTER

# Jobs fetched per dequeue query; completions are logged in buffers of the
# same size (or every 0.1 s), so a batch of 1 is what keeps a round trip short.
THROUGHPUT_BATCH = 50  # the largest run() allows for max_concurrent_tasks=100
LATENCY_BATCH = 1


async def noop(job: Job) -> None:
    COUNTER.tick()


async def sleep(job: Job) -> None:
    await asyncio.sleep(0.05)
    COUNTER.tick()


class PgQueuerPeer(Peer):
    name = "pgqueuer"
    distribution = "pgqueuer"
    settings = (
        "AsyncpgDriver(asyncpg.connect(url, server_settings={'search_path': <run schema>})), "
        "Queries.install() per run; QueueManager.run(batch_size=50, "
        "max_concurrent_tasks=concurrency) (batch_size=1 for the round trip); "
        "batches: Queries.enqueue() with lists; "
        "round trip: Queries.enqueue() then CompletionWatcher(debounce=1 ms).wait_for(job_id)"
    )

    async def _connect(self) -> AsyncpgDriver:
        connection = await asyncpg.connect(self.url, server_settings={"search_path": self.ns})
        return AsyncpgDriver(connection)

    async def open(self) -> None:
        self.driver = await self._connect()
        self.queries = Queries(self.driver)
        # The scale scenario's worker processes find it installed already.
        if not await self.queries.schema_is_installed():
            await self.queries.install()

    async def close(self) -> None:
        await self.driver._connection.close()

    async def enqueue(self, i: int, job: str) -> None:
        await self.queries.enqueue(job, str(i).encode())

    async def enqueue_many(self, items: Sequence[int], job: str) -> None:
        await self.queries.enqueue(
            [job] * len(items), [str(i).encode() for i in items], [0] * len(items)
        )

    async def work(self, stop: asyncio.Event) -> None:
        # The manager's own connection, as a worker process would have.
        driver = await self._connect()
        manager = QueueManager(Queries(driver))
        manager.entrypoint("noop")(noop)
        manager.entrypoint("sleep")(sleep)
        run = asyncio.ensure_future(
            manager.run(
                batch_size=LATENCY_BATCH if self.latency else THROUGHPUT_BATCH,
                max_concurrent_tasks=self.concurrency,
            )
        )
        waiter = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([run, waiter], return_when=asyncio.FIRST_COMPLETED)
            if run.done():
                run.result()
            manager.shutdown.set()
            await asyncio.wait_for(run, 30)
        finally:
            waiter.cancel()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            await driver._connection.close()

    async def roundtrip(self, i: int) -> None:
        if not hasattr(self, "watcher"):
            self.watcher = CompletionWatcher(
                self.driver, queries=self.queries, debounce=timedelta(milliseconds=1)
            )
            await self.watcher.__aenter__()
        (job_id,) = await self.queries.enqueue("noop", str(i).encode())
        status = await self.watcher.wait_for(job_id)
        if status != "successful":
            raise RuntimeError(f"job ended {status}")


if __name__ == "__main__":
    raise SystemExit(main(PgQueuerPeer))
