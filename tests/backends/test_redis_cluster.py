"""The Redis backend on a real three-master Redis Cluster.

The conformance suite runs on the same cluster through the ``redis-cluster``
param of the ``backend`` fixture; these tests cover what only a cluster has:
one slot per queue, calls that span queues on different nodes, and a
subscriber whose node went away.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator

import anyio
import pytest
import redis.asyncio as aioredis
from anyio.abc import TaskGroup
from redis.crc import key_slot

from asyncq._records import JobRecord, JobState, Lease
from asyncq.backends.redis import RedisBackend
from asyncq.backends.redis.library import library
from asyncq.backends.redis.notices import Notices

from . import _records as r
from ._redis import opened, unique_namespace
from ._redis_cluster import cluster_url

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.cluster]

BOUND = 10.0
PROMPT = 1.0
# redis-cli --cluster create splits the slots evenly: the masters own these ranges.
RANGES = [(0, 5460), (5461, 10922), (10923, 16383)]


@pytest.fixture(scope="session")
def url(pytestconfig: pytest.Config) -> str:
    return cluster_url(pytestconfig)


@pytest.fixture
async def backend(url: str) -> AsyncIterator[RedisBackend]:
    async with opened(RedisBackend.from_url(url, namespace=unique_namespace())) as instance:
        yield instance


def _slot(backend: RedisBackend, queue: str) -> int:
    return key_slot(f"{{{backend.namespace}:q:{queue}}}:".encode())


def _one_queue_per_node(backend: RedisBackend) -> list[str]:
    """Three queue names whose slots are owned by three different masters."""
    found: dict[int, str] = {}
    for i in range(10_000):
        name = f"q{i}"
        slot = _slot(backend, name)
        node = next(n for n, (low, high) in enumerate(RANGES) if low <= slot <= high)
        found.setdefault(node, name)
        if len(found) == len(RANGES):
            return [found[n] for n in sorted(found)]
    raise AssertionError("no queue names spread over the nodes")


def _waiting(tg: TaskGroup, backend: RedisBackend, leases: list[Lease]) -> list[JobRecord | None]:
    """Start a ``wait_finished`` per leased job in ``tg``; what each returns is added to
    the list returned."""
    got: list[JobRecord | None] = []

    async def wait(job_id: str) -> None:
        got.append(await backend.wait_finished(job_id))

    for lease in leases:
        tg.start_soon(wait, lease.job.id)
    return got


async def _blocked_on_every_node(backend: RedisBackend) -> None:
    """Return once the backend's blocking pops wait (``BLPOP``) on every master."""
    name = f"{backend._name}:block"
    nodes = [aioredis.Redis(host=n.host, port=n.port) for n in backend._client.get_primaries()]
    try:
        # Polled: only the servers know their blocked clients.
        while True:
            blocked = 0
            for node in nodes:
                clients = await node.client_list()
                blocked += any(c["name"] == name and "b" in c["flags"] for c in clients)
            if blocked == len(nodes):
                return
            await anyio.sleep(0.01)
    finally:
        for node in nodes:
            await node.aclose()


async def _subscribed(backend: RedisBackend, channels: list[str], waiters: int) -> Notices:
    """The backend's notices, once ``waiters`` wait and every channel's subscription stands."""
    notices = backend._get_notices()

    def subscribed() -> bool:
        listening = all(notices.listening(c) is not None for c in channels)
        return listening and notices.waiters == waiters

    # Polled: the waiters' subscriptions show only in the notices' state.
    while not subscribed():  # noqa: ASYNC110
        await anyio.sleep(0.01)
    return notices


async def test_every_key_of_a_queue_is_in_its_slot(backend: RedisBackend) -> None:
    queues = ["default", "a{b}c", "x}y", "50%"]
    with anyio.fail_after(BOUND):
        jobs = [r.job(queue=q, key=f"k-{q}", result_ttl=60) for q in queues]
        jobs += [r.job(queue=q, delay=60) for q in queues]
        await backend.enqueue(jobs)
        leases = await backend.claim(queues, 10, worker="w", lease_for=30)
        await backend.settle([r.completed(lease) for lease in leases[:2]])
        await backend.settle([r.dead(lease) for lease in leases[2:]])
        client = backend._client
        tags: dict[str, set[int]] = {}
        async for raw in client.scan_iter(match=f"{{{backend.namespace}:q:*", count=1000):
            key = raw.decode()
            tag = key[1 : key.index("}")]
            tags.setdefault(tag, set()).add(key_slot(raw))
        # One hash tag per queue, and every key under it in that tag's slot.
        assert len(tags) == len(queues)
        for tag, slots in tags.items():
            assert slots == {key_slot(tag.encode())}
        # Braces in a queue name are escaped, so they cannot end the tag early.
        escaped = ["default", "a%7Bb%7Dc", "x%7Dy", "50%25"]
        assert set(tags) == {f"{backend.namespace}:q:{q}" for q in escaped}


async def test_claim_over_queues_on_different_nodes(backend: RedisBackend) -> None:
    queues = _one_queue_per_node(backend)
    with anyio.fail_after(BOUND):
        stored = await backend.enqueue([r.job(queue=q) for q in queues for _ in range(3)])
        assert all(job.state is JobState.QUEUED for job in stored)
        first = await backend.claim(queues, 5, worker="w", lease_for=30)
        second = await backend.claim(queues, 5, worker="w", lease_for=30)
        assert (len(first), len(second)) == (5, 4)
        ids = {lease.job.id for lease in first + second}
        assert ids == {job.id for job in stored}
        assert await backend.settle([r.completed(x) for x in first + second]) == [True] * 9
        stats = await backend.stats(queues)
        assert [s.counts[JobState.COMPLETED] for s in stats] == [3, 3, 3]


async def test_wait_for_work_over_several_slots_wakes_on_any(
    backend: RedisBackend, url: str
) -> None:
    queues = _one_queue_per_node(backend)
    producer = RedisBackend.from_url(url, namespace=backend.namespace)
    await producer.open()
    try:
        with anyio.fail_after(BOUND):
            for queue in queues:
                woke = anyio.Event()

                async def idle(event: anyio.Event = woke) -> None:
                    await backend.wait_for_work(queues, 5)
                    event.set()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(idle)
                    await _blocked_on_every_node(backend)  # the push path
                    started = time.monotonic()
                    await producer.enqueue([r.job(queue=queue)])
                    await woke.wait()
                assert time.monotonic() - started < PROMPT
                assert len(await backend.claim(queues, 5, worker="w", lease_for=30)) == 1
    finally:
        await producer.close()


async def test_notices_reach_the_subscriber_from_every_node(backend: RedisBackend) -> None:
    queues = _one_queue_per_node(backend)
    channels = [backend._prefix(q) + "done" for q in queues]
    with anyio.fail_after(BOUND):
        await backend.enqueue([r.job(queue=q) for q in queues])
        leases = await backend.claim(queues, 3, worker="w", lease_for=30)
        async with anyio.create_task_group() as tg:
            got = _waiting(tg, backend, leases)
            await _subscribed(backend, channels, 3)
            started = time.monotonic()
            await backend.settle([r.completed(lease) for lease in leases])
        assert time.monotonic() - started < PROMPT
        assert sorted(job.state for job in got if job is not None) == [JobState.COMPLETED] * 3


async def test_settle_and_claim_over_queues_on_different_nodes(backend: RedisBackend) -> None:
    queues = _one_queue_per_node(backend)
    with anyio.fail_after(BOUND):
        await backend.enqueue([r.job(queue=q) for q in queues for _ in range(2)])
        first = await backend.claim(queues, 3, worker="w", lease_for=30)
        applied, second = await backend.settle_and_claim(
            [r.completed(x) for x in first], queues, 10, worker="w", lease_for=30
        )
        assert applied == [True] * 3
        assert len(second) == 3
        assert {x.job.id for x in first + second} == {
            job.id for job in await backend.list_jobs(limit=10)
        }


async def test_waiters_are_woken_after_the_subscriber_node_is_gone(backend: RedisBackend) -> None:
    # A node gone for good (a primary killed and failed over) without the
    # failover: the subscriber's connection drops and its address answers no
    # more (a port bound by nobody who listens refuses connections).
    queues = _one_queue_per_node(backend)
    channels = [backend._prefix(q) + "done" for q in queues]
    with anyio.fail_after(BOUND), socket.socket() as gone:
        gone.bind(("127.0.0.1", 0))
        await backend.enqueue([r.job(queue=q) for q in queues])
        leases = await backend.claim(queues, 3, worker="w", lease_for=30)
        async with anyio.create_task_group() as tg:
            got = _waiting(tg, backend, leases)
            notices = await _subscribed(backend, channels, 3)
            connection = notices._pubsub.connection
            assert connection is not None
            node = aioredis.Redis(host=connection.host, port=connection.port)
            try:
                name = f"{backend._name}:sub"
                ids = [c["id"] for c in await node.client_list(_type="pubsub") if c["name"] == name]
                assert len(ids) == 1
                connection.port = gone.getsockname()[1]
                await node.client_kill_filter(_id=ids[0])
            finally:
                await node.aclose()
            started = time.monotonic()
            # Their notices go out while no subscription stands, or after it moved.
            assert await backend.settle([r.completed(lease) for lease in leases]) == [True] * 3
        assert time.monotonic() - started < PROMPT
        assert sorted(job.state for job in got if job is not None) == [JobState.COMPLETED] * 3
        # The subscriber moved to a node that answers, and listens there.
        assert all(notices.listening(c) is not None for c in channels)


async def test_the_library_is_on_every_primary_and_loaded_again_when_lost(
    backend: RedisBackend,
) -> None:
    queues = _one_queue_per_node(backend)
    name = library().name
    primaries = [
        aioredis.Redis(host=node.host, port=node.port) for node in backend._client.get_primaries()
    ]
    try:
        with anyio.fail_after(BOUND):
            assert backend._transport.functions
            for node in primaries:
                assert [lib[1] for lib in await node.function_list(library=name)] == [name.encode()]
            await backend.enqueue([r.job(queue=q) for q in queues])
            # Lost on every primary (a restart, a FUNCTION FLUSH): the first call
            # that finds it gone loads it on all of them again.
            for node in primaries:
                await node.function_delete(name)
            leases = await backend.claim([queues[0]], 1, worker="w", lease_for=30)
            leases += await backend.claim([queues[1]], 1, worker="w", lease_for=30)
            for node in primaries[:2]:
                await node.function_delete(name)
            # Calls pipelined to several nodes, some finding it gone.
            assert await backend.settle([r.completed(lease) for lease in leases]) == [True] * 2
            stats = {s.queue: s.counts for s in await backend.stats(queues)}
            assert [stats[q][JobState.COMPLETED] for q in queues] == [1, 1, 0]
            for node in primaries:
                assert len(await node.function_list(library=name)) == 1
    finally:
        for node in primaries:
            await node.aclose()
