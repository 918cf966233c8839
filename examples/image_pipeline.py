"""A flow: fetch an album, resize every image (fan-out), zip them (fan-in), then notify.

Run it from the repository root (memory backend, finishes in well under a second)::

    python examples/image_pipeline.py

The whole graph is stored in one atomic step with ``app.flow()``. Each resize
waits for the fetch; the zip waits for every resize and reads their results
with ``ctx.parent_results()``; the notification waits for the zip. A second
album has a broken image: its zip never runs (a parent died, so the zip is
dead with an error of kind ``dependency``), while its ``report`` job, enqueued
with ``after_failure="run"``, runs anyway and says which images failed.
"""

from __future__ import annotations

import logging

import anyio
import msgspec

from asyncq import App, JobContext, JobFailed, JobHandle, JobState, Reject

app = App("images", backend="memory://")


class Album(msgspec.Struct):
    name: str
    images: list[str]


class Resize(msgspec.Struct):
    image: str
    width: int


class Resized(msgspec.Struct):
    image: str
    size: int


class Zip(msgspec.Struct):
    album: str


class Zipped(msgspec.Struct):
    album: str
    files: list[str]
    size: int


@app.job(schema=Album, name="fetch", queue="images")
async def fetch(album: Album) -> int:
    return len(album.images)


@app.job(schema=Resize, name="resize", queue="images", max_attempts=1)
async def resize(payload: Resize) -> Resized:
    if payload.image.endswith(".broken"):
        raise Reject(f"{payload.image} is not an image")
    return Resized(payload.image, payload.width * 3)


@app.job(schema=Zip, name="zip", queue="images")
async def zip_album(payload: Zip, ctx: JobContext) -> Zipped:
    parts = await ctx.parent_results()  # {resize job id: Resized}, typed by the handler
    resized = [part for part in parts.values() if isinstance(part, Resized)]
    files = sorted(part.image for part in resized)
    return Zipped(payload.album, files, sum(part.size for part in resized))


@app.job(schema=Zip, name="notify", queue="images")
async def notify(payload: Zip, ctx: JobContext) -> str:
    (zipped,) = (await ctx.parent_results()).values()
    return f"album {zipped.album}: {len(zipped.files)} images, {zipped.size} bytes"


@app.job(schema=Zip, name="report", queue="images")
async def report(payload: Zip, ctx: JobContext) -> str:
    done = await ctx.parent_results()  # completed parents only
    failed = len(ctx.parents) - len(done)
    return f"album {payload.album}: {len(done)} resized, {failed} failed"


async def enqueue_album(album: Album) -> tuple[JobHandle[str], JobHandle[str], JobHandle[Zipped]]:
    """The album's graph, stored whole: fetch, N resizes, zip, notify; and a report."""
    flow = app.flow()
    fetched = flow.add(fetch, album)
    resized = [flow.add(resize, Resize(image, 640), after=[fetched]) for image in album.images]
    zipped = flow.add(zip_album, Zip(album.name), after=resized)
    told = flow.add(notify, Zip(album.name), after=[zipped])
    reported = flow.add(report, Zip(album.name), after=resized, after_failure="run")
    await flow.enqueue()
    return told.handle, reported.handle, zipped.handle


async def main() -> dict[str, str]:
    outcomes: dict[str, str] = {}
    async with app, app.worker(concurrency=8, queues=["images"]):
        holiday = await enqueue_album(Album("holiday", [f"img{i}.png" for i in range(5)]))
        broken = await enqueue_album(Album("broken", ["a.png", "b.broken", "c.png"]))
        told, reported, _ = holiday
        outcomes["holiday"] = await told.result(timeout=5)
        outcomes["holiday report"] = await reported.result(timeout=5)
        told, reported, zipped = broken
        outcomes["broken report"] = await reported.result(timeout=5)
        try:
            await zipped.result(timeout=5)
        except JobFailed as exc:
            error = exc.job.last_error
            assert error is not None
            outcomes["broken zip"] = f"{exc.job.state.value} ({error.kind.value})"
        info = await told.info()
        outcomes["broken notify"] = info.state.value
        assert info.state is JobState.DEAD
    for name, outcome in outcomes.items():
        print(f"{name}: {outcome}")
    return outcomes


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, format="  log %(levelname)s: %(message)s")
    anyio.run(main)
