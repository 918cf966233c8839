"""Workers and producers when the store goes away: restarts, killed connections, outages.

The backend tests prove that each store's client reconnects; these prove that a
running ``Worker`` rides out the same events without losing a job, that
producers get ``BackendUnavailable`` naming the store with its password
masked, and what a worker does when the store is down as it starts.

Every test is bounded by ``anyio.fail_after`` and waits on results, on handler
runs or on the worker's log records, never on sleeps. The worker and the
producer are separate apps on separate connections, as they are in production.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from _services import RedisServer, free_port, private_redis
from asyncq import App, BackendError, BackendUnavailable, Handler, JobHandle
from asyncq.backends.base import Backend
from asyncq.backends.postgres import PostgresBackend
from asyncq.backends.redis import RedisBackend

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
__all__ = ["private_redis"]  # the fixture from ``_services``, where pytest looks for it

log = logging.getLogger(__name__)

#: Short intervals, so a lost connection is noticed and backed off from within a test.
WORKER: dict[str, Any] = {
    "concurrency": 4,
    "heartbeat": 0.1,
    "poll_interval": 0.2,
    "lease": 5.0,
    "shutdown_timeout": 5.0,
}


class Item(msgspec.Struct):
    id: str
    hold: bool = False


class Runs:
    """The handler: counts its runs per payload id; held payloads wait for ``release``."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.release = anyio.Event()
        self._marks: list[tuple[int, anyio.Event]] = []

    @property
    def total(self) -> int:
        return sum(self.count.values())

    def reached(self, total: int) -> anyio.Event:
        """An event set once the handler has started ``total`` runs."""
        event = anyio.Event()
        if self.total >= total:
            event.set()
        else:
            self._marks.append((total, event))
        return event

    async def work(self, item: Item) -> str:
        self.count[item.id] += 1
        total = self.total
        for mark, event in self._marks:
            if total >= mark:
                event.set()
        if item.hold:
            await self.release.wait()
        else:
            await anyio.sleep(0.005)  # a little work, so jobs are in flight when the store goes
        return item.id

    def reran(self) -> set[str]:
        return {job_id for job_id, n in self.count.items() if n > 1}


def worker_app(backend: str | Backend, runs: Runs) -> App:
    app = App("resilience", backend=backend)
    app.job(schema=Item, name="work")(runs.work)
    return app


def producer(backend: str | Backend) -> tuple[App, Handler[Item, str]]:
    app = App("resilience-producer", backend=backend)
    return app, app.handle("work", schema=Item, result=str)


async def results(handles: Iterable[JobHandle[str]]) -> dict[str, str]:
    """Every handle's result, awaited concurrently."""
    out: dict[str, str] = {}

    async def one(handle: JobHandle[str]) -> None:
        out[handle.id] = await handle.result()

    async with anyio.create_task_group() as tg:
        for handle in handles:
            tg.start_soon(one, handle)
    return out


def items(prefix: str, n: int) -> list[Item]:
    return [Item(f"{prefix}{i}") for i in range(n)]


def unique() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def with_query(url: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


# -- the worker's log, as events --------------------------------------------------------


class WorkerLog(logging.Handler):
    """Collects the worker's warnings and wakes a test waiting for one.

    Records arrive on the event loop's thread (the worker logs from its tasks),
    so setting an anyio event here is safe.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._waits: list[tuple[str, anyio.Event]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        message = record.getMessage()
        for text, event in self._waits:
            if text in message:
                event.set()

    def next(self, text: str) -> anyio.Event:
        """An event set by the next warning containing ``text``."""
        event = anyio.Event()
        self._waits.append((text, event))
        return event


@pytest.fixture
def worker_log(caplog: pytest.LogCaptureFixture) -> Iterator[WorkerLog]:
    caplog.set_level(logging.INFO, logger="asyncq")
    handler = WorkerLog()
    logger = logging.getLogger("asyncq.worker")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# -- 1. a Redis restart under a running worker --------------------------------------------


@pytest.mark.redis
async def test_worker_rides_out_a_redis_restart(
    private_redis: RedisServer, worker_log: WorkerLog, caplog: pytest.LogCaptureFixture
) -> None:
    server = private_redis
    url = with_query(server.url, namespace=unique())
    runs = Runs()
    app = worker_app(url, runs)
    prod_app, work = producer(RedisBackend.from_url(url, client_name="resilience-producer"))
    with anyio.fail_after(30):
        await server.start()
        async with prod_app, app, app.worker(**WORKER) as worker:
            before = await work.enqueue_many(items("a", 20))
            await results(before)
            held = await work.enqueue_many([Item(f"h{i}", hold=True) for i in range(3)])
            await runs.reached(23).wait()

            backed_off = worker_log.next("retrying in")
            await server.stop()
            await backed_off.wait()
            with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{server.port}"):
                await work.enqueue(Item("during-the-outage"))
            # The held jobs finish while the store is down: their outcomes must wait.
            settle_failed = worker_log.next("settling ")
            runs.release.set()
            await settle_failed.wait()

            await server.start()
            after = await work.enqueue_many(items("c", 20))
            done = await results([*before, *held, *after])
            assert not worker.stopping

    expected = {f"a{i}" for i in range(20)} | {f"h{i}" for i in range(3)}
    expected |= {f"c{i}" for i in range(20)}
    assert set(done.values()) == expected
    assert set(runs.count) == expected  # "during-the-outage" was never stored
    # At-least-once allows a second run only of a job in flight when the store went.
    reran = runs.reran()
    log.info("jobs run twice across the restart: %s", sorted(reran) or "none")
    assert reran <= {f"h{i}" for i in range(3)}
    assert worker.processed >= len(expected)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "asyncq.worker" and r.levelno == logging.WARNING
    ]
    assert any("failed" in m and "retrying in" in m for m in warnings), warnings
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.redis
async def test_outcomes_buffered_in_an_outage_are_settled_once_the_store_is_back(
    private_redis: RedisServer, worker_log: WorkerLog
) -> None:
    server = private_redis
    url = with_query(server.url, namespace=unique())
    runs = Runs()
    app = worker_app(url, runs)
    prod_app, work = producer(RedisBackend.from_url(url, client_name="resilience-producer"))
    with anyio.fail_after(20):
        await server.start()
        async with prod_app, app, app.worker(**WORKER):
            held = await work.enqueue(Item("held", hold=True))
            await runs.reached(1).wait()
            await server.stop()
            settle_failed = worker_log.next("settling 1 job(s) failed")
            runs.release.set()
            await settle_failed.wait()
            await server.start()
            # No other job finishes from here on: nothing but a retry of the
            # failed settle can record this one.
            with anyio.move_on_after(3) as late:
                answer = await held.result()
    # Asserted out here: inside the worker's block a failure comes wrapped in a group.
    assert not late.cancelled_caught, "the outcome was not settled 3 s after the restart"
    assert answer == "held"


# -- 2. CLIENT KILL of every worker connection on the shared Redis ------------------------


@pytest.mark.redis
async def test_worker_rides_out_client_kill(redis_url: str) -> None:
    ns = unique()
    url = with_query(redis_url, namespace=ns)
    runs = Runs()
    app = worker_app(url, runs)
    producer_backend = RedisBackend.from_url(url, client_name=f"producer:{ns}")
    prod_app, work = producer(producer_backend)
    admin = aioredis.Redis.from_url(redis_url)

    async def kill_worker_connections() -> int:
        # CLIENT KILL has no name filter: pick the worker's connections
        # (asyncq:<namespace>, :block, ...) from CLIENT LIST, kill them by id.
        killed = 0
        for client in await admin.client_list(_type="normal"):
            if client["name"].startswith(f"asyncq:{ns}"):
                killed += await admin.client_kill_filter(_id=client["id"], _type="normal")
        return killed

    try:
        with anyio.fail_after(20):
            async with prod_app, app, app.worker(**WORKER) as worker:
                handles: list[JobHandle[str]] = []
                killed = []
                for round_ in range(3):
                    handles += await work.enqueue_many(items(f"r{round_}-", 20))
                    await runs.reached(round_ * 20 + 5).wait()
                    killed.append(await kill_worker_connections())
                done = await results(handles)
                assert not worker.stopping
    finally:
        await admin.aclose()
        await producer_backend.drop()

    assert all(n >= 1 for n in killed), killed
    assert len(done) == 60
    assert set(runs.count) == {f"r{r}-{i}" for r in range(3) for i in range(20)}
    log.info("connections killed per round: %s; jobs run twice: %s", killed, sorted(runs.reran()))


# -- 3. PostgreSQL: every connection terminated, twice over -------------------------------


@pytest.mark.postgres
async def test_worker_rides_out_terminated_postgres_connections(postgres_dsn: str) -> None:
    schema = unique()
    # The backend sets no application_name of its own: the test names each
    # side's connections, so it terminates theirs and no other test's.
    names = {role: f"asyncq-{schema}-{role}" for role in ("worker", "producer")}

    def backend(role: str) -> PostgresBackend:
        return PostgresBackend.from_url(
            postgres_dsn,
            schema=schema,
            migrate=True,
            server_settings={"application_name": names[role]},
        )

    runs = Runs()
    app = worker_app(backend("worker"), runs)
    producer_backend = backend("producer")
    prod_app, work = producer(producer_backend)
    admin = await asyncpg.connect(postgres_dsn)
    terminate = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1"
    )
    answers: list[str] = []
    killed: list[dict[str, int]] = []
    try:
        with anyio.fail_after(20):
            async with prod_app, app, app.worker(**WORKER) as worker:
                handles: list[JobHandle[str]] = []
                async with anyio.create_task_group() as tg:

                    async def request() -> None:
                        answers.append(await work.enqueue_and_wait(Item("held", hold=True)))

                    tg.start_soon(request)
                    await runs.reached(1).wait()
                    # Until the request listens for its result and the worker for work.
                    await anyio.wait_all_tasks_blocked()
                    for round_ in range(3):
                        handles += await work.enqueue_many(items(f"r{round_}-", 20))
                        await runs.reached(1 + round_ * 20 + 5).wait()
                        killed.append(
                            {role: await admin.fetchval(terminate, n) for role, n in names.items()}
                        )
                    runs.release.set()
                done = await results(handles)
                assert not worker.stopping
    finally:
        await admin.close()
        await app.close()
        await prod_app.close()
        await producer_backend.drop()

    # The first round took the producer's pool connection and its listener too.
    assert killed[0]["producer"] >= 2, killed
    assert all(k["worker"] >= 1 for k in killed), killed
    assert answers == ["held"]
    assert len(done) == 60
    assert set(runs.count) == {"held"} | {f"r{r}-{i}" for r in range(3) for i in range(20)}
    log.info("connections terminated per round: %s; jobs run twice: %s", killed, runs.reran())


# -- 4. producers: a clear error naming the store -----------------------------------------


@pytest.mark.parametrize("scheme", ["redis", "postgresql"])
async def test_producer_gets_backend_unavailable_naming_the_masked_url(scheme: str) -> None:
    port = free_port()
    where = f"{scheme}://alice:s3cret@127.0.0.1:{port}"
    url = f"{where}/0?namespace={unique()}" if scheme == "redis" else f"{where}/test"
    app, work = producer(url)
    try:
        with anyio.fail_after(10), pytest.raises(BackendUnavailable) as info:
            await work.enqueue(Item("x"))
    finally:
        await app.backend.close()  # never opened, but the client exists
    assert isinstance(info.value, BackendError)
    assert f"{scheme}://alice:***@127.0.0.1:{port}" in str(info.value)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("where", ["under-a-file", "missing-directory", "a-directory"])
async def test_sqlite_producer_on_an_unusable_path(where: str, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    path = {
        "under-a-file": tmp_path / "a-file" / "jobs.db",
        "missing-directory": tmp_path / "missing" / "jobs.db",
        "a-directory": tmp_path,
    }[where]
    app, work = producer(f"sqlite:///{path}")
    try:
        with anyio.fail_after(10), pytest.raises(BackendError) as info:
            await work.enqueue(Item("x"))
    finally:
        await app.backend.close()
    # A path that can never work is not "unavailable": a worker must not wait for it.
    assert not isinstance(info.value, BackendUnavailable)
    assert str(path) in str(info.value)
    assert "unable to open database file" in str(info.value)
    assert "fix the path" in str(info.value)


# -- 5. a worker started while the store is down ------------------------------------------


@pytest.mark.redis
async def test_worker_started_while_redis_is_down_waits_for_it(
    private_redis: RedisServer, worker_log: WorkerLog
) -> None:
    server = private_redis
    url = with_query(server.url, namespace=unique())
    runs = Runs()
    app = worker_app(url, runs)
    prod_app, work = producer(RedisBackend.from_url(url, client_name="resilience-producer"))
    answers: list[str] = []
    crashed: list[BackendUnavailable] = []
    try:
        with anyio.fail_after(15):
            warned = worker_log.next("")
            spoke = anyio.Event()  # the worker logged a warning, or ended

            async def run_worker() -> None:
                try:
                    async with app.worker(**WORKER):
                        await runs.reached(1).wait()
                except* BackendUnavailable as group:
                    crashed.extend(e for e in group.exceptions if isinstance(e, BackendUnavailable))
                spoke.set()

            async def listen() -> None:
                await warned.wait()
                spoke.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(run_worker)
                tg.start_soon(listen)
                await spoke.wait()
                if not crashed:
                    await server.start()
                    answers.append(await work.enqueue_and_wait(Item("late")))
                tg.cancel_scope.cancel()
    finally:
        await app.close()
        await prod_app.close()
    assert not crashed, f"the worker exited: {crashed[0]!r}"
    assert answers == ["late"]


CLI_APP = textwrap.dedent(
    """
    import msgspec

    from asyncq import App

    app = App("cold-start")


    class Item(msgspec.Struct):
        id: str


    @app.job(schema=Item, name="work")
    async def work(item: Item) -> str:
        return item.id
    """
)


async def test_asyncq_run_started_while_the_store_is_down_keeps_running(tmp_path: Path) -> None:
    (tmp_path / "coldapp.py").write_text(CLI_APP)
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    args = [sys.executable, "-m", "asyncq", "run", "coldapp:app", "--backend", url]
    output = b""
    with anyio.fail_after(20):
        async with await anyio.open_process(
            args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        ) as proc:
            assert proc.stderr is not None
            # Until it says it will retry, or it ends (end of its stderr).
            async for chunk in proc.stderr:
                output += chunk
                if b"retrying in" in output:
                    break
            running = proc.returncode is None
            if running:
                proc.send_signal(signal.SIGTERM)
            code = await proc.wait()
    text = output.decode(errors="replace")
    assert "s3cret" not in text
    assert running, f"asyncq run exited with {code}:\n{text[-3000:]}"
    assert "redis://:***@127.0.0.1" in text
    assert code == 0
