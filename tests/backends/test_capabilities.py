"""Optional features are answered by the backend instance (``Capability`` in ``base.py``).

Runs over the ``backend`` fixture: what each store offers, that ``of`` agrees
with ``capabilities``, and that ``drop()`` deletes everything an instance
stored, read back through a second instance on the same store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncq.backends.base import (
    DROP,
    ENQUEUE_WAITED,
    EVENTS,
    MIGRATE,
    PUSHES_CANCEL,
    SETTLE_ON_CLAIM,
    SIZES_POOL,
    TRANSACTIONAL_ENQUEUE,
    Backend,
    Capability,
    SettlesOnClaim,
)
from asyncq.backends.memory import MemoryBackend
from asyncq.exceptions import ConfigurationError

from . import _records as r

pytestmark = pytest.mark.anyio

BOUND = 10.0
ALL: tuple[Capability[Any], ...] = (
    SETTLE_ON_CLAIM,
    ENQUEUE_WAITED,
    MIGRATE,
    SIZES_POOL,
    DROP,
    TRANSACTIONAL_ENQUEUE,
    EVENTS,
)
OFFERED: dict[str, frozenset[Capability[Any]]] = {
    "memory": frozenset({SETTLE_ON_CLAIM, DROP}),
    "sqlite": frozenset({SETTLE_ON_CLAIM, DROP}),
    "fakeredis": frozenset({SETTLE_ON_CLAIM, ENQUEUE_WAITED, DROP, SIZES_POOL}),
    "redis": frozenset({SETTLE_ON_CLAIM, ENQUEUE_WAITED, DROP, SIZES_POOL}),
    # The queues of one claim may live on several nodes: no single round trip.
    "redis-cluster": frozenset({ENQUEUE_WAITED, DROP}),
    "postgres": frozenset({ENQUEUE_WAITED, MIGRATE, DROP, TRANSACTIONAL_ENQUEUE}),
}
# Every store pushes cancels (SQLite across processes by polling).
OFFERED = {kind: offered | {PUSHES_CANCEL} for kind, offered in OFFERED.items()}
# Every store writes the job event stream.
OFFERED = {kind: offered | {EVENTS} for kind, offered in OFFERED.items()}


async def test_each_store_offers_what_it_implements(backend: Backend, backend_kind: str) -> None:
    assert isinstance(backend.capabilities, frozenset)
    assert backend.capabilities == OFFERED[backend_kind]


async def test_of_types_the_backend_when_offered_and_is_none_otherwise(backend: Backend) -> None:
    for capability in ALL:
        found = capability.of(backend)
        if capability in backend.capabilities:
            assert found is backend
            assert isinstance(found, capability.protocol)
        else:
            assert found is None


def test_an_instance_without_a_method_does_not_offer_its_feature() -> None:
    class WithoutFusion(MemoryBackend):
        settle_and_claim = None  # type: ignore[assignment]

    class Waited(MemoryBackend):
        async def enqueue_waited(self, jobs: Any) -> Any:
            return await self.enqueue(jobs)

    assert SETTLE_ON_CLAIM.of(MemoryBackend()) is not None
    assert SETTLE_ON_CLAIM.of(WithoutFusion()) is None
    assert ENQUEUE_WAITED.of(MemoryBackend()) is None
    assert ENQUEUE_WAITED.of(Waited()) is not None


def test_a_declared_feature_without_its_methods_is_not_offered() -> None:
    class Boasting(MemoryBackend):
        capabilities = frozenset({MIGRATE})  # but no migrate()

    assert MIGRATE.of(Boasting()) is None


def test_the_key_types_the_answer() -> None:
    fused: SettlesOnClaim | None = SETTLE_ON_CLAIM.of(MemoryBackend())
    assert fused is not None
    assert repr(SETTLE_ON_CLAIM) == "Capability('settle_on_claim')"


# -- drop ---------------------------------------------------------------------------


@asynccontextmanager
async def second_instance(
    backend: Backend, kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Backend]:
    """Another instance on the store and namespace of ``backend``, opened."""
    other: Any
    if kind == "memory":
        other = backend  # the store is the instance
    elif kind == "sqlite":
        from asyncq.backends.sqlite import SQLiteBackend

        other = SQLiteBackend(tmp_path / "jobs.db")
    elif kind == "fakeredis":
        from asyncq.backends.redis import RedisBackend

        other = RedisBackend(backend._client, namespace=backend.namespace)  # type: ignore[attr-defined]
    elif kind in ("redis", "redis-cluster"):
        from asyncq.backends.redis import RedisBackend

        if kind == "redis":
            url = request.getfixturevalue("redis_url")
        else:
            from backends._redis_cluster import cluster_url

            url = cluster_url(request.config)
        other = RedisBackend.from_url(url, namespace=backend.namespace)  # type: ignore[attr-defined]
    else:
        from asyncq.backends.postgres import PostgresBackend

        other = PostgresBackend.from_url(
            request.getfixturevalue("postgres_dsn"),
            schema=backend.schema,  # type: ignore[attr-defined]
            migrate=True,
        )
    await other.open()
    try:
        yield other
    finally:
        await other.close()


@pytest.mark.parametrize("when", ["open", "closed"])
async def test_drop_deletes_everything_the_instance_stored(
    backend: Backend,
    backend_kind: str,
    when: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    drops = DROP.of(backend)
    assert drops is not None
    with anyio.fail_after(BOUND):
        first, later = await backend.enqueue([r.job(key="k"), r.job(queue="other", delay=3600.0)])
        await backend.set_paused("paused", True)
        assert len(await backend.stats()) == 3
        if when == "closed":
            await backend.close()
        await drops.drop()
        await backend.close()
        async with second_instance(backend, backend_kind, request, tmp_path) as other:
            assert await other.stats() == []
            assert await other.get(first.id) is None
            assert await other.get(later.id) is None
            [again] = await other.enqueue([r.job(key="k")])
            assert again.id != first.id  # the key went with its job


async def test_drop_on_memory_wakes_waiters_who_find_their_job_gone() -> None:
    backend = MemoryBackend()
    await backend.open()
    [job] = await backend.enqueue([r.job()])
    found: list[object] = []

    async def wait() -> None:
        found.append(await backend.wait_finished(job.id))

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await backend.drop()
    assert found == [None]


async def test_a_store_without_transactions_refuses_a_connection(backend: Backend) -> None:
    if TRANSACTIONAL_ENQUEUE.of(backend) is not None:
        pytest.skip(f"{type(backend).__name__} writes through a caller's connection")
    with pytest.raises(ConfigurationError, match=r"no transactions: .* needs PostgreSQL"):
        await backend.enqueue([r.job()], connection=object())
    assert await backend.list_jobs() == []
