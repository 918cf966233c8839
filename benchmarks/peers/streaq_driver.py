"""streaq on Redis: ``python -m benchmarks.peers.streaq_driver SCENARIO ...``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio
from streaq import Worker

from ._driver import Peer, main
from ._harness import COUNTER


async def noop(i: int) -> None:
    COUNTER.tick()


async def sleep(i: int) -> None:
    await asyncio.sleep(0.05)
    COUNTER.tick()


class StreaqPeer(Peer):
    name = "streaq"
    distribution = "streaq"
    settings = (
        "Worker(redis_url=url, queue_name=<run>, concurrency=concurrency, handle_signals=False) "
        "run with run_async(); producers use their own Worker instance as a client "
        "(async with worker); batches: Worker.enqueue_many(); "
        "round trip: await task.enqueue(...) then Task.result(timeout=10)"
    )

    def _make(self) -> tuple[Worker[Any], dict[str, Any]]:
        worker: Worker[Any] = Worker(
            redis_url=self.url,
            queue_name=self.ns,
            concurrency=self.concurrency,
            handle_signals=False,
        )
        tasks = {"noop": worker.task(name="noop")(noop), "sleep": worker.task(name="sleep")(sleep)}
        return worker, tasks

    async def open(self) -> None:
        # coredis ties a connection pool to the task that opened it, so the
        # producer (this task) and the consumer (work()'s task) each have
        # their own Worker object, as separate processes would.
        self.client, self.tasks = self._make()
        self._stack = AsyncExitStack()
        await self._stack.enter_async_context(self.client)

    async def close(self) -> None:
        await self._stack.aclose()

    async def enqueue(self, i: int, job: str) -> None:
        await self.tasks[job].enqueue(i)

    async def enqueue_many(self, items: Sequence[int], job: str) -> None:
        task = self.tasks[job]
        await self.client.enqueue_many([task.enqueue(i) for i in items])

    async def work(self, stop: asyncio.Event) -> None:
        worker, _ = self._make()
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run_async)
            await stop.wait()
            tg.cancel_scope.cancel()

    async def roundtrip(self, i: int) -> None:
        task = await self.tasks["noop"].enqueue(i)
        result = await task.result(timeout=10)
        if not result.success:
            raise RuntimeError(f"job failed: {result!r}")


if __name__ == "__main__":
    raise SystemExit(main(StreaqPeer))
