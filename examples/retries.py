"""Retries, timeouts and dead letters: what happens when handlers fail, and how to recover.

Run it from the repository root (memory backend, finishes in about a second)::

    python examples/retries.py

It shows a flaky call that succeeds on its third attempt, a handler that asks
for a retry after a delay, one that rejects bad input straight to the dead
letters, a timeout, and an operator retrying the dead jobs once the bug is fixed.
"""

from __future__ import annotations

import logging

import anyio
import msgspec

from asyncq import App, JobContext, JobFailed, JobState, Reject, Retry, RetryPolicy

app = App("retries", backend="memory://")


class Charge(msgspec.Struct):
    order_id: str
    cents: int


# Fails twice, then works: exponential backoff from 10 ms, capped, jittered.
@app.job(
    schema=Charge,
    name="charge",
    max_attempts=5,
    retry=RetryPolicy.exponential(0.01, cap=0.1),
    retry_on=(ConnectionError,),
)
async def charge(payload: Charge, ctx: JobContext) -> str:
    if ctx.attempt < 3:
        raise ConnectionError(f"payment gateway timed out (attempt {ctx.attempt})")
    return f"charged {payload.cents} for {payload.order_id}"


@app.job(schema=Charge, name="rate_limited", max_attempts=3)
async def rate_limited(payload: Charge, ctx: JobContext) -> str:
    if ctx.attempt == 1:
        raise Retry("429 from the gateway", delay=0.05)  # the server said when
    return "accepted"


BROKEN = {"enabled": True}


@app.job(schema=Charge, name="validate", max_attempts=3, retry=RetryPolicy.fixed(0.01))
async def validate(payload: Charge) -> str:
    if payload.cents <= 0:
        raise Reject(f"order {payload.order_id}: amount must be positive")  # no retry helps
    if BROKEN["enabled"]:
        raise KeyError("currency")  # a bug: fails every attempt until fixed
    return "valid"


@app.job(schema=Charge, name="slow", timeout=0.05, max_attempts=2, retry=RetryPolicy.fixed(0.01))
async def slow(payload: Charge) -> None:
    await anyio.sleep(10)  # cancelled by the timeout on every attempt


async def main() -> dict[str, str]:
    outcomes: dict[str, str] = {}
    BROKEN["enabled"] = True
    async with app, app.worker(concurrency=10, heartbeat=0.05):
        outcomes["charge"] = await charge.enqueue_and_wait(Charge("o-1", 500), timeout=5)
        outcomes["rate_limited"] = await rate_limited.enqueue_and_wait(Charge("o-2", 1), timeout=5)
        for handler, payload in (
            (validate, Charge("o-3", -5)),
            (validate, Charge("o-4", 5)),
            (slow, Charge("o-5", 5)),
        ):
            handle = await handler.enqueue(payload)
            try:
                await handle.result(timeout=5)
            except JobFailed as exc:
                print(f"dead: {exc}")
                for error in exc.job.errors:
                    print(f"  attempt {error.attempt}: {error.kind.value}: {error.one_line()}")
                outcomes[payload.order_id] = exc.job.state.value

        # The bug is fixed and deployed: an operator retries the dead letters.
        BROKEN["enabled"] = False
        dead = await app.admin.jobs(state=JobState.DEAD, name="validate")
        retried = await app.admin.retry([job.id for job in dead])
        print(f"retried {len(retried)} dead job(s)")
        for job_id in retried:
            try:
                outcomes[f"retried {job_id[-6:]}"] = await app.get_job(job_id).result(timeout=5)
            except JobFailed as exc:  # the rejected one fails again: its input is still bad
                outcomes[f"retried {job_id[-6:]}"] = exc.job.state.value
    for name, outcome in outcomes.items():
        print(f"{name}: {outcome}")
    return outcomes


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="  log %(levelname)s: %(message)s")
    anyio.run(main)
