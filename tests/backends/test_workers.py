"""The worker registry and prompt cancel, on every store.

- ``put_worker`` / ``workers``: an upsert by id, stamped by the store, whose
  expired entries go on the next put or list;
- a worker registers when it starts, renews while it runs and says goodbye
  when it stops;
- stores that push cancels (``PUSHES_CANCEL``) tell a watcher of a cancelled
  active job at once, and a worker stops that job long before its heartbeat.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import msgspec
import pytest

from asyncq import App, JobCancelled
from asyncq._records import WORKERS_KEPT_FOR, WorkerInfo, WorkerStatus
from asyncq.backends.base import PUSHES_CANCEL, Backend
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


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Wait until ``check()`` holds: what the store shows after another task's call."""
    with anyio.fail_after(within):
        while not await check():
            await anyio.sleep(0.01)


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

    async def listed() -> bool:
        return bool(await backend.workers())

    with anyio.fail_after(20):
        async with app.worker(concurrency=2, heartbeat=0.05, lease=5) as worker:
            await eventually(listed)
            (first,) = await backend.workers()
            assert first.id == worker.name
            assert first.status() is WorkerStatus.RUNNING
            assert (first.app, first.concurrency, first.lease_for) == ("registry", 2, 5.0)
            await works.enqueue_and_wait(Nothing(3))
            handle = await fails.enqueue(Nothing())
            with pytest.raises(Exception):  # noqa: B017, PT011 - JobFailed, the job is dead
                await handle.result(timeout=10)

            async def renewed() -> bool:
                (now,) = await backend.workers()
                return now.processed == 2 and now.last_seen > first.last_seen

            await eventually(renewed)
        (last,) = await backend.workers()
    assert last.status() is WorkerStatus.STOPPED
    assert (last.processed, last.failed, last.dead) == (2, 0, 1)
    assert last.running == ()


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
