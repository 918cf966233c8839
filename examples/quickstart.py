"""Quickstart: a few hundred jobs through a worker, on the embedded SQLite backend.

Run it from the repository root::

    python examples/quickstart.py            # enqueue 300 jobs, work them, show progress

The resize job does CPU work, so it runs with ``process=True``: in child
processes of the worker, while the worker's event loop stays free.

or keep a worker running and feed it from another shell::

    asyncq run examples.quickstart:app
    asyncq enqueue examples.quickstart:app resize '{"image": "cat.png", "width": 640}' --wait

Jobs are kept in ``./asyncq.db`` (set ASYNCQ_BACKEND to use another store).
"""

from __future__ import annotations

import random
import sys
import time
import zlib

import anyio
import msgspec

from asyncq import App

app = App("quickstart")


class Resize(msgspec.Struct):
    image: str
    width: int


class Resized(msgspec.Struct):
    image: str
    width: int
    size: int


@app.job(schema=Resize, name="resize", queue="images", timeout=10, max_attempts=3, process=True)
def resize(payload: Resize) -> Resized:
    """Make a thumbnail, an eighth of ``width`` wide, of a 4:3 image: CPU work, in a child process.

    The image is drawn from its name (no file needed); each thumbnail pixel
    averages four samples of the block of the image it covers.
    """
    seed = zlib.crc32(payload.image.encode())
    columns = max(1, payload.width // 8)
    rows = max(1, columns * 3 // 4)
    thumbnail = bytearray(columns * rows)
    for row in range(rows):
        for column in range(columns):
            total = 0
            for dy in (2, 6):
                for dx in (2, 6):
                    x, y = column * 8 + dx, row * 8 + dy
                    total += (x * x + y * 3 + seed) * 2654435761 % 255
            thumbnail[row * columns + column] = total // 4
    return Resized(payload.image, payload.width, len(thumbnail))


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
