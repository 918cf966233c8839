"""``store_url_any``: a URL on every store, for tests that run their own event loops.

Synchronous: the tests that use it call ``asyncio.run`` themselves (several
times, or in threads), so the fixture cleans up in a loop of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncq.backends import from_url

__all__ = ["store_url_any"]


@pytest.fixture(
    params=[
        pytest.param("memory"),
        pytest.param("sqlite"),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def store_url_any(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL in a namespace of its own; the store's data is dropped afterwards."""
    kind = request.param
    if kind == "memory":
        yield "memory://"
        return
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    namespace = f"t{uuid.uuid4().hex[:12]}"
    if kind == "redis":
        url = f"{request.getfixturevalue('redis_url')}?namespace={namespace}"
    elif kind == "redis-cluster":
        from backends._redis_cluster import cluster_url

        url = f"{cluster_url(request.config)}&namespace={namespace}"
    else:
        url = f"{request.getfixturevalue('postgres_dsn')}?schema={namespace}&migrate=true"
    yield url

    async def drop() -> None:
        backend = from_url(url)
        await backend.open()
        await backend.drop()  # type: ignore[attr-defined]
        await backend.close()

    asyncio.run(drop())
