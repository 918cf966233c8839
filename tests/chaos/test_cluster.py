"""A Redis Cluster losing a primary under load: failover, the backlog, and request/response.

The test starts a cluster of its own, three primaries with a replica each and
``cluster-node-timeout`` at one second. Three ``asyncq run`` workers drain a
backlog spread over three queues, one per primary, while four callers send
requests with ``enqueue_and_wait`` (timeout 30 s) over the same queues. Once
requests are being answered, the test kills (``SIGKILL``) the primary that
the producer's completion notices are subscribed on, and waits for its
replica to take over (``CLUSTER INFO``: ``cluster_state:ok``, the slots
served by the promoted replica).

The scenario runs once for the module; its tests assert on what it measured:
the failover completes and no job is lost, and the callers keep being woken.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from asyncq import BackendUnavailable
from asyncq.backends.redis import RedisBackend
from backends._redis_cluster import LocalCluster, executables, start_cluster

from ._support import (
    IN_FLIGHT,
    WORKER_ARGS,
    WORKERS,
    Figures,
    Fleet,
    Task,
    drain,
    every_job,
    figures_of,
    producer,
    record,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.chaos,
    pytest.mark.redis,
    pytest.mark.cluster,
]

JOBS = 1200
SECONDS = 0.05
CALLERS = 4
REQUEST_TIMEOUT = 30.0
#: What "woken" means: a request answered this soon, however the cluster fares.
PROMPT = 5.0
FAILOVER_BOUND = 30.0
LIMIT = 60.0


@dataclass
class Node:
    id: str
    port: int
    primary: bool
    primary_of: str | None  # a replica's primary
    slots: list[tuple[int, int]]


async def cluster_nodes(port: int) -> list[Node]:
    """``CLUSTER NODES`` as one node sees it."""
    client = aioredis.Redis(port=port)
    try:
        table = await client.execute_command("CLUSTER NODES")  # parsed: {"host:port": {...}}
    finally:
        await client.aclose()
    return [
        Node(
            id=info["node_id"],
            port=int(address.rpartition(":")[2]),
            primary="master" in info["flags"],
            primary_of=None if info["master_id"] == "-" else info["master_id"],
            slots=sorted((int(low), int(high)) for low, high in info["slots"]),
        )
        for address, info in table.items()
    ]


async def cluster_ok(port: int) -> bool:
    client = aioredis.Redis(port=port)
    try:
        info = await client.execute_command("CLUSTER INFO")
    finally:
        await client.aclose()
    return bool(info.get("cluster_state") == "ok")


def queue_per_primary(namespace: str, primaries: list[Node]) -> dict[int, str]:
    """A queue name whose keys live on each primary, by port."""
    found: dict[int, str] = {}
    for i in range(10_000):
        name = f"q{i}"
        slot = key_slot(f"{{{namespace}:q:{name}}}:".encode())
        node = next(n for n in primaries if any(lo <= slot <= hi for lo, hi in n.slots))
        found.setdefault(node.port, name)
        if len(found) == len(primaries):
            return found
    raise AssertionError("no queue names spread over the primaries")


async def subscribed_on(ports: list[int], client_name: str) -> int | None:
    """The port of the node where a connection named ``client_name`` is open."""
    for port in ports:
        client = aioredis.Redis(port=port)
        try:
            names = [c["name"] for c in await client.client_list(_type="pubsub")]
        finally:
            await client.aclose()
        if client_name in names:
            return port
    return None


@dataclass
class Call:
    began: float
    seconds: float
    answered: bool


@dataclass
class Scenario:
    figures: Figures
    failover: float
    killed: int
    promoted: int
    #: the killed primary's replicas when the cluster started
    replicas: set[int]
    subscribed: int | None
    calls: list[Call] = field(default_factory=list)
    killed_at: float = 0.0

    def after_kill(self) -> list[Call]:
        return [c for c in self.calls if c.began + c.seconds >= self.killed_at]

    def waited_after_failover(self, call: Call) -> float:
        """Seconds ``call`` waited once the failover was over (it cannot be woken before)."""
        recovered = self.killed_at + self.failover
        return call.began + call.seconds - max(call.began, recovered)


@pytest.fixture(scope="module")
async def local_cluster() -> AsyncIterator[LocalCluster]:
    server, cli = executables()
    cluster = await anyio.to_thread.run_sync(
        lambda: start_cluster(server, cli, replicas=1, node_timeout=1000)
    )
    try:
        yield cluster
    finally:
        await anyio.to_thread.run_sync(cluster.stop)


@pytest.fixture(scope="module")
async def scenario(
    local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Scenario:
    tmp_path = tmp_path_factory.mktemp("cluster-failover")
    nodes = await cluster_nodes(local_cluster.ports[0])
    primaries = [n for n in nodes if n.primary]
    # The URL names a replica: the clients' first node must outlive the kill.
    seed = next(n for n in nodes if not n.primary)
    namespace = f"t{uuid.uuid4().hex[:12]}"
    url = f"redis://127.0.0.1:{seed.port}/0?cluster=true&namespace={namespace}"
    queues = queue_per_primary(namespace, primaries)
    names = list(queues.values())
    fleet = Fleet(tmp_path, url, [*WORKER_ARGS, "-q", ",".join(names)])
    client_name = f"chaos-producer:{namespace}"
    app, work = producer(RedisBackend.from_url(url, client_name=client_name))
    calls: list[Call] = []
    started = time.monotonic()
    done = anyio.Event()
    answered = anyio.Event()  # a few requests were answered: the notices are subscribed
    stop_calls = anyio.Event()

    async def caller(index: int) -> None:
        n = JOBS + index * 100_000
        while not stop_calls.is_set():
            n += 1
            began = time.monotonic()
            key, queue = f"req-{n}", random.choice(names)
            while True:
                try:
                    with anyio.move_on_after(PROMPT * 2) as late:
                        result = await work.enqueue_and_wait(
                            Task(n, 0.01),
                            timeout=REQUEST_TIMEOUT,
                            key=key,
                            queue=queue,
                            priority=10,
                        )
                    break
                except BackendUnavailable:
                    await anyio.sleep(0.1)  # a caller's backoff before it retries
            calls.append(Call(began, time.monotonic() - began, not late.cancelled_caught))
            if late.cancelled_caught:
                # Not woken long after its job could have finished: the test has
                # seen enough (the timeout would only make it wait 30 s more).
                return
            assert result == n
            if len(calls) >= 20:
                answered.set()

    try:
        async with app:
            backlog: list[str] = []
            for index, name in enumerate(names):
                batch = [Task(n, SECONDS) for n in range(index, JOBS, len(names))]
                backlog += [h.id for h in await work.enqueue_many(batch, queue=name)]
            await fleet.start(WORKERS)
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain, app.backend, JOBS, done, LIMIT)
                for index in range(CALLERS):
                    tg.start_soon(caller, index)
                with anyio.fail_after(LIMIT):
                    await answered.wait()
                subscribed = await subscribed_on([n.port for n in nodes], f"{client_name}:sub")
                victim = next((n for n in primaries if n.port == subscribed), primaries[0])
                killed_at = time.monotonic()
                local_cluster.procs[local_cluster.ports.index(victim.port)].send_signal(
                    signal.SIGKILL
                )
                promoted = await failover(seed.port, victim)
                failover_seconds = time.monotonic() - killed_at
                with anyio.fail_after(LIMIT):
                    await done.wait()
                stop_calls.set()
            # The count above includes the requests that completed: the backlog is
            # drained once the backlog and every request sent (one job each) are.
            drained = anyio.Event()
            await drain(app.backend, JOBS + len(calls), drained, LIMIT)
            # The backlog (a job missing from the store counts as lost) and every
            # other job the producer stored: the requests.
            stored = {job.id for job in await every_job(app.backend)}
            ids = backlog + sorted(stored.difference(backlog))
            figures, _ = await figures_of(
                app.backend,
                fleet.log,
                ids,
                store="redis-cluster",
                fault="primary SIGKILL + failover",
                faults=1,
                bound=WORKERS * IN_FLIGHT,
                started=started,
            )
    finally:
        await fleet.stop()
        with contextlib.suppress(Exception):
            await app.backend.drop()  # type: ignore[attr-defined]
    record(tmp_path_factory, tmp_path, figures)
    # The requests in flight when the primary died: answered how long after the kill.
    at_kill = [c.began + c.seconds - killed_at for c in calls if c.began <= killed_at]
    at_kill = [ended for ended in at_kill if ended >= 0]
    print(
        f"  failover {failover_seconds:.1f} s; requests {len(calls)},"
        f" slowest {max(c.seconds for c in calls):.2f} s,"
        f" not woken within {PROMPT * 2:.0f} s: {sum(not c.answered for c in calls)};"
        f" {len(at_kill)} in flight at the kill, the last answered"
        f" {max(at_kill, default=0.0):.2f} s after it"
    )
    return Scenario(
        figures=figures,
        failover=failover_seconds,
        killed=victim.port,
        promoted=promoted,
        replicas={n.port for n in nodes if n.primary_of == victim.id},
        subscribed=subscribed,
        calls=calls,
        killed_at=killed_at,
    )


async def failover(port: int, victim: Node) -> int:
    """Wait until a replica of ``victim`` serves its slots and the cluster is ok; its port."""
    with anyio.fail_after(FAILOVER_BOUND):
        while True:
            # Polled: the cluster's state shows only in its answers.
            with contextlib.suppress(aioredis.RedisError):
                if await cluster_ok(port):
                    for node in await cluster_nodes(port):
                        # The slots the victim served, served by another node.
                        if node.primary and node.slots == victim.slots and node.port != victim.port:
                            return node.port
            await anyio.sleep(0.1)


async def test_failover_completes_and_no_job_is_lost(scenario: Scenario) -> None:
    figures = scenario.figures
    # The backlog and one job per request (retried under its key); a request
    # given up on (not woken) may have been cut short before its job was stored.
    answered = sum(c.answered for c in scenario.calls)
    assert JOBS + answered <= figures.jobs <= JOBS + len(scenario.calls), figures.line()
    assert scenario.promoted in scenario.replicas, (scenario.promoted, scenario.replicas)
    assert scenario.failover < FAILOVER_BOUND
    assert figures.lost == 0, figures.line()
    assert figures.stuck == 0, figures.line()
    assert figures.duplicates <= figures.bound, figures.line()


async def test_the_killed_primary_held_the_notice_subscription(scenario: Scenario) -> None:
    # Otherwise the next test proves nothing about a subscriber losing its node.
    assert scenario.subscribed == scenario.killed


async def test_request_callers_keep_being_woken(scenario: Scenario) -> None:
    calls = scenario.after_kill()
    assert calls, "no request was in flight or sent after the kill"
    # Their jobs completed (the first test: nothing lost); the notice subscriber
    # moved off the dead primary, and each caller was woken by its job's notice
    # or by the read of its job that follows the new subscription. A request in
    # flight at the kill waits for the failover whatever asyncq does: what is
    # bounded is the time it waited after the new primary took over.
    slow = [c for c in calls if not c.answered or scenario.waited_after_failover(c) >= PROMPT]
    assert not slow, f"{len(slow)} of {len(calls)} requests after the kill were not woken"
