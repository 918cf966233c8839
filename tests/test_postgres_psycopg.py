"""PostgreSQL: transactional enqueue through psycopg 3 connections, async and sync."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import msgspec
import psycopg
import pytest
from psycopg.rows import dict_row

from asyncq import App, BackendError, ConfigurationError, JobNotFound, JobState, UnknownParent
from asyncq.backends.postgres import PostgresBackend
from asyncq.backends.postgres.enqueue import COPY_MIN_BATCH
from asyncq.sync import SyncJob

pytestmark = [pytest.mark.postgres]


class Order(msgspec.Struct):
    order_id: str


def make_app(postgres_dsn: str) -> tuple[App, PostgresBackend]:
    backend = PostgresBackend.from_url(
        postgres_dsn, schema=f"t{uuid.uuid4().hex[:12]}", migrate=True
    )
    application = App("pg-psycopg", backend=backend)

    @application.job(schema=Order, name="ship")
    async def ship(payload: Order) -> str:
        return f"shipped {payload.order_id}"

    return application, backend


@pytest.fixture
async def app(postgres_dsn: str) -> AsyncIterator[App]:
    application, backend = make_app(postgres_dsn)
    try:
        yield application
    finally:
        await application.close()
        await backend.drop()


@pytest.fixture
async def aconn(postgres_dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    # dict rows, as many applications configure: asyncq reads its own rows as tuples
    conn = await psycopg.AsyncConnection.connect(postgres_dsn, row_factory=dict_row)
    try:
        yield conn
    finally:
        await conn.close()


def count_jobs(backend: PostgresBackend, dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{backend._schema}".jobs').fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.anyio
async def test_commit_wakes_a_worker_and_rollback_stores_nothing(
    app: App, aconn: psycopg.AsyncConnection[Any]
) -> None:
    """The job exists iff the caller commits; the commit's notification wakes an idle worker."""
    ship = app.handlers["ship"]
    with anyio.fail_after(30):
        # A worker that would poll only every 60 s: it can only run the job in
        # time if the enqueue's notification, sent at commit, wakes it.
        async with app.worker(concurrency=2, poll_interval=60):
            async with aconn.transaction():
                kept = await ship.enqueue(Order("o-1"), connection=aconn)
                with pytest.raises(JobNotFound):  # not visible before the commit
                    await kept.info()
            assert await kept.result(timeout=10) == "shipped o-1"

        async with aconn.transaction():
            dropped = await ship.enqueue(Order("o-2"), connection=aconn)
            raise psycopg.Rollback  # the transaction block rolls back, raising nothing
        with pytest.raises(JobNotFound):
            await dropped.info()


@pytest.mark.anyio
async def test_keys_ids_debounce_parents_and_limits_in_the_callers_transaction(
    app: App, aconn: psycopg.AsyncConnection[Any]
) -> None:
    """Every enqueue statement binds psycopg's parameters: keys, ids, debounce, after=, limits."""
    ship = app.handlers["ship"]
    one = app.limit("one", concurrency=1)

    @app.job(schema=Order, name="limited", limits=[one])
    async def limited(payload: Order) -> str:
        return payload.order_id

    with anyio.fail_after(30):
        async with aconn.transaction():
            first = await ship.enqueue(Order("k-1"), connection=aconn, key="k", priority=3)
            again = await ship.enqueue(Order("k-2"), connection=aconn, key="k")
            mine = await ship.enqueue(Order("i-1"), connection=aconn, id="order-i-1")
            same = await ship.enqueue(Order("i-2"), connection=aconn, id="order-i-1")
            deb1 = await ship.enqueue(Order("d-1"), connection=aconn, key="d", debounce=30)
            deb2 = await ship.enqueue(Order("d-2"), connection=aconn, key="d", debounce=30)
            child = await ship.enqueue(Order("c"), connection=aconn, after=[first])
            gated = await limited.enqueue(Order("l"), connection=aconn)
            # An unknown parent fails its own savepoint only: the transaction goes on.
            with pytest.raises(UnknownParent, match="no-such-job"):
                await ship.enqueue(Order("x"), connection=aconn, after=["no-such-job"])
            many = await ship.enqueue_many(
                [(Order("m-1"), {"key": "m"}), (Order("m-2"), {"key": "m"})], connection=aconn
            )
            with pytest.raises(JobNotFound):
                await first.info()

        assert (first.created, again.created, again.id) == (True, False, first.id)
        assert (mine.id, mine.created, same.created) == ("order-i-1", True, False)
        assert (deb1.id, deb2.id, deb2.created) == (deb1.id, deb1.id, False)
        assert [h.created for h in many] == [True, False]
        assert many[1].id == many[0].id

        info = await first.info()
        assert (info.key, info.priority, info.state) == ("k", 3, JobState.QUEUED)
        assert msgspec.msgpack.decode((await mine.info()).payload) == {"order_id": "i-1"}
        debounced = await deb1.info()
        assert msgspec.msgpack.decode(debounced.payload) == {"order_id": "d-2"}
        assert debounced.state is JobState.SCHEDULED
        kid = await child.info()
        assert (kid.parents, kid.state) == ((first.id,), JobState.WAITING)
        assert [gate.name for gate in (await gated.info()).limits] == ["one"]


@pytest.mark.anyio
async def test_a_holder_read_through_psycopg_is_the_job_as_asyncpg_reads_it(
    app: App, aconn: psycopg.AsyncConnection[Any]
) -> None:
    """The holder a keyed enqueue answers with (a ``ROW(...)`` of every column) decodes
    through psycopg to the very record the pooled asyncpg connections read."""
    ship = app.handlers["ship"]
    one = app.limit("one", concurrency=1)

    @app.job(schema=Order, name="gated", limits=[one])
    async def gated(payload: Order) -> str:
        return payload.order_id

    with anyio.fail_after(20):
        backend = await app.backend_opened()
        assert isinstance(backend, PostgresBackend)
        for handler in (ship, gated):
            first = handler.record(
                Order("h-1"),
                key=f"hold-{handler.name}",
                key_ttl=30.5,
                priority=-2,
                meta={"tenant": "acme", "n": [1, 2]},
                timeout=7.25,
                max_attempts=4,
            )
            [stored] = await backend.enqueue([first], connection=aconn)
            await aconn.commit()
            again = handler.record(Order("h-2"), key=f"hold-{handler.name}")
            [holder] = await backend.enqueue([again], connection=aconn)
            await aconn.commit()
            assert holder.id == stored.id
            assert holder == await backend.get(stored.id)
            assert holder.meta == {"tenant": "acme", "n": [1, 2]}


@pytest.mark.anyio
async def test_a_batch_over_the_copy_threshold_takes_the_insert(
    app: App, aconn: psycopg.AsyncConnection[Any], postgres_dsn: str
) -> None:
    ship = app.handlers["ship"]
    size = COPY_MIN_BATCH * 2 + 1
    with anyio.fail_after(30):
        async with aconn.transaction():
            handles = await ship.enqueue_many(
                [Order(f"b-{n}") for n in range(size)], connection=aconn
            )
        assert all(h.created for h in handles)
        assert {(await h.info()).state for h in handles} == {JobState.QUEUED}

        async with aconn.transaction():
            await ship.enqueue_many([Order(f"r-{n}") for n in range(size)], connection=aconn)
            raise psycopg.Rollback
        backend = app.backend
        assert isinstance(backend, PostgresBackend)
        assert await anyio.to_thread.run_sync(count_jobs, backend, postgres_dsn) == size


@pytest.mark.anyio
async def test_autocommit_connection_stores_at_once(app: App, postgres_dsn: str) -> None:
    """Outside a transaction block, each statement commits by itself (a batch in one)."""
    ship = app.handlers["ship"]
    with anyio.fail_after(20):
        conn = await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True)
        try:
            handle = await ship.enqueue(Order("a-1"), connection=conn)
        finally:
            await conn.close()
        assert (await handle.info()).state is JobState.QUEUED


@pytest.mark.anyio
async def test_a_sync_connection_from_async_code_and_a_failed_transaction(
    app: App, postgres_dsn: str
) -> None:
    """A sync ``psycopg.Connection`` awaited from async code; psycopg's errors are asyncq's."""
    ship = app.handlers["ship"]
    with anyio.fail_after(20):
        conn = await anyio.to_thread.run_sync(psycopg.connect, postgres_dsn)
        try:
            handle = await ship.enqueue(Order("sa-1"), connection=conn)
            await anyio.to_thread.run_sync(conn.commit)
            assert (await handle.info()).state is JobState.QUEUED

            # A transaction already aborted by the caller's own failed statement.
            with pytest.raises(psycopg.errors.DivisionByZero):
                await anyio.to_thread.run_sync(conn.execute, "SELECT 1/0")
            with pytest.raises(BackendError, match="InFailedSqlTransaction"):
                await ship.enqueue(Order("sa-2"), connection=conn)
            await anyio.to_thread.run_sync(conn.rollback)
        finally:
            await anyio.to_thread.run_sync(conn.close)


@pytest.mark.anyio
async def test_a_connection_of_another_kind_is_refused(app: App, postgres_dsn: str) -> None:
    ship = app.handlers["ship"]
    with anyio.fail_after(20):
        for wrong in (object(), "postgresql://127.0.0.1/test"):
            with pytest.raises(ConfigurationError) as caught:
                await ship.enqueue(Order("w"), connection=wrong)
            message = str(caught.value)
            assert "asyncpg connection" in message
            assert "psycopg.AsyncConnection, psycopg.Connection" in message
            assert "'ship'" in message
            assert "nothing stored" in message
        conn = await psycopg.AsyncConnection.connect(postgres_dsn)
        try:
            with pytest.raises(ConfigurationError, match="AsyncCursor"):
                await ship.enqueue(Order("w"), connection=conn.cursor())
        finally:
            await conn.close()


# -- the sync path -----------------------------------------------------------------


@pytest.fixture
def sync_app(postgres_dsn: str) -> Iterator[App]:
    application, backend = make_app(postgres_dsn)
    try:
        yield application
    finally:
        application.sync.call(backend.drop)
        application.sync.close()


@pytest.mark.timeout(60)
def test_sync_enqueue_in_a_psycopg_transaction(sync_app: App, postgres_dsn: str) -> None:
    """``app.sync`` with a sync ``psycopg.Connection``, as a Django view in ``atomic()`` does."""
    ship = sync_app.handlers["ship"]
    with psycopg.connect(postgres_dsn, row_factory=dict_row) as conn:
        with conn.transaction():
            kept = sync_app.sync.enqueue(ship, Order("s-1"), connection=conn, key="s")
            again = sync_app.sync.enqueue(ship, Order("s-2"), connection=conn, key="s")
            batch = sync_app.sync.enqueue_many(
                ship, [Order(f"sb-{n}") for n in range(COPY_MIN_BATCH + 1)], connection=conn
            )
            # Still uncommitted: another session sees nothing.
            with pytest.raises(JobNotFound):
                kept.info()
        with conn.transaction():
            dropped = sync_app.sync.enqueue(ship, Order("s-3"), connection=conn)
            raise psycopg.Rollback
    assert again.id == kept.id
    assert not again.created
    assert kept.info().state is JobState.QUEUED
    assert {job.info().state for job in batch} == {JobState.QUEUED}
    with pytest.raises(JobNotFound):
        dropped.info()


@pytest.mark.timeout(60)
def test_sync_enqueue_runs_on_a_worker_thread(sync_app: App, postgres_dsn: str) -> None:
    """The statements of a sync connection leave the background loop free: it serves another
    thread's call while one of them waits on a lock the caller's transaction holds."""
    ship = sync_app.handlers["ship"]
    with psycopg.connect(postgres_dsn) as holder, psycopg.connect(postgres_dsn) as waiter:
        with holder.transaction():
            sync_app.sync.enqueue(ship, Order("h"), connection=holder, key="busy")
            outcome: list[object] = []

            def blocked() -> None:
                with waiter.transaction():
                    # Waits for the holder's key (its row lock) until the holder commits.
                    outcome.append(
                        sync_app.sync.enqueue(ship, Order("w"), connection=waiter, key="busy")
                    )

            thread = threading.Thread(target=blocked)
            thread.start()
            wait_for_lock(postgres_dsn, waiter.info.backend_pid)
            # Meanwhile the loop still answers: a plain enqueue from this thread
            # (in another queue: the holder's uncommitted first job of "default"
            # also holds that queue's new row in the queues table).
            plain = sync_app.sync.enqueue(ship, Order("p"), queue="elsewhere")
            assert plain.info().state is JobState.QUEUED
        thread.join(timeout=30)
        assert not thread.is_alive()
    [waited] = outcome
    assert isinstance(waited, SyncJob)
    assert not waited.created  # the holder's job, committed meanwhile


def wait_for_lock(dsn: str, pid: int) -> None:
    """Return once the server session ``pid`` waits for a lock (a condition no event tells)."""
    deadline = time.monotonic() + 20
    # Autocommit: each read sees the activity afresh (a transaction keeps its first look).
    with psycopg.connect(dsn, autocommit=True) as session:
        while time.monotonic() < deadline:
            row = session.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]
            ).fetchone()
            if row is not None and row[0] == "Lock":
                return
            time.sleep(0.02)
    pytest.fail(f"session {pid} never waited for the holder's lock")
