"""Given (a pytest plugin): the reader's ``client`` fixture, a client of their web service.

docs/testing.md's test posts to ``/checkout`` through it (``shop/web.py``).
"""

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from shop.web import service


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=service)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        yield client
