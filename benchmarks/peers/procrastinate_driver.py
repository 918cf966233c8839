"""procrastinate on PostgreSQL: ``python -m benchmarks.peers.procrastinate_driver ...``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from procrastinate import App, PsycopgConnector

from ._driver import Peer, main, pg_url_in_schema
from ._harness import COUNTER


async def noop(i: int) -> None:
    COUNTER.tick()


async def sleep(i: int) -> None:
    await asyncio.sleep(0.05)
    COUNTER.tick()


class ProcrastinatePeer(Peer):
    name = "procrastinate"
    distribution = "procrastinate"
    settings = (
        "App(connector=PsycopgConnector(conninfo=<url, search_path=run schema>, min_size=4, "
        "max_size=20)), schema applied per run; tasks pass_context=False; "
        "run_worker_async(concurrency=concurrency, listen_notify=True (default), "
        "install_signal_handlers=False); batches: Task.batch_defer_async()"
    )
    no_roundtrip = (
        "no result backend or enqueue-and-wait API: a task's return value is not kept, "
        "a caller can only poll the job's status"
    )

    async def open(self) -> None:
        self.app = App(
            connector=PsycopgConnector(
                conninfo=pg_url_in_schema(self.url, self.ns), min_size=4, max_size=20
            )
        )
        self.tasks = {
            "noop": self.app.task(name="noop")(noop),
            "sleep": self.app.task(name="sleep")(sleep),
        }
        await self.app.open_async()
        # The scale scenario's worker processes find it applied already.
        installed = await self.app.connector.execute_query_one_async(
            "SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS ok"
        )
        if not installed["ok"]:
            await self.app.schema_manager.apply_schema_async()

    async def close(self) -> None:
        await self.app.close_async()

    async def enqueue(self, i: int, job: str) -> None:
        await self.tasks[job].defer_async(i=i)

    async def enqueue_many(self, items: Sequence[int], job: str) -> None:
        await self.tasks[job].batch_defer_async(*({"i": i} for i in items))

    async def work(self, stop: asyncio.Event) -> None:
        run = asyncio.ensure_future(
            self.app.run_worker_async(concurrency=self.concurrency, install_signal_handlers=False)
        )
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait([run, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if run.done():
            run.result()
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


if __name__ == "__main__":
    raise SystemExit(main(ProcrastinatePeer))
