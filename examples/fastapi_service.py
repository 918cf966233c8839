"""FastAPI and asyncq: enqueue from endpoints, a request/response endpoint, Pydantic payloads.

Run it (a worker inside the web process, handy in development)::

    pip install 'asyncq[pydantic]' fastapi uvicorn
    ASYNCQ_BACKEND=redis://127.0.0.1:6379/0 uvicorn examples.fastapi_service:api

In production, run the web process with ``ASYNCQ_INLINE_WORKER=0`` and the
workers apart: ``asyncq run examples.fastapi_service:jobs``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from asyncq import App, JobNotFound

jobs = App("shop-api", backend=os.environ.get("ASYNCQ_BACKEND", "memory://"))


class Charge(BaseModel):
    order_id: str
    cents: int = Field(gt=0)


class Receipt(BaseModel):
    order_id: str
    charged: int


class Quote(BaseModel):
    items: list[int] = Field(min_length=1)


@jobs.job(schema=Charge, name="shop.charge", queue="payments")
async def charge(payload: Charge) -> Receipt:
    return Receipt(order_id=payload.order_id, charged=payload.cents)


@jobs.job(schema=Quote, name="shop.quote")
async def quote(payload: Quote) -> int:
    return sum(payload.items)


@asynccontextmanager
async def lifespan(api: FastAPI) -> AsyncIterator[None]:
    """Open the store with the web app; run a worker in-process unless told not to."""
    async with jobs:
        if os.environ.get("ASYNCQ_INLINE_WORKER", "1") == "1":
            async with jobs.worker(concurrency=8):
                yield
        else:
            yield


api = FastAPI(lifespan=lifespan)


@api.post("/orders/{order_id}/charge", status_code=202)
async def charge_order(order_id: str, cents: int = Query(gt=0)) -> dict[str, str | bool]:
    """Enqueue and answer at once; the key makes a retried request harmless."""
    handle = await charge.enqueue(Charge(order_id=order_id, cents=cents), key=order_id)
    return {"job": handle.id, "created": handle.created}


@api.get("/jobs/{job_id}")
async def job_status(job_id: str) -> dict[str, object]:
    try:
        info = await charge.get_job(job_id).info()
    except JobNotFound:
        raise HTTPException(404, f"no job {job_id}") from None
    return {"state": info.state.value, "attempts": info.attempts}


@api.post("/quotes")
async def make_quote(body: Quote) -> dict[str, int]:
    """Request/response: wait for the worker's answer, at most 5 s."""
    try:
        total = await quote.enqueue_and_wait(body, timeout=5)
    except TimeoutError:
        raise HTTPException(504, "no worker answered in time") from None
    return {"total": total}
