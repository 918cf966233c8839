"""How long a cancel of a running job takes to reach its handler, per store.

Run from the repository root (the stores of the test suite by default)::

    python -m benchmarks.cancel_latency
    python -m benchmarks.cancel_latency --n 20 redis://127.0.0.1:6379/0 postgresql://127.0.0.1/test

For each store URL a worker runs in this process with a 30 s lease and a
10 s heartbeat, so a cancel seen sooner came by notice. ``--n`` times: a job
starts and awaits an event that never fires; the time is from just before
``cancel`` is called to the handler's cancel scope firing. Prints the median,
the fastest and the slowest per store, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import anyio
import msgspec

from asyncq import App
from asyncq.backends import from_url
from asyncq.backends.base import DROP

DEFAULT_URLS = ["redis://127.0.0.1:6379/0", "postgresql://127.0.0.1:5432/test"]


class Nothing(msgspec.Struct):
    n: int = 0


async def measure(url: str, n: int) -> list[float]:
    """The latencies of ``n`` cancels on the store at ``url``, in seconds."""
    namespace = f"bench_{uuid.uuid4().hex[:8]}"
    options = {"schema": namespace, "migrate": True} if url.startswith("postgres") else {}
    if url.startswith("redis"):
        options = {"namespace": namespace}
    backend = from_url(url, **options)
    app = App("cancel-latency", backend=backend)
    started = anyio.Event()
    stopped = anyio.Event()
    latencies: list[float] = []
    asked = 0.0

    @app.job(schema=Nothing, name="waits")
    async def waits(payload: Nothing) -> None:
        started.set()
        try:
            await anyio.Event().wait()
        finally:
            latencies.append(time.perf_counter() - asked)
            stopped.set()

    try:
        async with app, app.worker(lease=30, heartbeat=10):
            for _ in range(n):
                started, stopped = anyio.Event(), anyio.Event()
                handle = await waits.enqueue(Nothing())
                with anyio.fail_after(5):
                    await started.wait()
                asked = time.perf_counter()
                await handle.cancel()
                with anyio.fail_after(15):
                    await stopped.wait()
    finally:
        if (drops := DROP.of(backend)) is not None:
            await drops.drop()
    return latencies


async def main(urls: list[str], n: int) -> None:
    for url in urls:
        got = await measure(url, n)
        ms = sorted(x * 1000 for x in got)
        print(
            f"{url}: median {statistics.median(ms):.1f} ms, "
            f"min {ms[0]:.1f} ms, max {ms[-1]:.1f} ms ({len(ms)} cancels)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="*", default=DEFAULT_URLS)
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    anyio.run(main, args.urls, args.n)
