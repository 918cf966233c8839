"""``app.sync``: blocking producer calls from many threads, with no event loop of their own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import anyio
import msgspec
import pytest

from _stores import store_url_any
from asyncq import App, JobState
from asyncq._handler import Handler
from asyncq.exceptions import ConfigurationError, JobFailed, JobNotFound

__all__ = ["store_url_any"]


class Add(msgspec.Struct):
    a: int
    b: int


class Made(msgspec.Struct):
    app: App
    add: Handler[Add, int]
    fail: Handler[Add, int]


@pytest.fixture
def made(store_url_any: str) -> Iterator[Made]:
    app = App("sync", backend=store_url_any, telemetry=False)

    @app.job(schema=Add, name="sync.add")
    async def add(payload: Add) -> int:
        return payload.a + payload.b

    @app.job(schema=Add, name="sync.fail", max_attempts=1)
    async def fail(payload: Add) -> int:
        raise ValueError("no")

    yield Made(app, add, fail)
    app.sync.close()
    assert not app.sync.running


@pytest.fixture
def worker_thread(made: Made) -> Iterator[None]:
    """A worker in a thread of its own, on its own loop (not for the in-process store)."""
    if made.app.backend_spec == "memory://":
        pytest.skip("the in-process store is one store: one loop at a time")
    started, stop = threading.Event(), threading.Event()

    async def run() -> None:
        async with made.app.worker(concurrency=4):
            started.set()
            await anyio.to_thread.run_sync(stop.wait)

    thread = threading.Thread(target=asyncio.run, args=(run(),))
    thread.start()
    assert started.wait(20)
    yield
    stop.set()
    thread.join(20)
    assert not thread.is_alive()


def test_enqueue_from_many_threads(made: Made) -> None:
    app, add = made.app, made.add

    def produce(n: int) -> list[str]:
        one = app.sync.enqueue(add, Add(n, 0), key=f"k{n}")
        more = app.sync.enqueue_many(add, [Add(n, i) for i in range(1, 4)], priority=1)
        return [one.id] + [h.id for h in more]

    with ThreadPoolExecutor(8) as pool:
        ids = [i for batch in pool.map(produce, range(16)) for i in batch]
    assert len(set(ids)) == 16 * 4
    job = app.sync.get_job(ids[0], add)
    info = job.info()
    assert (info.name, info.state) == ("sync.add", JobState.QUEUED)
    again = app.sync.enqueue(add, Add(0, 0), key="k0")
    assert (again.id, again.created) == (ids[0], False)
    assert job.cancel().state is JobState.CANCELLED
    assert job.remove() is True
    with pytest.raises(JobNotFound):
        job.info()


@pytest.mark.usefixtures("worker_thread")
def test_enqueue_and_wait_from_many_threads(made: Made) -> None:
    app, add = made.app, made.add

    def request(n: int) -> int:
        return app.sync.enqueue_and_wait(add, Add(n, 1000), timeout=20)

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(request, range(12))) == [n + 1000 for n in range(12)]
    handle = app.sync.enqueue(add, Add(2, 3))
    assert handle.result(timeout=20) == 5
    with pytest.raises(JobFailed, match="no"):
        app.sync.enqueue_and_wait(made.fail, Add(0, 0), timeout=20)


def test_refused_inside_an_event_loop(made: Made) -> None:
    async def inside() -> None:
        made.app.sync.enqueue(made.add, Add(1, 2))

    with pytest.raises(ConfigurationError, match="await the async API"):
        asyncio.run(inside())


def test_close_then_use_again(made: Made) -> None:
    first = made.app.sync.enqueue(made.add, Add(1, 2))
    assert made.app.sync.running
    made.app.sync.close()
    assert not made.app.sync.running
    assert made.app.sync.get_job(first.id).info().state is JobState.QUEUED
    assert made.app.sync.running


def test_sync_api_type_checks() -> None:
    from test_typing import ROOT, mypy

    result = mypy(ROOT / "tests" / "typing" / "check_sync_api.py")
    assert result.returncode == 0, result.stdout + result.stderr
