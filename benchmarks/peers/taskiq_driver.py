"""taskiq with taskiq-redis: ``python -m benchmarks.peers.taskiq_driver SCENARIO ...``."""

from __future__ import annotations

import asyncio

from taskiq.api import run_receiver_task
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from ._driver import Peer, main
from ._harness import COUNTER


class TaskiqPeer(Peer):
    name = "taskiq"
    distribution = "taskiq"
    settings = (
        "RedisStreamBroker(url, queue_name=<run>, consumer_group_name=<run>) (acknowledged "
        "Redis streams) with RedisAsyncResultBackend(url, prefix_str=<run>, result_ex_time=3600); "
        "worker: taskiq.api.run_receiver_task(broker, max_async_tasks=concurrency); "
        "round trip: kiq() then wait_result(check_interval=0.005)"
    )
    no_batch = "no batch enqueue API (kiq() sends one message per call)"

    async def open(self) -> None:
        self.broker = RedisStreamBroker(
            self.url, queue_name=self.ns, consumer_group_name=self.ns
        ).with_result_backend(
            RedisAsyncResultBackend(self.url, prefix_str=self.ns, result_ex_time=3600)
        )

        async def noop(i: int) -> None:
            COUNTER.tick()

        async def sleep(i: int) -> None:
            await asyncio.sleep(0.05)
            COUNTER.tick()

        self.tasks = {
            "noop": self.broker.task(task_name="noop")(noop),
            "sleep": self.broker.task(task_name="sleep")(sleep),
        }
        await self.broker.startup()

    async def close(self) -> None:
        await self.broker.shutdown()

    async def enqueue(self, i: int, job: str) -> None:
        await self.tasks[job].kiq(i)

    async def work(self, stop: asyncio.Event) -> None:
        receiver = asyncio.ensure_future(
            run_receiver_task(self.broker, max_async_tasks=self.concurrency)
        )
        await stop.wait()
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)

    async def roundtrip(self, i: int) -> None:
        task = await self.tasks["noop"].kiq(i)
        result = await task.wait_result(check_interval=0.005, timeout=10)
        if result.is_err:
            raise RuntimeError(f"job failed: {result.error!r}")


if __name__ == "__main__":
    raise SystemExit(main(TaskiqPeer))
