"""Starlette and asyncq: msgspec payloads, a lifespan that opens the store, request/response.

The same shape fits Litestar and any ASGI framework with a lifespan: open the
app (``async with jobs``) for the life of the web process, enqueue from the
endpoints. Run it (a worker inside the web process, handy in development)::

    pip install asyncq starlette uvicorn
    uvicorn examples.starlette_service:web

In production, run the web process with ``ASYNCQ_INLINE_WORKER=0`` and the
workers apart: ``asyncq run examples.starlette_service:jobs``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asyncq import App, JobNotFound

jobs = App("thumbnails", backend=os.environ.get("ASYNCQ_BACKEND", "memory://"))


class Thumbnail(msgspec.Struct):
    image: str
    width: int


class Made(msgspec.Struct):
    path: str
    width: int


@jobs.job(schema=Thumbnail, name="thumbnails.make", queue="images")
async def make_thumbnail(payload: Thumbnail) -> Made:
    return Made(path=f"/thumbs/{payload.width}/{payload.image}", width=payload.width)


@asynccontextmanager
async def lifespan(web: Starlette) -> AsyncIterator[None]:
    """Open the store with the web app; run a worker in-process unless told not to."""
    async with jobs:
        if os.environ.get("ASYNCQ_INLINE_WORKER", "1") == "1":
            async with jobs.worker(concurrency=8):
                yield
        else:
            yield


async def request_thumbnail(request: Request) -> JSONResponse:
    """Enqueue and answer 202 at once; a body the schema refuses is a 422 naming the field."""
    try:
        payload = msgspec.json.decode(await request.body(), type=Thumbnail)
    except msgspec.ValidationError as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)
    handle = await make_thumbnail.enqueue(payload)
    return JSONResponse({"job": handle.id}, status_code=202)


async def thumbnail_now(request: Request) -> JSONResponse:
    """Request/response: wait for the worker's answer, at most 5 s."""
    try:
        payload = msgspec.json.decode(await request.body(), type=Thumbnail)
    except msgspec.ValidationError as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)
    try:
        made = await make_thumbnail.enqueue_and_wait(payload, timeout=5)
    except TimeoutError:
        return JSONResponse({"error": "no worker answered in time"}, status_code=504)
    return JSONResponse(msgspec.to_builtins(made))


async def job_status(request: Request) -> JSONResponse:
    job_id = request.path_params["job_id"]
    try:
        info = await make_thumbnail.get_job(job_id).info()
    except JobNotFound:
        return JSONResponse({"error": f"no job {job_id}"}, status_code=404)
    return JSONResponse({"state": info.state.value, "attempts": info.attempts})


web = Starlette(
    routes=[
        Route("/thumbnails", request_thumbnail, methods=["POST"]),
        Route("/thumbnails/now", thumbnail_now, methods=["POST"]),
        Route("/jobs/{job_id}", job_status),
    ],
    lifespan=lifespan,
)
