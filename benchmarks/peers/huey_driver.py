"""Huey on Redis: ``python -m benchmarks.peers.huey_driver SCENARIO ...``.

Huey is synchronous (it refuses ``async def`` tasks): calling a task enqueues
it and ``Result.get()`` blocks; both are called here from the driver's event
loop (nothing else runs on it meanwhile). The consumer runs in this process:
``Consumer.start()`` starts its worker threads and scheduler and returns.

Configuration, after Huey's documentation (the consumer guide's worker types):

- ``RedisHuey`` with its default blocking dequeue (BRPOP; the consumer's
  polling back-off only applies to non-blocking storages).
- Thread workers (``-k thread``, the default type), ``workers`` = the
  scenario's concurrency: the guide recommends threads (or greenlets) for
  I/O-bound tasks and processes for CPU-bound ones; greenlets need gevent's
  monkey-patching of the whole process, and processes would run the jobs
  where this harness's one-process drains cannot count them (``scale`` is the
  multi-process comparison).
- ``periodic=False``: no periodic tasks, so no scheduler work.
- Results: ``results=False`` except in the round trip, which needs the value;
  there ``notify_result=True``, Huey's option to wake a waiting
  ``Result.get(blocking=True)`` by BLPOP instead of its default polling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from huey import RedisHuey
from huey.consumer import Consumer

from ._driver import Peer, main
from ._harness import COUNTER


def noop(i: int) -> int:
    COUNTER.tick_locked()
    return i


def sleep(i: int) -> None:
    time.sleep(0.05)
    COUNTER.tick_locked()


class HueyPeer(Peer):
    name = "huey"
    distribution = "huey"
    settings = (
        "RedisHuey(<run>, url=url, clean_name=False) with its blocking dequeue, "
        "results=False except the round trip; consumer: create_consumer(workers=concurrency, "
        "worker_type='thread', periodic=False) started in this process; round trip: "
        "notify_result=True, task() then Result.get(blocking=True, timeout=10)"
    )
    no_batch = "no batch enqueue API (calling a task enqueues one message)"

    async def open(self) -> None:
        roundtrip = self.scenario == "roundtrip"
        self.huey = RedisHuey(
            self.ns,
            url=self.url,
            clean_name=False,
            results=roundtrip,
            notify_result=roundtrip,
        )
        self.tasks: dict[str, Any] = {
            "noop": self.huey.task(name="noop")(noop),
            "sleep": self.huey.task(name="sleep")(sleep),
        }
        logging.getLogger("huey").setLevel(logging.WARNING)

    async def close(self) -> None:
        self.huey.storage.conn.close()

    async def enqueue(self, i: int, job: str) -> None:
        self.tasks[job](i)

    async def work(self, stop: asyncio.Event) -> None:
        consumer: Consumer = self.huey.create_consumer(
            workers=self.concurrency, worker_type="thread", periodic=False
        )
        consumer.start()  # threads; it also sets SIGINT/SIGTERM handlers (main thread)
        try:
            await stop.wait()
        finally:
            await asyncio.get_running_loop().run_in_executor(None, consumer.stop, True)

    async def roundtrip(self, i: int) -> None:
        if self.tasks["noop"](i).get(blocking=True, timeout=10) != i:
            raise RuntimeError("huey returned another value")


if __name__ == "__main__":
    raise SystemExit(main(HueyPeer))
