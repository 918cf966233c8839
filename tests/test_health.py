"""Health probes: ``/livez`` and ``/readyz`` beside a worker, and ``asyncq run --health-port``."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from _services import free_port
from asyncq import App, BackendUnavailable, Worker
from asyncq._health import HealthServer
from asyncq.backends.base import Backend, QueueStats
from asyncq.backends.memory import MemoryBackend

pytestmark = pytest.mark.anyio


class Empty(msgspec.Struct):
    pass


async def request(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` to the probe server; the status, the headers and the body of its answer."""
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(raw)
            data = b""
            try:
                while True:
                    data += await stream.receive()
            except anyio.EndOfStream:
                pass
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    assert status_line.startswith("HTTP/1.1 ")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


async def flood(port: int) -> bytes:
    """Send 100 KB of headers; what the server answers (nothing if it cut the connection)."""
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            try:
                for _ in range(100):
                    await stream.send(b"X-Long: " + b"x" * 1000 + b"\r\n")
                return await stream.receive()
            except (anyio.BrokenResourceError, anyio.EndOfStream, OSError):
                return b""


async def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    status, headers, body = await request(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    assert headers["Connection"] == "close"
    return status, json.loads(body)


@asynccontextmanager
async def probed(app: App, **options: Any) -> AsyncIterator[tuple[HealthServer, Worker]]:
    server = HealthServer("127.0.0.1", 0, **options)
    await server.bind()
    async with app.worker(poll_interval=0.2, services=[server.serve]) as worker:
        yield server, worker


async def test_livez_and_readyz_answer_on_every_backend(backend: Backend) -> None:
    app = App("health", backend=backend)
    async with probed(app) as (server, worker):
        assert server.port > 0
        assert await get(server.port, "/livez") == (200, {"status": "ok", "worker": worker.name})
        assert await get(server.port, "/readyz") == (
            200,
            {"status": "ready", "worker": worker.name},
        )


async def test_other_requests() -> None:
    app = App("health", backend="memory://")
    async with probed(app) as (server, _):
        port = server.port
        assert (await get(port, "/nope"))[0] == 404
        assert (await get(port, "/livez?verbose=1"))[0] == 200
        status, _, body = await request(port, b"POST /livez HTTP/1.1\r\n\r\n")
        assert status == 405
        status, headers, body = await request(port, b"HEAD /readyz HTTP/1.1\r\n\r\n")
        assert (status, body) == (200, b"")
        assert int(headers["Content-Length"]) > 0
        status, _, body = await request(port, b"hello\r\n\r\n")
        assert (status, json.loads(body)) == (400, {"status": "bad request"})
        status, _, _ = await request(port, b"GET /livez HTTP/1.1\n\n")  # bare newlines
        assert status == 200
        # A client that sends an endless header is refused or cut off, and the server goes on.
        answer = await flood(port)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400 Bad Request")
        assert (await get(port, "/livez"))[0] == 200


class Flaky(MemoryBackend):
    """A memory backend whose ``stats`` can be made to fail or to hang."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.hang = False

    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        if self.down:
            raise BackendUnavailable("memory:// is unavailable: test says so")
        if self.hang:
            await anyio.sleep_forever()
        return await super().stats(queues)


async def test_readyz_is_503_while_the_backend_is_down_or_slow() -> None:
    backend = Flaky()
    app = App("health", backend=backend)
    async with probed(app, ready_timeout=0.2) as (server, _):
        assert (await get(server.port, "/readyz"))[0] == 200
        backend.down = True
        status, body = await get(server.port, "/readyz")
        assert status == 503
        assert body["status"] == "unavailable"
        assert "test says so" in body["reason"]
        assert (await get(server.port, "/livez"))[0] == 200  # alive, just not ready
        backend.down, backend.hang = False, True
        status, body = await get(server.port, "/readyz")
        assert status == 503
        assert body["reason"] == "backend memory:// did not answer within 0.2s"
        backend.hang = False
        assert (await get(server.port, "/readyz"))[0] == 200


async def test_readyz_is_503_once_the_worker_is_stopping() -> None:
    app = App("health", backend="memory://")
    started, release = anyio.Event(), anyio.Event()

    @app.job(schema=Empty, name="hold")
    async def hold(payload: Empty) -> None:
        started.set()
        await release.wait()

    async with probed(app) as (server, worker):
        await hold.enqueue(Empty())
        with anyio.fail_after(10):
            await started.wait()
        worker.stop()  # draining: the running job may finish, nothing new is claimed
        status, body = await get(server.port, "/readyz")
        assert (status, body["reason"]) == (503, "the worker is stopping")
        release.set()


async def test_binding_a_port_in_use_fails_before_the_worker_starts() -> None:
    first = HealthServer("127.0.0.1", 0)
    await first.bind()
    second = HealthServer("127.0.0.1", first.port)
    with pytest.raises(OSError):
        await second.bind()
    assert repr(second) == f"HealthServer('127.0.0.1', {first.port})"
    assert first._listener is not None
    await first._listener.aclose()


APP_SOURCE = textwrap.dedent(
    """
    from asyncq import App

    app = App("probed")


    @app.job(schema=int, name="noop")
    async def noop(payload: int) -> None:
        pass
    """
)


@pytest.mark.slow
async def test_asyncq_run_serves_the_probes(tmp_path: Path) -> None:
    (tmp_path / "probed.py").write_text(APP_SOURCE)
    port = free_port()
    env = {**os.environ, "ASYNCQ_BACKEND": f"sqlite:///{tmp_path / 'jobs.db'}"}
    args = [sys.executable, "-m", "asyncq", "run", "probed:app"]
    args += ["--health-port", str(port), "--health-host", "127.0.0.1"]
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        proc = await anyio.open_process(args, cwd=tmp_path, env=env, stderr=stderr)
    try:
        with anyio.fail_after(30):
            # Another process: the only way to know it listens is to try.
            while True:
                try:
                    status, body = await get(port, "/readyz")
                    break
                except OSError:
                    assert proc.returncode is None, log.read_text()
                    await anyio.sleep(0.05)
            assert (status, body["status"]) == (200, "ready")
            assert (await get(port, "/livez"))[0] == 200
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
        assert f"health probes on http://127.0.0.1:{port}/livez" in log.read_text()

        # The port is taken: the command fails at once, naming it.
        blocker = HealthServer("127.0.0.1", port)
        await blocker.bind()
        with anyio.fail_after(30):
            busy = await anyio.run_process(args, cwd=tmp_path, env=env, check=False)
        assert busy.returncode == 1
        assert f"cannot serve health probes on 127.0.0.1:{port}" in busy.stderr.decode()
        assert blocker._listener is not None
        await blocker._listener.aclose()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.aclose()
