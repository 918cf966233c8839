"""The worker registry and prompt cancel, on every store.

- ``put_worker`` / ``workers``: an upsert by id, stamped by the store, whose
  expired entries go on the next put or list;
- a worker registers when it starts, renews while it runs and says goodbye
  when it stops;
- stores that push cancels (``PUSHES_CANCEL``) tell a watcher of a cancelled
  active job at once, and a worker stops that job long before its heartbeat.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import anyio
import msgspec
import pytest

from asyncq import App, JobCancelled, JobFailed
from asyncq._records import WORKERS_KEPT_FOR, WorkerInfo, WorkerStatus
from asyncq.backends.base import PUSHES_CANCEL, Backend
from asyncq.backends.memory import MemoryBackend
from asyncq.backends.sqlite import SQLiteBackend
from asyncq.exceptions import BackendUnavailable
from backends._records import job

pytestmark = pytest.mark.anyio


def info(worker_id: str = "host:1:abc", **changes: object) -> WorkerInfo:
    now = time.time()
    fields: dict[str, object] = {
        "id": worker_id,
        "host": "host",
        "pid": 1,
        "app": "shop",
        "queues": ("default", "mail"),
        "concurrency": 4,
        "started_at": now,
        "last_seen": now,
        "lease_for": 30.0,
        "version": "0.1.0",
    }
    fields.update(changes)
    return WorkerInfo(**fields)  # type: ignore[arg-type]


# -- the record's status -----------------------------------------------------------


def test_status_running_stopped_lost() -> None:
    seen = info(last_seen=1000.0, lease_for=30.0)
    assert seen.status(now=1029.0) is WorkerStatus.RUNNING
    assert seen.status(now=1031.0) is WorkerStatus.LOST
    stopped = msgspec.structs.replace(seen, stopped_at=1010.0)
    assert stopped.status(now=5000.0) is WorkerStatus.STOPPED


def test_expiry_keeps_a_running_worker_for_its_lease_at_least() -> None:
    assert info(last_seen=0.0, lease_for=30.0).expires_at() == WORKERS_KEPT_FOR
    assert info(last_seen=0.0, lease_for=900.0).expires_at() == 900.0
    stopped = info(last_seen=0.0, lease_for=900.0, stopped_at=0.0)
    assert stopped.expires_at() == WORKERS_KEPT_FOR


# -- put_worker / workers ------------------------------------------------------------


async def test_put_then_list_is_an_upsert_stamped_by_the_store(backend: Backend) -> None:
    with anyio.fail_after(10):
        before = time.time()
        await backend.put_worker(info("a", last_seen=1.0, processed=1))
        await backend.put_worker(info("b", running=("j1", "j2")))
        await backend.put_worker(info("a", last_seen=1.0, processed=5, failed=2, dead=1))
        found = await backend.workers()
    assert [w.id for w in found] == ["a", "b"]
    a, b = found
    assert (a.processed, a.failed, a.dead) == (5, 2, 1)
    assert a.queues == ("default", "mail")
    assert b.running == ("j1", "j2")
    # The store's clock, not the worker's (1.0); clocks on one machine agree.
    assert a.last_seen >= before - 5
    assert a.status() is WorkerStatus.RUNNING


async def test_a_stopped_worker_shows_stopped(backend: Backend) -> None:
    with anyio.fail_after(10):
        await backend.put_worker(info("a", stopped_at=time.time()))
        (found,) = await backend.workers()
    assert found.status() is WorkerStatus.STOPPED


async def test_expired_entries_are_deleted(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncq._records

    monkeypatch.setattr(asyncq._records, "WORKERS_KEPT_FOR", 0.0)
    with anyio.fail_after(10):
        await backend.put_worker(info("gone", lease_for=0.001, stopped_at=time.time()))
        await backend.put_worker(info("kept", lease_for=60.0))
        await anyio.sleep(0.05)  # the entry's time passes
        assert [w.id for w in await backend.workers()] == ["kept"]
        await backend.put_worker(info("gone-too", lease_for=0.001, stopped_at=time.time()))
        await anyio.sleep(0.05)
        await backend.put_worker(info("kept"))
        assert [w.id for w in await backend.workers()] == ["kept"]


# -- a worker in the registry ---------------------------------------------------------


class Nothing(msgspec.Struct):
    n: int = 0


async def test_a_worker_registers_renews_and_says_goodbye(backend: Backend) -> None:
    app = App("registry", backend=backend)

    @app.job(schema=Nothing, name="fails", max_attempts=1)
    async def fails(payload: Nothing) -> None:
        raise ValueError(payload.n)

    @app.job(schema=Nothing, name="works")
    async def works(payload: Nothing) -> int:
        return payload.n

    with anyio.fail_after(20):
        async with app.worker(concurrency=2, heartbeat=0.05, lease=5) as worker:
            # Registered as it started, before the block runs.
            (first,) = await backend.workers()
            assert first.id == worker.name
            assert first.status() is WorkerStatus.RUNNING
            assert (first.app, first.concurrency, first.lease_for) == ("registry", 2, 5.0)
            await works.enqueue_and_wait(Nothing(3))
            handle = await fails.enqueue(Nothing())
            with pytest.raises(JobFailed):
                await handle.result(timeout=10)
        (last,) = await backend.workers()
    assert last.id == worker.name
    assert last.last_seen >= first.last_seen
    assert last.status() is WorkerStatus.STOPPED
    assert (last.processed, last.failed, last.dead) == (2, 0, 1)
    assert last.running == ()


class CountingPuts(MemoryBackend):
    """A memory store that lets a test wait for the worker's renewals."""

    def __init__(self) -> None:
        super().__init__()
        self.puts: list[WorkerInfo] = []
        self.put = anyio.Event()

    async def put_worker(self, info: WorkerInfo) -> None:
        await super().put_worker(info)
        self.puts.append(info)
        self.put.set()
        self.put = anyio.Event()


async def test_the_entry_is_renewed_every_heartbeat_and_a_failing_put_is_retried() -> None:
    backend = CountingPuts()
    app = App("registry", backend=backend)
    failures = 1
    put = backend.put_worker

    async def flaky(info: WorkerInfo) -> None:
        nonlocal failures
        if failures and backend.puts:
            failures -= 1
            backend.put.set()
            backend.put = anyio.Event()
            raise BackendUnavailable("the store is away")
        await put(info)

    backend.put_worker = flaky  # type: ignore[method-assign]
    with anyio.fail_after(10):
        async with app.worker(heartbeat=0.01, lease=5):
            while len(backend.puts) < 3:
                await backend.put.wait()
    assert failures == 0
    assert [info.stopped_at is None for info in backend.puts[:3]] == [True] * 3
    assert backend.puts[-1].stopped_at is not None


# -- prompt cancel ------------------------------------------------------------------


async def test_a_cancel_of_an_active_job_is_pushed_to_watchers(backend: Backend) -> None:
    pushes = PUSHES_CANCEL.of(backend)
    if pushes is None:
        pytest.skip(f"{type(backend).__name__} does not push cancels")
    heard: list[str] = []
    arrived = anyio.Event()

    def callback(job_id: str) -> None:
        heard.append(job_id)
        arrived.set()

    with anyio.fail_after(10):
        queued, running = job(), job()
        await backend.enqueue([running])
        [lease] = await backend.claim(["default"], 1, worker="w", lease_for=30)
        await backend.enqueue([queued])
        async with anyio.create_task_group() as tg:
            await tg.start(pushes.watch_cancels, callback)
            await backend.cancel(queued.id)  # not active: nothing to push
            await backend.cancel(lease.job.id)
            with anyio.fail_after(2):
                await arrived.wait()
            tg.cancel_scope.cancel()
    assert set(heard) == {running.id}


async def test_cancelling_a_running_job_lands_long_before_the_heartbeat(
    backend: Backend,
) -> None:
    app = App("prompt", backend=backend)
    started = anyio.Event()

    @app.job(schema=Nothing, name="waits")
    async def waits(payload: Nothing) -> None:
        started.set()
        await anyio.Event().wait()  # never set

    with anyio.fail_after(20):
        # Heartbeats every 10 s: a cancel seen within 2 s came by notice.
        async with app.worker(lease=30, heartbeat=10):
            handle = await waits.enqueue(Nothing())
            await started.wait()
            with anyio.fail_after(2):
                await handle.cancel()
                with pytest.raises(JobCancelled):
                    await handle.result(timeout=2)


# -- SQLite: other processes -----------------------------------------------------------


async def test_sqlite_hears_a_cancel_from_another_process_by_polling(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.db")
    worker_side = SQLiteBackend(path, poll_interval=0.02)
    operator_side = SQLiteBackend(path)
    arrived = anyio.Event()
    heard: list[str] = []

    def callback(job_id: str) -> None:
        heard.append(job_id)
        arrived.set()

    with anyio.fail_after(10):
        await worker_side.open()
        await operator_side.open()
        try:
            running = job()
            await worker_side.enqueue([running])
            await worker_side.claim(["default"], 1, worker="w", lease_for=30)
            async with anyio.create_task_group() as tg:
                await tg.start(worker_side.watch_cancels, callback)
                await operator_side.cancel(running.id)
                with anyio.fail_after(2):
                    await arrived.wait()
                tg.cancel_scope.cancel()
        finally:
            await operator_side.close()
            await worker_side.close()
    assert heard == [running.id]


async def test_sqlite_database_of_the_first_version_gains_the_registry(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with anyio.fail_after(10):
        backend = SQLiteBackend(str(path))
        await backend.open()
        await backend.close()
        conn = sqlite3.connect(path)
        with conn:  # as the first release left it
            conn.execute("DROP TABLE asyncq_workers")
            conn.execute("UPDATE asyncq_meta SET value = 1 WHERE key = 'schema_version'")
        conn.close()
        backend = SQLiteBackend(str(path))
        await backend.open()
        try:
            await backend.put_worker(info("a"))
            assert [w.id for w in await backend.workers()] == ["a"]
        finally:
            await backend.close()


async def test_sqlite_worker_stops_a_job_cancelled_by_another_process(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.db")
    app = App("prompt", backend=SQLiteBackend(path, poll_interval=0.05))
    operator_side = SQLiteBackend(path)
    started = anyio.Event()

    @app.job(schema=Nothing, name="waits")
    async def waits(payload: Nothing) -> None:
        started.set()
        await anyio.Event().wait()  # never set

    with anyio.fail_after(20):
        await operator_side.open()
        try:
            async with app, app.worker(lease=30, heartbeat=10):
                handle = await waits.enqueue(Nothing())
                await started.wait()
                with anyio.fail_after(2):
                    await operator_side.cancel(handle.id)
                    with pytest.raises(JobCancelled):
                        await handle.result(timeout=2)
        finally:
            await operator_side.close()
