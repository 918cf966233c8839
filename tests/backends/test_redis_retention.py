"""Retention on the Redis backend: ``prune`` deletes what every store's rule says.

The rule is the kit's (``_common.prunable``): a completed job with a
``result_ttl`` goes when it passes; any other finished job once it finished
more than the ``Retention`` of its state ago; ``None`` keeps it. Time is the
server's: a retention of 0 seconds prunes every finished job at once, and a
job is made older by moving its ``finished_at`` back, as time would.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import fakeredis
import pytest
import redis.asyncio as aioredis
from msgspec.structs import replace

from asyncq._records import Gate, JobRecord, JobState
from asyncq.backends.base import Retention
from asyncq.backends.redis import RedisBackend, admin

from . import _records as r

pytestmark = pytest.mark.anyio

BOUND = 20.0
HOUR = 3600.0
DROP_ALL = Retention(completed=0.0, dead=0.0, cancelled=0.0)
KEEP_ALL = Retention(completed=None, dead=None, cancelled=None)

Make = Callable[..., RedisBackend]


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "fakeredis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Backends on one namespace of one server, each with the retention it is given."""
    namespace = f"t{uuid.uuid4().hex[:12]}"
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        client: Any = aioredis.Redis.from_url(url)
    else:
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    made: list[RedisBackend] = []

    def make(**options: Any) -> RedisBackend:
        made.append(RedisBackend(client, namespace=namespace, **options))
        return made[-1]

    try:
        yield make
    finally:
        for backend in made:
            await backend.close()
        if made:
            await made[0].drop()
        await client.aclose()


async def finish(backend: RedisBackend, ending: str, **fields: Any) -> JobRecord:
    [stored] = await backend.enqueue([r.job(**fields)])
    [lease] = await backend.claim([stored.queue], 1, worker="w", lease_for=60.0)
    outcome = {"completed": r.completed, "dead": r.dead, "cancelled": r.cancelled}[ending](lease)
    assert await backend.settle([outcome]) == [True]
    job = await backend.get(stored.id)
    if job is None:  # a result that expired at once: hidden, not deleted yet
        assert fields.get("result_ttl") == 0.0
        return stored
    assert job.state is JobState(ending)
    return job


async def age(backend: RedisBackend, job: JobRecord, seconds: float) -> None:
    """Make ``job`` finished ``seconds`` earlier, as if that time had passed."""
    prefix = backend._prefix(job.queue)
    client = backend._client
    finished = float(await client.hget(f"{prefix}j:{job.id}", "fin")) - seconds
    await client.hset(f"{prefix}j:{job.id}", "fin", repr(finished))
    await client.zadd(f"{prefix}f:{job.state.value}", {job.id: finished}, xx=True)


async def gone(backend: RedisBackend, jobs: list[JobRecord]) -> list[bool]:
    """For each job: whether the store and its id index forgot it."""
    found = []
    for job in jobs:
        indexed = await backend._client.hget(backend._bucket(job.id), job.id)
        found.append(await backend.get(job.id) is None and indexed is None)
    return found


async def test_a_retention_of_zero_prunes_every_finished_job_now(make: Make) -> None:
    backend = make(retention=DROP_ALL)
    await backend.open()
    with anyio.fail_after(BOUND):
        done = await finish(backend, "completed", key="k")
        dead = await finish(backend, "dead", queue="other")
        cancelled = await finish(backend, "cancelled")
        expired = await finish(backend, "completed", result_ttl=0.0)
        # A job's own result_ttl decides for it, longer than the retention too.
        kept = await finish(backend, "completed", result_ttl=HOUR)
        [waiting] = await backend.enqueue([r.job()])
        assert await backend.prune() == 4
        assert await gone(backend, [done, dead, cancelled, expired]) == [True] * 4
        assert await gone(backend, [kept, waiting]) == [False, False]
        assert await backend.prune() == 0
        [stats] = await backend.stats([r.QUEUE])
        assert stats.counts[JobState.COMPLETED] == 1
        assert stats.counts[JobState.CANCELLED] == 0
        assert stats.counts[JobState.QUEUED] == 1
        # The completed job's key went with it.
        [again] = await backend.enqueue([r.job(key="k")])
        assert again.id != done.id


async def test_the_default_retention_keeps_recent_jobs_and_prunes_old_ones(make: Make) -> None:
    backend = make()
    assert backend.retention == Retention()
    await backend.open()
    with anyio.fail_after(BOUND):
        done = await finish(backend, "completed")
        dead = await finish(backend, "dead")
        cancelled = await finish(backend, "cancelled")
        assert await backend.prune() == 0
        await age(backend, done, 86_400.0 - 60)
        await age(backend, dead, 14 * 86_400.0 - 60)
        assert await backend.prune() == 0
        await age(backend, done, 120)
        assert await backend.prune() == 1
        await age(backend, dead, 120)
        await age(backend, cancelled, 14 * 86_400.0 + 60)
        assert await backend.prune() == 2
        assert await gone(backend, [done, dead, cancelled]) == [True] * 3


async def test_each_state_is_kept_for_its_own_retention(make: Make) -> None:
    backend = make(retention_completed=HOUR, retention_dead=2 * HOUR, retention_cancelled=None)
    await backend.open()
    with anyio.fail_after(BOUND):
        jobs = {e: await finish(backend, e) for e in ("completed", "dead", "cancelled")}
        for job in jobs.values():
            await age(backend, job, 1.5 * HOUR)
        assert await backend.prune() == 1
        assert await gone(backend, list(jobs.values())) == [True, False, False]
        for job in (jobs["dead"], jobs["cancelled"]):
            await age(backend, job, 1.5 * HOUR)
        assert await backend.prune() == 1
        # None keeps cancelled jobs, however old.
        assert await gone(backend, [jobs["dead"], jobs["cancelled"]]) == [True, False]


async def test_none_keeps_finished_jobs_and_only_expired_results_go(make: Make) -> None:
    backend = make(retention=KEEP_ALL)
    await backend.open()
    with anyio.fail_after(BOUND):
        jobs = [await finish(backend, e) for e in ("completed", "dead", "cancelled")]
        expired = await finish(backend, "completed", result_ttl=0.0)
        assert await backend.prune() == 1
        assert await gone(backend, [*jobs, expired]) == [False, False, False, True]


async def test_prune_goes_on_in_batches_past_results_still_kept(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Completed jobs with a TTL still to come lead the completed index: a batch
    # full of them must not stop prune before the jobs behind them.
    monkeypatch.setattr(admin, "_PRUNE_BATCH", 3)
    backend = make(retention=DROP_ALL)
    await backend.open()
    with anyio.fail_after(BOUND):
        kept = [await finish(backend, "completed", result_ttl=HOUR) for _ in range(5)]
        doomed = [await finish(backend, "completed") for _ in range(4)]
        doomed += [await finish(backend, "dead", queue=f"q{i % 2}") for i in range(5)]
        assert await backend.prune() == len(doomed)
        assert await gone(backend, doomed) == [True] * len(doomed)
        assert await gone(backend, kept) == [False] * len(kept)
        assert await backend.prune() == 0


async def test_backends_of_one_namespace_prune_by_their_own_retention(make: Make) -> None:
    keeping, dropping = make(retention=KEEP_ALL), make(retention=DROP_ALL)
    await keeping.open()
    await dropping.open()
    with anyio.fail_after(BOUND):
        job = await finish(keeping, "dead")
        assert await keeping.prune() == 0
        assert await dropping.prune() == 1
        assert await gone(keeping, [job]) == [True]


async def test_a_keyed_limit_counter_expires_once_idle(make: Make) -> None:
    """Its key lives while a job of it runs, and expires a while after it went idle.

    ``prune`` deletes it at once (the conformance suite); the expiry is what
    forgets it where no worker prunes.
    """
    backend = make()
    await backend.open()
    gate = Gate(name="tenant", key="acme", concurrency=1)
    key = backend._prefix(r.QUEUE) + "l:tenant[acme]"
    client = backend._client
    with anyio.fail_after(BOUND):
        await backend.enqueue([replace(r.job(), limits=(gate,))])
        (lease,) = await backend.claim([r.QUEUE], 5, worker="w", lease_for=60)
        assert await client.pttl(key) == -1  # a job runs on it
        assert await backend.settle([r.completed(lease)]) == [True]
        assert 0 < await client.pttl(key) <= 61_000
