"""What reaches a caller of the Redis backend when the store is busy, refuses, or restarts.

Every driver error a call can meet ends as ``BackendUnavailable`` (it will
pass: a connection, a timeout, a server loading its data, a failover, a
full pool) or ``BackendError`` (a wrong answer, credentials refused); never
as a redis-py exception or an ``ExceptionGroup``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    MaxConnectionsError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from asyncq import App
from asyncq._records import JobState
from asyncq.backends.redis import RedisBackend
from asyncq.backends.redis.client import POOL_HEADROOM, POOL_SIZE, POOL_TIMEOUT, failure
from asyncq.exceptions import BackendError, BackendUnavailable

from . import _records as r
from ._redis import opened, unique_namespace

BOUND = 30.0
URL = "redis://127.0.0.1:6379/0"


# -- the mapping (no server needed) ------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        BusyLoadingError("Redis is loading the dataset in memory"),
        # Over the backend's own connections error replies come as plain ResponseErrors.
        ResponseError("LOADING Redis is loading the dataset in memory"),
        ResponseError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is no"),
        ResponseError("TRYAGAIN Multiple keys request during rehashing of slot"),
        ResponseError("READONLY You can't write against a read only replica."),
        ClusterDownError("The cluster is down"),
        RedisConnectionError("Connection reset by peer"),
        MaxConnectionsError("Too many connections"),
        ExceptionGroup("waiting", [BusyLoadingError("Redis is loading the dataset in memory")]),
        ExceptionGroup("outer", [ExceptionGroup("inner", [RedisConnectionError("gone")])]),
    ],
    ids=repr,
)
def test_what_passes_is_unavailable(error: Exception) -> None:
    found = failure("redis://h:1/0", error)
    assert found is not None
    mapped, _ = found
    assert isinstance(mapped, BackendUnavailable)
    assert "redis://h:1/0" in str(mapped)


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationError("invalid username-password pair or user is disabled."),
        ResponseError("NOAUTH Authentication required."),
        ResponseError("WRONGPASS invalid username-password pair or user is disabled."),
    ],
    ids=repr,
)
def test_refused_credentials_are_an_authentication_failure(error: Exception) -> None:
    found = failure("redis://u:***@h:1/0", error)
    assert found is not None
    mapped, _ = found
    assert type(mapped) is BackendError
    assert "authentication failed" in str(mapped)
    assert "unreachable" not in str(mapped)


def test_a_wrong_answer_is_a_backend_error_and_a_bug_is_left_alone() -> None:
    found = failure("redis://h:1/0", ResponseError("ERR something else"))
    assert found is not None
    assert type(found[0]) is BackendError
    assert failure("redis://h:1/0", ValueError("a bug")) is None
    mixed = ExceptionGroup("g", [BusyLoadingError("loading"), ValueError("a bug")])
    assert failure("redis://h:1/0", mixed) is None


def test_the_pool_waits_for_a_connection_with_documented_defaults() -> None:
    pool = RedisBackend.from_url(URL)._client.connection_pool
    assert isinstance(pool, aioredis.BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout) == (POOL_SIZE, POOL_TIMEOUT)
    pool = RedisBackend.from_url(
        f"{URL}?max_connections=7&pool_timeout=0.5"
    )._client.connection_pool
    assert (pool.max_connections, pool.timeout) == (7, 0.5)
    assert "pool_timeout" not in pool.connection_kwargs
    pool = RedisBackend.from_url(URL, max_connections=3, pool_timeout=2)._client.connection_pool
    assert (pool.max_connections, pool.timeout) == (3, 2.0)


# -- against the server ------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.redis
@pytest.mark.parametrize("options", [{}, {"max_connections": 5}], ids=["default", "pool-of-5"])
async def test_a_thousand_concurrent_enqueues_from_one_process_all_succeed(
    redis_url: str, options: dict[str, Any]
) -> None:
    async with opened(
        RedisBackend.from_url(redis_url, namespace=unique_namespace(), **options)
    ) as backend:
        stored: list[str] = []

        async def enqueue() -> None:
            (job,) = await backend.enqueue([r.job()])
            stored.append(job.id)

        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                for _ in range(1000):
                    tg.start_soon(enqueue)
            (stats,) = await backend.stats([r.QUEUE])
        assert len(set(stored)) == 1000
        assert stats.counts[JobState.QUEUED] == 1000


@pytest.mark.anyio
@pytest.mark.redis
async def test_a_call_that_waits_too_long_for_a_connection_is_unavailable(redis_url: str) -> None:
    backend = RedisBackend.from_url(
        redis_url, namespace=unique_namespace(), max_connections=1, pool_timeout=0.2
    )
    async with opened(backend):
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                # The pool's only connection, held by a blocking pop.
                tg.start_soon(lambda: backend._client.blpop([f"{backend.namespace}:x"], timeout=2))
                await anyio.wait_all_tasks_blocked()
                with pytest.raises(BackendUnavailable, match="no free connection"):
                    await backend.get("some-id")
                tg.cancel_scope.cancel()


@pytest.fixture
async def acl_user(redis_url: str) -> AsyncIterator[str]:
    """A user of the server with a password of its own, deleted after the test."""
    admin = aioredis.Redis.from_url(redis_url)
    name = f"asyncq-test-{uuid.uuid4().hex[:8]}"
    try:
        await admin.acl_setuser(
            name, enabled=True, passwords=["+right-pass"], keys=["*"], commands=["+@all"]
        )
        yield name
    finally:
        await admin.acl_deluser(name)
        await admin.aclose()


@pytest.mark.anyio
@pytest.mark.redis
async def test_a_wrong_password_is_an_authentication_failure(acl_user: str) -> None:
    backend = RedisBackend.from_url(f"redis://{acl_user}:wrong-pass@127.0.0.1:6379/0")
    try:
        with anyio.fail_after(BOUND), pytest.raises(BackendError) as info:
            await backend.open()
    finally:
        await backend.close()
    assert not isinstance(info.value, BackendUnavailable)
    assert "authentication failed" in str(info.value)
    assert "wrong-pass" not in str(info.value)
    assert f"redis://{acl_user}:***@127.0.0.1:6379/0" in str(info.value)
    # The right password opens it.
    right = RedisBackend.from_url(
        f"redis://{acl_user}:right-pass@127.0.0.1:6379/0", namespace=unique_namespace()
    )
    with anyio.fail_after(BOUND):
        async with opened(right):
            pass


class Ping(msgspec.Struct):
    n: int


@pytest.mark.anyio
@pytest.mark.redis
async def test_enqueue_and_wait_gets_backend_unavailable_when_redis_restarts_mid_wait(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = unique_namespace()
    async with opened(RedisBackend.from_url(redis_url, namespace=ns)) as backend:
        app = App("errors", backend=backend)

        @app.job(schema=Ping, name="ping")
        async def ping(payload: Ping) -> int:
            return payload.n

        errors: list[BaseException] = []

        async def call() -> None:
            try:
                await ping.enqueue_and_wait(Ping(1))
            except BaseException as exc:
                errors.append(exc)

        async def loading(queue: str, job_id: str) -> None:
            raise BusyLoadingError("Redis is loading the dataset in memory")

        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                # Subscribed, stored and waiting (no worker runs the job) ...
                await anyio.wait_all_tasks_blocked()
                notices = backend._notices
                assert notices is not None
                assert notices.waiters == 1
                # ... when the server restarts: the subscription comes back, and the
                # waiter's read of its job meets a server still loading its data.
                monkeypatch.setattr(backend, "_watch", loading)
                admin = aioredis.Redis.from_url(redis_url)
                try:
                    for client in await admin.client_list():
                        if client["name"] == f"asyncq:{ns}:sub":
                            await admin.client_kill_filter(_id=client["id"])
                finally:
                    await admin.aclose()
        (error,) = errors
        assert isinstance(error, BackendUnavailable), repr(error)
        assert "LOADING" in str(error) or "loading" in str(error)


@pytest.mark.anyio
@pytest.mark.redis
async def test_a_worker_grows_the_pool_its_jobs_share_to_its_concurrency(redis_url: str) -> None:
    # Before: a worker at concurrency 300 kept a pool of 100, so jobs that
    # enqueue waited for connections (and, past pool_timeout, failed).
    backend = RedisBackend.from_url(redis_url, namespace=unique_namespace())
    chosen = RedisBackend.from_url(redis_url, namespace=unique_namespace(), max_connections=7)
    for store in (backend, chosen):
        app = App("pool-size", backend=store)
        with anyio.fail_after(BOUND):
            async with app.worker(concurrency=300, prefetch=0):
                pass
        await store.drop()
        await store.close()
    assert backend._client.connection_pool.max_connections == 300 + POOL_HEADROOM
    assert chosen._client.connection_pool.max_connections == 7  # the user's choice stands
