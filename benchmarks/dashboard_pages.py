"""How long each dashboard page takes with 100,000 jobs in a queue, per store.

Run from the repository root (SQLite in a temporary file and Redis by default)::

    python -m benchmarks.dashboard_pages
    python -m benchmarks.dashboard_pages --n 20000 --repeat 5 sqlite redis://127.0.0.1:6379/0

For each store: ``--n`` jobs queued in one queue (events on), 200 dead ones in
another, one worker registered; then every page is requested ``--repeat``
times in this process through httpx's ASGI transport (no network, no
browser: the time is the dashboard's and the store's). Prints the median and
the slowest per page, in milliseconds.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import httpx
import msgspec

from asyncq import App, Reject
from asyncq.backends import from_url
from asyncq.backends.base import DROP
from asyncq.dashboard import dashboard
from asyncq.testing import run_until_idle

DEFAULT_STORES = ["sqlite", "redis://127.0.0.1:6379/0"]
BATCH = 1000


class Item(msgspec.Struct):
    n: int
    note: str = "a payload of a typical size, with a few fields"


def build(url: str) -> App:
    app = App("bench", backend=from_url(url), events=True)

    @app.job(schema=Item, name="work", queue="bulk")
    async def work(payload: Item) -> None:
        return None

    @app.job(schema=Item, name="fail", queue="failing", max_attempts=1)
    async def fail(payload: Item) -> None:
        raise Reject(f"item {payload.n} is refused")

    return app


async def measure(url: str, n: int, repeat: int) -> dict[str, list[float]]:
    app = build(url)
    timings: dict[str, list[float]] = {}
    async with app:
        work, fail = app.handlers["work"], app.handlers["fail"]
        await fail.enqueue_many([Item(i) for i in range(200)])
        await run_until_idle(app, queues=["failing"])  # 200 dead letters, a stopped worker
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            await work.enqueue_many([Item(i) for i in range(start, min(start + BATCH, n))])
        print(f"  {n:,} jobs enqueued in {time.perf_counter() - started:.1f} s")
        sample = (await app.admin.jobs(queue="bulk", limit=1, newest=True))[0].id
        middle = (await app.admin.jobs(queue="bulk", limit=1, after=sample, newest=True))[0].id
        oldest = (await app.admin.jobs(queue="bulk", limit=1))[0].id
        dead = (await app.admin.jobs(state="dead", limit=1))[0].id
        pages = {
            "overview": "/",
            "queue": "/queues/bulk",
            "queue, state=queued": "/queues/bulk?state=queued",
            "queue, name filter": "/queues/bulk?name=work",
            "queue, next page": f"/queues/bulk?after={middle}",
            "job (newest)": f"/jobs/{sample}",
            "job (oldest)": f"/jobs/{oldest}",
            "dead job": f"/jobs/{dead}",
            "workers": "/workers",
            "dead letters": "/dead",
            "overview (stream)": "/live?page=overview&once=1",
            "job timeline (newest)": f"/live?page=job&job={sample}&once=1",
            "job timeline (oldest)": f"/live?page=job&job={oldest}&once=1",
        }
        transport = httpx.ASGITransport(app=dashboard(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            await http.get("/")  # the session cookie, the templates compiled
            for name, path in pages.items():
                for _ in range(repeat):
                    started = time.perf_counter()
                    answer = await http.get(path)
                    timings.setdefault(name, []).append(time.perf_counter() - started)
                    assert answer.status_code == 200, (path, answer.status_code)
        drops = DROP.of(await app.backend_opened())
        if drops is not None and not url.startswith("sqlite"):
            await drops.drop()
    return timings


async def main(stores: list[str], n: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for store in stores:
            if store == "sqlite":
                url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            elif store.startswith("redis"):
                sep = "&" if "?" in store else "?"
                url = f"{store}{sep}namespace=bench_{uuid.uuid4().hex[:8]}"
            else:
                url = store
            print(f"{url.split('?')[0]}:")
            timings = await measure(url, n, repeat)
            print(f"  {'page':<24} {'median ms':>10} {'max ms':>8}")
            for name, values in timings.items():
                median = statistics.median(values) * 1000
                print(f"  {name:<24} {median:>10.1f} {max(values) * 1000:>8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="*", default=DEFAULT_STORES)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    logging.getLogger("asyncq").setLevel(logging.CRITICAL)  # the dead letters' lines
    anyio.run(main, options.stores, options.n, options.repeat)
