"""PostgreSQL through the public API: transactional enqueue from a handler."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest

from asyncq import App, JobHandle, JobNotFound, JobState
from asyncq.backends.postgres import PostgresBackend

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


class Order(msgspec.Struct):
    order_id: str


@pytest.fixture
async def app(postgres_dsn: str) -> AsyncIterator[App]:
    backend = PostgresBackend.from_url(
        postgres_dsn, schema=f"t{uuid.uuid4().hex[:12]}", migrate=True
    )
    application = App("pg", backend=backend)
    try:
        yield application
    finally:
        await application.close()
        await backend.drop()


async def enqueue_then_roll_back(
    enqueue: Coroutine[Any, Any, JobHandle[str]], conn: asyncpg.Connection[Any]
) -> JobHandle[str]:
    transaction = conn.transaction()
    await transaction.start()
    try:
        return await enqueue
    finally:
        await transaction.rollback()


async def test_enqueue_in_the_callers_transaction(app: App, postgres_dsn: str) -> None:
    """The job exists if and only if the caller's transaction commits."""

    @app.job(schema=Order, name="ship")
    async def ship(payload: Order) -> str:
        return f"shipped {payload.order_id}"

    with anyio.fail_after(20):
        conn = await asyncpg.connect(postgres_dsn)
        try:
            async with conn.transaction():
                kept = await ship.enqueue(Order("o-1"), connection=conn)
                # Not visible outside the transaction before it commits.
                with pytest.raises(JobNotFound):
                    await kept.info()
            dropped = await enqueue_then_roll_back(
                ship.enqueue(Order("o-2"), connection=conn), conn
            )
        finally:
            await conn.close()

        assert (await kept.info()).state is JobState.QUEUED
        with pytest.raises(JobNotFound):
            await dropped.info()
        async with app.worker(concurrency=2, poll_interval=0.5):
            assert await kept.result(timeout=10) == "shipped o-1"
