"""Quickstart: a few hundred jobs through a worker, on the embedded SQLite backend.

Run it from the repository root::

    python examples/quickstart.py            # enqueue 300 jobs, work them, show progress

or keep a worker running and feed it from another shell::

    asyncq run examples.quickstart:app
    asyncq enqueue examples.quickstart:app resize '{"image": "cat.png", "width": 640}' --wait

Jobs are kept in ``./asyncq.db`` (set ASYNCQ_BACKEND to use another store).
"""

from __future__ import annotations

import random
import sys
import time

import anyio
import msgspec

from asyncq import App, JobContext

app = App("quickstart")


class Resize(msgspec.Struct):
    image: str
    width: int


class Resized(msgspec.Struct):
    image: str
    width: int
    size: int


@app.job(schema=Resize, name="resize", queue="images", timeout=10, max_attempts=3)
async def resize(payload: Resize, ctx: JobContext) -> Resized:
    """Pretend to resize an image: a few milliseconds of awaited I/O."""
    await anyio.sleep(random.uniform(0.005, 0.05))
    ctx.logger.info("resized %s to %dpx", payload.image, payload.width)
    return Resized(payload.image, payload.width, payload.width * payload.width // 3)


async def main(count: int = 300) -> Resized:
    """Enqueue ``count`` jobs in one batch, work them 50 at a time, then one request/response."""
    async with app:
        started = time.perf_counter()
        handles = await resize.enqueue_many(
            [Resize(f"photo-{i:03}.jpg", random.choice([320, 640, 1280])) for i in range(count)]
        )
        print(f"enqueued {len(handles)} resize jobs into {app.backend.url}")
        async with app.worker(concurrency=50):
            step = max(1, count // 10)
            for done, handle in enumerate(handles, 1):
                await handle.result(timeout=60)
                if done % step == 0 or done == count:
                    bar = "#" * (done * 30 // count)
                    print(f"\r[{bar:<30}] {done}/{count} done", end="", flush=True)
            elapsed = time.perf_counter() - started
            print(f"\nworked {count} jobs in {elapsed:.2f}s ({count / elapsed:,.0f} jobs/s)")
            result = await resize.enqueue_and_wait(Resize("cat.png", 640), timeout=10)
            print(f"request/response: {result}")
            return result


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 300)
