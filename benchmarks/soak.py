"""asyncq's soak: N no-op jobs through one worker process, its RSS sampled.

``python -m benchmarks --backend redis --scenario soak --soak-n 1000000``

This process is the producer: it keeps at most ``BACKLOG`` jobs waiting
(batches of 1,000), so the worker never runs dry and the backend never holds
the whole N at once. One ``benchmarks.asyncq_worker --until-stopped`` process
runs them; its resident set size is read from /proc every ``SAMPLE_EVERY``
seconds. Flat memory means the RSS after the warm-up (10% of N) and at the
end stay close.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from .asyncq_bench import Noop, make_app, make_backend, run_on
from .peers._harness import current_rss_mb
from .scale import REPO, cleanup, new_namespace, worker_argv

BATCH = 1000
BACKLOG = 20_000
SAMPLE_EVERY = 1.0


class _Progress:
    def __init__(self) -> None:
        self.done = 0
        self.last = 0.0
        self.ready = anyio.Event()
        self.final: dict[str, Any] | None = None
        self.ended = anyio.Event()
        self.target = 0
        self.reached = anyio.Event()


async def _read(process: Process, progress: _Progress) -> None:
    assert process.stdout is not None
    lines = BufferedByteReceiveStream(process.stdout)
    try:
        while True:
            event = json.loads(await lines.receive_until(b"\n", 1 << 16))
            if event["event"] == "ready":
                progress.ready.set()
            elif event["event"] in ("progress", "final"):
                progress.done, progress.last = event["done"], event["last"]
                if progress.done >= progress.target:
                    progress.reached.set()
                if event["event"] == "final":
                    progress.final = event
    except (anyio.EndOfStream, anyio.IncompleteRead):
        pass
    finally:
        progress.ended.set()


async def _soak(url: str, namespace: str, n: int, loop: str) -> dict[str, Any]:
    app, noop, _ = make_app(make_backend(url, namespace))
    progress = _Progress()
    progress.target = n
    samples: list[tuple[float, int, float]] = []
    async with (
        app,
        await anyio.open_process(
            worker_argv(url, namespace, 100, "--until-stopped", loop=loop),
            cwd=os.fspath(REPO),
            stderr=None,
        ) as process,
    ):
        assert process.stdin is not None
        async with anyio.create_task_group() as tg:
            tg.start_soon(_read, process, progress)
            with anyio.fail_after(60):
                await progress.ready.wait()
            started = time.time()
            await process.stdin.send(b"go\n")

            async def sample() -> None:
                while True:
                    rss = current_rss_mb(process.pid)
                    samples.append((round(time.time() - started, 1), progress.done, rss))
                    await anyio.sleep(SAMPLE_EVERY)

            tg.start_soon(sample)
            enqueued = 0
            while enqueued < n:
                if progress.ended.is_set():
                    msg = f"the worker ended after {progress.done} jobs"
                    raise RuntimeError(msg)
                if enqueued - progress.done >= BACKLOG:
                    await anyio.sleep(0.01)
                    continue
                count = min(BATCH, n - enqueued)
                await noop.enqueue_many([Noop(enqueued + i) for i in range(count)])
                enqueued += count
            async with anyio.create_task_group() as until:

                async def first(event: anyio.Event) -> None:
                    await event.wait()
                    until.cancel_scope.cancel()

                until.start_soon(first, progress.reached)
                until.start_soon(first, progress.ended)
            await process.stdin.send(b"stop\n")
            with anyio.fail_after(60):
                await progress.ended.wait()
            tg.cancel_scope.cancel()
    if progress.done != n or progress.final is None:
        msg = f"soak finished with {progress.done} of {n} jobs done"
        raise RuntimeError(msg)
    seconds = progress.last - started
    after_warmup = next((rss for _, done, rss in samples if done >= n // 10), samples[-1][2])
    return {
        "jobs_per_s": n / seconds,
        "seconds": seconds,
        "n": n,
        "rss_mb_after_10pct": after_warmup,
        "rss_mb_end": samples[-1][2],
        "rss_mb_max": max(rss for _, _, rss in samples),
        "peak_rss_mb": progress.final["peak_rss_mb"],
        # (seconds since go, jobs done, RSS MB), one per SAMPLE_EVERY
        "samples": samples,
    }


def scenario_soak(url: str, n: int, loop: str = "asyncio") -> dict[str, Any]:
    namespace = new_namespace()
    try:
        return run_on(_soak, url, namespace, n, loop, loop=loop)
    finally:
        cleanup(url, namespace)
