"""Stores that tests share with processes they start, and servers of a test's own.

``store_url`` is a URL that a test and its ``asyncq run`` worker processes
share (a SQLite file, a Redis namespace or a PostgreSQL schema, parametrized
over the three). ``private_redis`` is a ``redis-server`` of the test's own,
which it may stop and start. Test modules import the fixtures they use.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis
from anyio.abc import Process

from asyncq.backends import from_url
from conftest import IN_CI

__all__ = ["RedisServer", "free_port", "private_redis", "store_url"]


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(
    params=[
        pytest.param("sqlite"),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL the test and its worker processes share, in a namespace of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    namespace = f"t{uuid.uuid4().hex[:12]}"
    if request.param == "redis":
        url = f"{request.getfixturevalue('redis_url')}?namespace={namespace}"
        yield url
        backend = from_url(url)
        await backend.open()
        await backend.drop()  # type: ignore[attr-defined]
        await backend.close()
        return
    dsn = request.getfixturevalue("postgres_dsn")
    url = f"{dsn}?schema={namespace}"
    backend = from_url(url, migrate=True)
    await backend.open()  # creates the schema the workers expect
    try:
        yield url
    finally:
        await backend.drop()  # type: ignore[attr-defined]
        await backend.close()


class RedisServer:
    """A ``redis-server`` of the test's own, whose data survives a restart.

    The append-only file, synced on every write, keeps the jobs across a stop
    and a start on the same port and directory.
    """

    def __init__(self, executable: str, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.argv = [executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        self.argv += ["--dir", str(directory), "--save", ""]
        self.argv += ["--appendonly", "yes", "--appendfsync", "always"]
        self.proc: Process | None = None

    async def start(self) -> None:
        """Start it and return once it answers PING (the caller bounds the wait)."""
        proc = self.proc = await anyio.open_process(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        probe = aioredis.Redis(host="127.0.0.1", port=self.port)
        try:
            while True:
                # Refused while it binds, LOADING while it replays the file.
                with contextlib.suppress(aioredis.ConnectionError):
                    if await probe.ping():
                        return
                if proc.returncode is not None:
                    msg = f"redis-server exited with {proc.returncode}: {self.argv}"
                    raise RuntimeError(msg)
                await anyio.sleep(0.02)
        finally:
            await probe.aclose()

    async def stop(self) -> None:
        """SIGTERM, and wait for the process to end."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A private server, not yet started; stopped at the end if it runs."""
    executable = shutil.which("redis-server")
    if executable is None:
        if IN_CI:
            pytest.fail("redis-server is not installed (CI=true: integration tests must run)")
        pytest.skip("redis-server is not installed (apt install redis-server)")
    server = RedisServer(executable, tmp_path)
    try:
        yield server
    finally:
        with anyio.CancelScope(shield=True), anyio.fail_after(10):
            await server.stop()
