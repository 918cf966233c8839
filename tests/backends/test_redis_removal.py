"""Removal on the Redis backend: everything a job owns goes, and the counts stay right.

``remove`` deletes with the ``delete_job`` function ``purge`` and ``prune``
use; these tests look at the keys themselves, on a server and on fakeredis.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import fakeredis
import pytest
import redis.asyncio as aioredis

from asyncq._records import JobState
from asyncq.backends.base import Retention
from asyncq.backends.redis import RedisBackend

from . import _records as r
from ._redis import opened

pytestmark = pytest.mark.anyio

BOUND = 20.0


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "fakeredis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[RedisBackend]:
    if request.param == "redis":
        client: Any = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    else:
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    backend = RedisBackend(
        client, namespace=f"t{uuid.uuid4().hex[:12]}", retention=Retention(max_completed=0)
    )
    try:
        async with opened(backend):
            yield backend
    finally:
        await client.aclose()


async def queue_keys(backend: RedisBackend) -> dict[str, Any]:
    """The keys left under the default queue's prefix, with their contents."""
    prefix = backend._prefix(r.QUEUE)
    client = backend._client
    found: dict[str, Any] = {}
    async for raw in client.scan_iter(match=prefix.replace("{", "[{]") + "*"):
        key = raw.decode()[len(prefix) :]
        kind = (await client.type(raw)).decode()
        if kind == "hash":
            found[key] = {k.decode(): v.decode() for k, v in (await client.hgetall(raw)).items()}
        elif kind == "zset":
            found[key] = [m.decode() for m in await client.zrange(raw, 0, -1)]
        else:
            found[key] = kind
    return found


async def test_remove_leaves_nothing_of_the_job_behind(backend: RedisBackend) -> None:
    with anyio.fail_after(BOUND):
        [done] = await backend.enqueue([r.job(key="done", result_ttl=3600.0)])
        [lease] = await backend.claim([r.QUEUE], 1, worker="w", lease_for=60.0)
        assert await backend.settle([r.completed(lease)]) == [True]
        [queued, later] = await backend.enqueue([r.job(key="q", priority=5), r.job(delay=3600)])
        # A job someone waits for is marked (``wt``); removing it tells the waiter.
        async with anyio.create_task_group() as tg:
            got: list[Any] = []

            async def wait() -> None:
                got.append(await backend.wait_finished(queued.id))

            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            removed = await backend.remove([done.id, queued.id, later.id])
        assert removed == [JobState.COMPLETED, JobState.QUEUED, JobState.SCHEDULED]
        assert got == [None]

        # The job event stream (ev) outlives its jobs: retention trims it.
        left = await queue_keys(backend)
        assert {k: v for k, v in left.items() if k not in ("n", "wake", "ev", "evcut")} == {}
        assert set(left["n"].values()) <= {"0"}
        for job in (done, queued, later):
            assert await backend._client.hget(backend._bucket(job.id), job.id) is None


async def test_a_cap_of_zero_prunes_every_completed_job(backend: RedisBackend) -> None:
    with anyio.fail_after(BOUND):
        [job] = await backend.enqueue([r.job(key="k", result_ttl=3600.0)])
        [lease] = await backend.claim([r.QUEUE], 1, worker="w", lease_for=60.0)
        assert await backend.settle([r.completed(lease)]) == [True]
        assert await backend.prune() == 1
        left = await queue_keys(backend)
        assert {k: v for k, v in left.items() if k not in ("n", "wake", "ev", "evcut")} == {}
        assert await backend._client.hget(backend._bucket(job.id), job.id) is None
