"""Fixtures shared by the whole suite.

``backend`` is parametrized over every backend asyncq ships, so a test that
takes it runs once per store with readable ids (``test_x[postgres]``). Each run
gets a fresh namespace (a key prefix, a schema, a file) instead of a global
flush, so tests never see each other's jobs.

Real servers: Redis at ``ASYNCQ_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) and PostgreSQL at ``ASYNCQ_TEST_POSTGRES_DSN``
(default ``postgresql://postgres@127.0.0.1:5432/test``). Without them the tests
that need them skip with the reason, except under ``CI=true`` where they fail:
CI must never pass by skipping.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import socket
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from asyncq.backends.base import Backend

REDIS_URL = os.environ.get("ASYNCQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get(
    "ASYNCQ_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # asyncpg and redis.asyncio run only on asyncio.
    return "asyncio"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, default_port: int, env: str) -> str:
    """Return ``url`` if the server answers; else skip (fail under CI) with how to fix it."""
    if _reachable(url, default_port):
        return url
    msg = f"{name} not reachable at {url}: start it, or set {env} to one that is"
    if IN_CI:
        pytest.fail(f"{msg} (CI=true: integration tests must run)")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return require_service("Redis", REDIS_URL, 6379, "ASYNCQ_TEST_REDIS_URL")


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    return require_service("PostgreSQL", POSTGRES_DSN, 5432, "ASYNCQ_TEST_POSTGRES_DSN")


def unique_namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


# Each factory gets the pytest request and a temp dir and returns an unopened
# backend in a fresh namespace, plus a cleanup coroutine (or None).
Factory = Callable[[pytest.FixtureRequest, Path], Any]


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from asyncq.backends.memory import MemoryBackend

    return MemoryBackend(), None


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from asyncq.backends.sqlite import SQLiteBackend

    return SQLiteBackend(tmp_path / "jobs.db"), None


def _redis(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from asyncq.backends.redis import RedisBackend

    backend = RedisBackend.from_url(
        request.getfixturevalue("redis_url"), namespace=unique_namespace()
    )
    return backend, backend.drop


def _fakeredis(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    import fakeredis

    from asyncq.backends.redis import RedisBackend

    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    backend = RedisBackend(client, namespace=unique_namespace())
    # Its scripts by EVALSHA, as on a server without functions: the real server
    # runs the suite with them (tests/backends/test_redis_functions.py).
    backend._transport._library = None
    return backend, None


def _redis_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from asyncq.backends.redis import RedisBackend
    from backends._redis_cluster import cluster_url

    backend = RedisBackend.from_url(cluster_url(request.config), namespace=unique_namespace())
    return backend, backend.drop


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from asyncq.backends.postgres import PostgresBackend

    backend = PostgresBackend.from_url(
        request.getfixturevalue("postgres_dsn"), schema=unique_namespace(), migrate=True
    )
    return backend, backend.drop


_BACKENDS: list[tuple[str, str, Factory, tuple[pytest.MarkDecorator, ...]]] = [
    ("memory", "asyncq.backends.memory", _memory, ()),
    ("sqlite", "asyncq.backends.sqlite", _sqlite, ()),
    ("fakeredis", "asyncq.backends.redis", _fakeredis, ()),
    ("redis", "asyncq.backends.redis", _redis, (pytest.mark.redis,)),
    (
        "redis-cluster",
        "asyncq.backends.redis",
        _redis_cluster,
        (pytest.mark.redis, pytest.mark.cluster),
    ),
    ("postgres", "asyncq.backends.postgres", _postgres, (pytest.mark.postgres,)),
]

# A backend module not written yet is left out rather than failing every test.
BACKEND_PARAMS = [
    pytest.param(name, marks=marks, id=name)
    for name, module, _, marks in _BACKENDS
    if importlib.util.find_spec(module) is not None
]
_FACTORIES = {name: factory for name, _, factory, _ in _BACKENDS}


def make_backend(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Any:
    """An unopened backend of ``kind`` in a fresh namespace, and its cleanup (or ``None``).

    Its job events are on, as every store's are by default.
    """
    instance, cleanup = _FACTORIES[kind](request, tmp_path)
    return instance, cleanup


@pytest.fixture(params=BACKEND_PARAMS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def backend(
    request: pytest.FixtureRequest, backend_kind: str, tmp_path: Path
) -> AsyncIterator[Backend]:
    """An open backend of each kind, in a namespace of its own."""
    instance, cleanup = make_backend(request, backend_kind, tmp_path)
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()
        if cleanup is not None:
            await cleanup()


@pytest.fixture
async def lent(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Backend]:
    """``backend`` behind ``ops_app.app`` (its worker and the CLI) for the test, then given back."""
    from ops_app import lent as lending

    async with lending(backend, monkeypatch):
        yield backend


# -- the ``asyncq`` command in-process -----------------------------------------------------

#: The name every module ``write_module`` writes starts with.
CLI_MODULE_PREFIX = "cli_app_"


@pytest.fixture
def cli_isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A test of the command in its own directory, with sys.path, modules and logging restored.

    ``load_app`` puts the cwd first on ``sys.path``, the test's modules are
    imported, and ``asyncq run`` configures the root logger: none of it outlives
    the test.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("ASYNCQ_BACKEND", raising=False)
    modules = set(sys.modules)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for name in set(sys.modules) - modules:
        if name.startswith(CLI_MODULE_PREFIX):
            del sys.modules[name]
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def write_module(cli_isolated: None, tmp_path: Path) -> Callable[[str], str]:
    """Write a module (dedented) into the test's directory under a fresh name; return the name."""

    def write(source: str) -> str:
        name = f"{CLI_MODULE_PREFIX}{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        return name

    return write


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """How many documentation samples ran and how many are marked not to (tests/test_docs.py)."""
    from _docs import TALLY

    tally = config.stash.get(TALLY, None)
    if tally:
        counts = ", ".join(f"{n} {what}" for what, n in tally.items())
        terminalreporter.write_line(f"documentation samples: {counts}")
