"""Dramatiq with ``async def`` actors: ``python -m benchmarks.peers.dramatiq_async_driver ...``.

The second common configuration of Dramatiq (see ``dramatiq_driver``): its
``AsyncIO`` middleware runs one event loop per worker process and the actors
are coroutines. Each worker thread hands its message's coroutine to that loop
and waits for it, so the thread count is still the concurrency: one thread
per job slot, as the driver's other scenarios have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

from dramatiq.middleware.asyncio import AsyncIO

from ._driver import main
from ._harness import COUNTER
from .dramatiq_driver import DramatiqPeer


async def noop(i: int) -> None:
    COUNTER.tick()  # every async actor runs on the middleware's one loop thread


async def sleep(i: int) -> None:
    await asyncio.sleep(0.05)
    COUNTER.tick()


class DramatiqAsyncPeer(DramatiqPeer):
    name = "dramatiq-async"
    settings = (
        "RedisBroker(url=url, namespace=<run>) with the AsyncIO middleware; async def actors, "
        "max_retries=0; Worker(broker, worker_threads=concurrency) (each thread waits on its "
        "coroutine); round trip only: Results(RedisBackend) and store_results=True"
    )

    functions: ClassVar[dict[str, Callable[..., Any]]] = {"noop": noop, "sleep": sleep}

    def _middleware(self) -> None:
        self.broker.add_middleware(AsyncIO())


if __name__ == "__main__":
    raise SystemExit(main(DramatiqAsyncPeer))
