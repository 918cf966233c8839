"""An App made at import time, used from many event loops: in turn, and in threads at once."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import msgspec
import pytest

from _stores import store_url_any
from asyncq import App
from asyncq.backends.base import Backend
from asyncq.backends.sqlite import SQLiteBackend
from asyncq.exceptions import ConfigurationError

__all__ = ["store_url_any"]


class Add(msgspec.Struct):
    a: int
    b: int


def make_app(url: str) -> App:
    app = App("loops", backend=url, telemetry=False)

    @app.job(schema=Add, name="loops.add")
    async def add(payload: Add) -> int:
        return payload.a + payload.b

    return app


def closed(backend: Backend) -> bool:
    """Whether the store let go of its connections (each store says it its own way)."""
    transport = getattr(backend, "_transport", None)
    if transport is not None and hasattr(transport, "pool"):  # PostgreSQL: the pool is gone
        return transport.pool is None and transport.closed is True
    flag: bool = backend._closed  # type: ignore[attr-defined]
    return flag


def test_asyncio_run_three_times(store_url_any: str) -> None:
    app = make_app(store_url_any)
    add = app.handlers["loops.add"]
    ids: list[str] = []
    used: list[Backend] = []

    async def produce() -> None:
        with anyio.fail_after(10):
            ids.append((await add.enqueue(Add(len(ids), 1))).id)
            used.append(app.backend)

    async def consume() -> list[int]:
        with anyio.fail_after(20):
            async with app.worker(concurrency=2):
                total = await add.enqueue_and_wait(Add(40, 2), timeout=15)
                return [total] + [await app.get_job(i).result(timeout=15) for i in ids]

    asyncio.run(produce())
    asyncio.run(produce())
    assert asyncio.run(consume()) == [42, 1, 2]
    # Every loop's backend was closed when its loop shut down.
    assert all(closed(b) for b in used)


@pytest.mark.parametrize("threads", [2])
def test_threads_each_with_a_loop(store_url_any: str, threads: int) -> None:
    if store_url_any == "memory://":
        pytest.skip("the in-process store is one store: one loop at a time (docs/integrations.md)")
    app = make_app(store_url_any)
    add = app.handlers["loops.add"]
    results: dict[int, int] = {}
    errors: list[BaseException] = []
    both_open = threading.Barrier(threads, timeout=20)

    async def work(n: int) -> None:
        with anyio.fail_after(30):
            await app.open()
            await anyio.to_thread.run_sync(both_open.wait)
            async with app.worker(concurrency=2):
                results[n] = await add.enqueue_and_wait(Add(n, 100), timeout=20)

    def run(n: int) -> None:
        try:
            asyncio.run(work(n))
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    assert errors == []
    assert results == {n: n + 100 for n in range(threads)}


def test_close_in_a_loop_then_use_again(store_url_any: str) -> None:
    app = make_app(store_url_any)
    add = app.handlers["loops.add"]

    async def main() -> None:
        with anyio.fail_after(10):
            async with app:
                first = await add.enqueue(Add(1, 1))
            # closed by the block; the next call opens again
            assert (await first.info()).name == "loops.add"

    asyncio.run(main())
    asyncio.run(main())


def test_an_instance_is_refused_in_a_second_loop_at_once(tmp_path: Path) -> None:
    instance = SQLiteBackend(tmp_path / "jobs.db")
    app = App("loops", backend=instance, telemetry=False)
    opened = threading.Event()
    release = threading.Event()

    async def hold() -> None:
        await app.open()
        opened.set()
        await anyio.to_thread.run_sync(release.wait)

    holder = threading.Thread(target=asyncio.run, args=(hold(),))
    holder.start()
    try:
        assert opened.wait(10)

        async def second() -> None:
            await app.open()

        with pytest.raises(ConfigurationError, match=r"open in another event loop.*URL"):
            asyncio.run(second())
    finally:
        release.set()
        holder.join(10)

    # In turn, the instance is reopened by the next loop.
    async def again() -> str:
        async with app:
            return app.backend.url

    assert asyncio.run(again()).startswith("sqlite")
    assert app.backend is instance


def test_pytest_asyncio_function_scoped_loops(store_url_any: str, tmp_path: Path) -> None:
    pytest.importorskip("pytest_asyncio")
    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / "tests" / "plugin_samples" / "sample_loops.py", tmp_path / "test_s.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "SAMPLE_URL": store_url_any,
    }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "pytest_asyncio.plugin"]
    command += ["-o", "asyncio_default_fixture_loop_scope=function"]
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_the_in_process_store_stays_open_while_another_loop_holds_it() -> None:
    app = make_app("memory://")
    add = app.handlers["loops.add"]
    opened, go = threading.Event(), threading.Event()
    seen: list[int] = []

    async def holder() -> None:
        await app.open()
        opened.set()
        await anyio.to_thread.run_sync(go.wait)
        # The other loop ended meanwhile; the shared store is still open here.
        seen.append(len(await app.backend.list_jobs()))

    thread = threading.Thread(target=asyncio.run, args=(holder(),))
    thread.start()
    try:
        assert opened.wait(10)

        async def other() -> None:
            await add.enqueue(Add(1, 2))

        asyncio.run(other())
        assert not closed(app.backend)
    finally:
        go.set()
        thread.join(10)
    assert seen == [1]
    assert closed(app.backend)  # the last loop holding it closed it


def test_a_loop_that_only_looked_at_the_instance_does_not_hold_it(tmp_path: Path) -> None:
    instance = SQLiteBackend(tmp_path / "jobs.db")
    app = App("loops", backend=instance, telemetry=False)
    looked, go = threading.Event(), threading.Event()

    async def look() -> None:
        assert app.backend is instance  # made its slot, opened nothing
        looked.set()
        await anyio.to_thread.run_sync(go.wait)

    thread = threading.Thread(target=asyncio.run, args=(look(),))
    thread.start()
    try:
        assert looked.wait(10)

        async def use() -> str:
            async with app:
                return (await app.backend_opened()).url

        assert asyncio.run(use()).startswith("sqlite")
    finally:
        go.set()
        thread.join(10)
