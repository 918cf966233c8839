"""docs/fastapi.md's test, as a user writes it: the plugin's ``jobs`` fixture and ASGITransport.

Run by tests/test_pytest_plugin.py under pytest-asyncio (auto mode), with
``ASYNCQ_INLINE_WORKER=0``: the test, not a worker in the lifespan, runs the jobs.
"""

from __future__ import annotations

import httpx
import pytest
from examples import fastapi_service as service

from asyncq import App


@pytest.fixture
def asyncq_app() -> App:
    return service.jobs


async def test_charge_endpoint(jobs) -> None:
    transport = httpx.ASGITransport(app=service.api)
    async with (
        service.lifespan(service.api),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        answer = await client.post("/orders/o-1/charge", params={"cents": 500})
        assert answer.status_code == 202
        jobs.assert_enqueued(
            service.charge, payload=service.Charge(order_id="o-1", cents=500), count=1
        )
        assert await jobs.run_until_idle() == 1
        status = await client.get(f"/jobs/{answer.json()['job']}")
        assert status.json() == {"state": "completed", "attempts": 1}
