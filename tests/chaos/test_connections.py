"""Connections cut under load: Redis ``CLIENT KILL`` and restart, PostgreSQL terminations.

Three ``asyncq run`` workers drain a backlog while the test cuts the store's
connections every 1 to 2 s:

- Redis (a ``redis-server`` of the test's own, its append-only file synced on
  every write): ``CLIENT KILL`` of every worker connection, and once, midway,
  a stop of the server and a start a second later on the same port and files;
- PostgreSQL: ``pg_terminate_backend`` of every asyncq connection, the
  workers' and the producer's (pools and listeners alike), while the producer
  also sends requests with ``enqueue_and_wait``.

No job is lost or left behind, a job runs twice only if a cut caught it in
flight, and every request is answered within its timeout. A producer that
finds the store unreachable gets ``BackendUnavailable`` and retries with the
same idempotency key, as a caller that wants exactly one job would.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import asyncpg
import pytest
import redis.asyncio as aioredis

from _services import RedisServer
from asyncq import BackendUnavailable
from asyncq.backends.base import Backend
from asyncq.backends.postgres import PostgresBackend
from asyncq.backends.redis import RedisBackend

from ._support import (
    IN_FLIGHT,
    WORKER_ARGS,
    WORKERS,
    Figures,
    Fleet,
    Task,
    check_recovered,
    drain,
    every_job,
    figures_of,
    producer,
    record,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.chaos]

JOBS = 1500
SECONDS = 0.08  # per job: the backlog takes about ten seconds to drain
REQUESTS = 200
CALLERS = 4
REQUEST_TIMEOUT = 30.0
LIMIT = 40.0  # seconds the faults may go on; the drain gets as long again
Inject = Callable[[anyio.Event], Awaitable[int]]


async def pause(until: anyio.Event) -> bool:
    """Wait 1 to 2 s (the faults' schedule) or until ``until``; whether it is set."""
    with anyio.move_on_after(random.uniform(1.0, 2.0)):
        await until.wait()
    return until.is_set()


class Requests:
    """``enqueue_and_wait`` callers: each request is retried under its key until answered."""

    def __init__(self, first: int, count: int) -> None:
        self.pending = list(range(first, first + count))
        self.answers: dict[int, int] = {}
        self.waits: list[float] = []
        self.unavailable = 0

    async def caller(self, work: Callable[..., Awaitable[int]]) -> None:
        while self.pending:
            n = self.pending.pop()
            while True:
                began = time.monotonic()
                try:
                    # Ahead of the backlog: a request is served as soon as a slot frees.
                    self.answers[n] = await work(
                        Task(n, 0.01), timeout=REQUEST_TIMEOUT, key=f"req-{n}", priority=10
                    )
                except BackendUnavailable:
                    self.unavailable += 1
                    await anyio.sleep(0.1)  # a caller's backoff before it retries
                    continue
                self.waits.append(time.monotonic() - began)
                break


async def drain_under(
    workers_url: str,
    backend: Backend,
    tmp_path: Path,
    factory: pytest.TempPathFactory,
    *,
    store: str,
    fault: str,
    inject: Inject,
    requests: int = 0,
) -> tuple[Figures, Requests]:
    """Drain ``JOBS`` jobs (and answer ``requests`` requests) while ``inject`` cuts connections."""
    fleet = Fleet(tmp_path, workers_url, WORKER_ARGS)
    app, work = producer(backend)
    load = Requests(JOBS, requests)
    started = time.monotonic()
    try:
        async with app:
            await work.enqueue_many([Task(n, SECONDS) for n in range(JOBS)])
            await fleet.start(WORKERS)
            done = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain, app.backend, JOBS + requests, done, 2 * LIMIT)
                for _ in range(CALLERS if requests else 0):
                    tg.start_soon(load.caller, work.enqueue_and_wait)
                with anyio.move_on_after(LIMIT):
                    faults = await inject(done)
            ids = [job.id for job in await every_job(app.backend)]
            figures, _ = await figures_of(
                app.backend,
                fleet.log,
                ids,
                store=store,
                fault=fault,
                faults=faults,
                # A cut reaches every worker at once.
                bound=faults * WORKERS * IN_FLIGHT,
                started=started,
            )
    finally:
        await fleet.stop()
    record(factory, tmp_path, figures)
    assert figures.jobs == JOBS + requests, figures.line()
    check_recovered(figures, fleet)
    assert load.answers == {n: n for n in range(JOBS, JOBS + requests)}
    return figures, load


# -- Redis: CLIENT KILL, and a restart ----------------------------------------------------


@pytest.fixture
async def redis_store(private_redis: RedisServer) -> tuple[RedisServer, str]:
    """The private server, started, and a URL in a namespace of the test's own."""
    with anyio.fail_after(15):
        await private_redis.start()
    return private_redis, f"{private_redis.url}?namespace=t{uuid.uuid4().hex[:12]}"


@pytest.mark.redis
@pytest.mark.timeout(150)
async def test_redis_client_kill_and_restart(
    redis_store: tuple[RedisServer, str], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server, url = redis_store
    namespace = url.rpartition("=")[2]
    restarts: list[int] = []

    async def kill_clients(until: anyio.Event) -> int:
        faults = 0
        while not await pause(until):
            faults += 1
            if faults == 4:
                await server.stop()
                await anyio.sleep(1.0)  # the outage
                with anyio.fail_after(15):
                    await server.start()
                restarts.append(faults)
                continue
            # A new admin connection each time: the server may have restarted.
            admin = aioredis.Redis(host="127.0.0.1", port=server.port)
            try:
                # CLIENT KILL has no name filter: pick the workers' connections
                # (asyncq:<namespace>, :block, ...) from CLIENT LIST, kill them by id.
                for client in await admin.client_list(_type="normal"):
                    if client["name"].startswith(f"asyncq:{namespace}"):
                        await admin.client_kill_filter(_id=client["id"], _type="normal")
            finally:
                await admin.aclose()
        return faults

    backend = RedisBackend.from_url(url, client_name=f"chaos-producer:{namespace}")
    figures, _ = await drain_under(
        url,
        backend,
        tmp_path,
        tmp_path_factory,
        store="redis",
        fault="CLIENT KILL + restart",
        inject=kill_clients,
    )
    assert restarts == [4], figures.line()


# -- PostgreSQL: pg_terminate_backend, with requests ----------------------------------------


@pytest.mark.postgres
@pytest.mark.timeout(150)
async def test_postgres_terminated_connections_with_requests(
    postgres_dsn: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    schema = f"t{uuid.uuid4().hex[:12]}"
    # Every asyncq connection names itself asyncq:<schema> (application_name),
    # so the test terminates the workers' and the producer's, and no other test's.
    name = f"asyncq:{schema}"
    workers_url = f"{postgres_dsn}?schema={schema}"
    backend = PostgresBackend.from_url(postgres_dsn, schema=schema, migrate=True)
    await backend.open()  # creates the schema the workers expect
    terminated: list[int] = []

    async def terminate(until: anyio.Event) -> int:
        admin = await asyncpg.connect(postgres_dsn)
        try:
            faults = 0
            while not await pause(until):
                terminated.append(
                    await admin.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name = $1",
                        name,
                    )
                )
                faults += 1
            return faults
        finally:
            await admin.close()

    try:
        figures, load = await drain_under(
            workers_url,
            backend,
            tmp_path,
            tmp_path_factory,
            store="postgres",
            fault="pg_terminate_backend",
            inject=terminate,
            requests=REQUESTS,
        )
    finally:
        with contextlib.suppress(Exception):
            await backend.drop()
        await backend.close()
    # Each round cut the workers' pools and listeners and the producer's.
    assert min(terminated) > WORKERS, terminated
    # Every request was woken by its notice, long before its timeout.
    assert max(load.waits) < 5.0, (max(load.waits), figures.line())
    print(
        f"  requests: {len(load.answers)} answered, slowest {max(load.waits):.2f} s,"
        f" BackendUnavailable {load.unavailable} time(s), connections cut {sum(terminated)}"
    )
