"""arq on Redis: ``python -m benchmarks.peers.arq_driver SCENARIO ...`` (see _driver)."""

from __future__ import annotations

import asyncio
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker

from ._driver import Peer, main
from ._harness import COUNTER


async def noop(ctx: dict[str, Any], i: int) -> None:
    COUNTER.tick()


async def sleep(ctx: dict[str, Any], i: int) -> None:
    await asyncio.sleep(0.05)
    COUNTER.tick()


class ArqPeer(Peer):
    name = "arq"
    distribution = "arq"
    settings = (
        "Worker(max_jobs=concurrency, poll_delay=0.01, keep_result=3600, handle_signals=False); "
        "Job.result(poll_delay=0.005)"
    )
    no_batch = "no batch enqueue API (enqueue_job is one job per call)"

    pool: ArqRedis

    @property
    def queue(self) -> str:
        return f"{self.ns}:queue"

    async def open(self) -> None:
        self.pool = await create_pool(
            RedisSettings.from_dsn(self.url), default_queue_name=self.queue
        )

    async def close(self) -> None:
        await self.pool.aclose()

    def _job_id(self, i: int) -> str:
        # arq's job and result keys are global ("arq:job:<id>"): the run's
        # namespace in the id lets the runner delete them afterwards.
        return f"{self.ns}:{i}"

    async def enqueue(self, i: int, job: str) -> None:
        if await self.pool.enqueue_job(job, i, _job_id=self._job_id(i)) is None:
            msg = f"arq refused job id {self._job_id(i)}: not a fresh namespace"
            raise RuntimeError(msg)

    async def work(self, stop: asyncio.Event) -> None:
        worker = Worker(
            functions=[noop, sleep],
            redis_pool=self.pool,
            queue_name=self.queue,
            max_jobs=self.concurrency,
            poll_delay=0.01,
            keep_result=3600,
            handle_signals=False,
        )
        main = asyncio.ensure_future(worker.main())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([main, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if main.done():
            main.result()
        main.cancel()
        await asyncio.gather(main, return_exceptions=True)
        # close() would close the shared pool too; the tasks it waits for are done.
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)

    async def roundtrip(self, i: int) -> None:
        job = await self.pool.enqueue_job("noop", i, _job_id=f"{self.ns}:rt:{i}")
        assert job is not None
        await job.result(timeout=10, poll_delay=0.005)


if __name__ == "__main__":
    raise SystemExit(main(ArqPeer))
