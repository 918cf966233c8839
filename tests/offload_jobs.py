"""Process handlers for tests/test_offload.py.

They live at the top level of a module of their own so that a worker's child
processes can import them by name; each test includes them in an app of its
own (``App(jobs=...)``).
"""

from __future__ import annotations

import os
import time

import anyio.lowlevel
import msgspec

from asyncq import App, JobContext, RetryPolicy

FAST_RETRY = RetryPolicy.fixed(0.01)

jobs = App("offload-jobs", telemetry=False)


class Work(msgspec.Struct):
    n: int
    spin: float = 0.0  # seconds of CPU to burn


class Total(msgspec.Struct):
    total: int
    pid: int


def burn(seconds: float) -> None:
    """Keep a CPU busy for ``seconds`` (no sleeping: the GIL and the core stay taken)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))


@jobs.job(schema=Work, name="crunch", process=True)
def crunch(payload: Work, ctx: JobContext) -> Total:
    burn(payload.spin)
    ctx.from_thread(ctx.progress, 0.5)
    return Total(sum(range(payload.n)), os.getpid())


@jobs.job(schema=Work, name="crunch_async", process=True)
async def crunch_async(payload: Work, ctx: JobContext) -> Total:
    await ctx.progress(0.5)
    await anyio.lowlevel.checkpoint()
    return Total(sum(range(payload.n)) + ctx.attempt, os.getpid())


@jobs.job(schema=Work, name="stuck", process=True, timeout=1.0, max_attempts=2, retry=FAST_RETRY)
def stuck(payload: Work, ctx: JobContext) -> Total:
    if ctx.attempt == 1:
        time.sleep(60)  # killed at its deadline
    return Total(payload.n, os.getpid())


@jobs.job(schema=Work, name="dies", process=True, max_attempts=2, retry=FAST_RETRY)
def dies(payload: Work, ctx: JobContext) -> Total:
    if ctx.attempt == 1:
        os._exit(3)
    return Total(payload.n, os.getpid())


@jobs.job(schema=Work, name="fails", process=True, max_attempts=3, dead_on=(KeyError,))
def fails(payload: Work) -> Total:
    raise KeyError(f"no size {payload.n}")


@jobs.job(schema=Work, name="reports", process=True)
def reports(payload: Work, ctx: JobContext) -> Total:
    """Report progress (the test's sign that it runs), then sleep ``spin`` seconds."""
    ctx.from_thread(ctx.progress, 0.1)
    time.sleep(payload.spin)
    return Total(payload.n, os.getpid())


@jobs.job(schema=Work, name="slow", process=True)
def slow(payload: Work) -> Total:
    time.sleep(payload.spin)
    return Total(payload.n, os.getpid())
