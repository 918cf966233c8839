"""One asyncq worker process for the ``scale`` and ``soak`` benchmarks.

Run from the repository root (the orchestrator does, N times)::

    python -m benchmarks.asyncq_worker --backend URL --namespace NS --concurrency 100

It speaks the protocol of ``benchmarks/peers/_harness.py``: ``ready`` once
connected, waits for ``go``, reports progress, and ends by itself when the
queue is empty (burst mode) or on ``stop`` (``--until-stopped``, for the soak,
whose producer keeps the queue fed). The jobs were enqueued by
``benchmarks.asyncq_bench``'s ``noop`` handler: same name, same schema.
"""

from __future__ import annotations

import argparse

import anyio

from asyncq import App
from asyncq.backends.base import Backend

from .asyncq_bench import DEFAULT_URLS, Noop, make_backend, run_on
from .peers._harness import COUNTER, WorkerSide


def make_app(backend: Backend) -> App:
    app = App("bench", backend=backend)

    @app.job(schema=Noop, name="noop", max_attempts=1, result_ttl=3600)
    async def noop(payload: Noop) -> None:
        COUNTER.tick()

    return app


async def run(args: argparse.Namespace) -> None:
    side = WorkerSide()
    if DEFAULT_URLS.get(args.backend, args.backend).startswith("memory"):
        msg = "worker processes need a backend they can share (sqlite, redis, postgres)"
        raise SystemExit(msg)
    app = make_app(make_backend(args.backend, args.namespace))
    async with app:
        await app.backend_opened()
        worker = app.make_worker(
            concurrency=args.concurrency,
            poll_interval=0.05,
            lease=60,
            burst=not args.until_stopped,
        )
        side.ready()
        await anyio.to_thread.run_sync(side.go.wait, abandon_on_cancel=True)
        side.start_reporter()
        async with anyio.create_task_group() as tg:

            async def stop_on_command() -> None:
                await anyio.to_thread.run_sync(side.stop.wait, abandon_on_cancel=True)
                worker.stop()

            tg.start_soon(stop_on_command)
            await worker.run()
            tg.cancel_scope.cancel()
    side.final()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.asyncq_worker", description=__doc__)
    parser.add_argument("--backend", required=True, help="sqlite, redis, postgres or a URL")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument(
        "--until-stopped", action="store_true", help="keep waiting for work until 'stop'"
    )
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args(argv)
    run_on(run, args, loop=args.loop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
