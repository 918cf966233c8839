"""The app of the dashboard's browser tests: they serve ``build()``, run ``dashboard_app:app``.

Its backend comes from ``ASYNCQ_BACKEND`` (the worker) or ``use_backend`` (the test).
"""

from __future__ import annotations

import anyio
import msgspec

from asyncq import App, JobContext, Reject


class Step(msgspec.Struct):
    n: int


class Gate(msgspec.Struct):
    path: str


class Nightly(msgspec.Struct):
    region: str = "eu"


def build(backend: str | None = None) -> App:
    """A new app with the jobs below (each test serves a fresh one)."""
    app = App("dashdemo", backend=backend, events=True)

    @app.job(schema=Step, name="step", queue="work", max_attempts=1)
    async def step(payload: Step, ctx: JobContext) -> dict[str, int]:
        await ctx.progress(0.5, detail={"stage": "halfway", "n": payload.n})
        await ctx.log(f"step {payload.n} ran")
        await anyio.sleep(0.05)
        return {"n": payload.n, "square": payload.n * payload.n}

    @app.job(schema=Gate, name="flaky", queue="work", max_attempts=1)
    async def flaky(payload: Gate) -> str:
        """Dead until the file ``path`` exists; then it completes (retried from the dashboard)."""
        if not await anyio.Path(payload.path).exists():
            msg = f"the gate {payload.path} is closed"
            raise RuntimeError(msg)
        return "opened"

    @app.job(schema=dict, name="echo", queue="mail", max_attempts=1)
    async def echo(payload: dict[str, object]) -> dict[str, object]:
        """Dead when the payload says ``reject``; else returns it."""
        if payload.get("reject"):
            raise Reject(str(payload["reject"]))
        return payload

    @app.cron("0 3 * * *", name="nightly-report")
    @app.job(schema=Nightly, name="report", queue="reports")
    async def report(payload: Nightly) -> str:
        return f"report for {payload.region}"

    return app


app = build()
