"""The PostgreSQL backend's URL: asyncq's options in it, the driver's, and what is refused.

Most of these need no server: a malformed URL is refused before anything
connects. The few that open a backend use the test server, in a schema of
their own, dropped afterwards.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from asyncq.backends import from_url
from asyncq.backends._common import mask_url
from asyncq.backends.base import Retention
from asyncq.backends.postgres import (
    DEFAULT_RETENTION_COMPLETED,
    DEFAULT_RETENTION_DEAD,
    PostgresBackend,
    mask_dsn,
)
from asyncq.cli import EXIT_USAGE, main
from asyncq.exceptions import ConfigurationError

BOUND = 20.0
SECRET = "s3cret"


def test_mask_dsn_is_the_one_masker() -> None:
    assert mask_dsn is mask_url


def test_the_default_retention_is_the_kits() -> None:
    backend = PostgresBackend.from_url("postgresql://h/db")
    assert backend.retention == Retention()
    assert DEFAULT_RETENTION_COMPLETED == Retention().completed == 86_400.0
    assert DEFAULT_RETENTION_DEAD == Retention().dead == Retention().cancelled == 14 * 86_400.0


def test_asyncq_options_are_read_from_the_query_and_the_rest_is_the_drivers() -> None:
    url = (
        f"postgresql://app:{SECRET}@db.example/jobs?sslmode=require&schema=shop"
        "&retention_completed=60&retention_dead=none&retention_cancelled=120"
        "&application_name=x&min_size=2&max_size=4&poll_interval=0.5&carry_jobs=false"
    )
    backend = PostgresBackend.from_url(url)
    assert backend.schema == "shop"
    assert backend.retention == Retention(completed=60.0, dead=None, cancelled=120.0)
    # asyncq's options are gone from what asyncpg sees; the driver's stay.
    assert backend.url == (
        "postgresql://app:***@db.example/jobs?sslmode=require&application_name=x&schema=shop"
    )
    assert isinstance(from_url(url), PostgresBackend)


def test_keywords_win_over_the_url() -> None:
    url = "postgresql://h/db?schema=a&retention_dead=5&retention_cancelled=6"
    backend = PostgresBackend.from_url(
        url, schema="b", retention_dead=7.0, retention=Retention(completed=None)
    )
    assert backend.schema == "b"
    assert backend.retention == Retention(completed=None, dead=7.0, cancelled=6.0)
    # None for schema or migrate means "not given": the URL's stands.
    assert PostgresBackend.from_url(url, schema=None, migrate=None).schema == "a"


def test_the_constructor_takes_the_same_retention_settings() -> None:
    given = PostgresBackend("postgresql://h/db", retention=Retention(dead=1.0))
    assert given.retention == Retention(dead=1.0)
    by_name = PostgresBackend(
        "postgresql://h/db", retention=Retention(dead=1.0), retention_cancelled=None
    )
    assert by_name.retention == Retention(dead=1.0, cancelled=None)


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("retention_dead=abc", "option 'retention_dead'"),
        ("retention_completed=-1", "option 'retention_completed'"),
        ("migrate=perhaps", "option 'migrate'"),
        ("min_size=many", "option 'min_size'"),
        ("poll_interval=inf", "option 'poll_interval'"),
        ("carry_jobs=2", "option 'carry_jobs'"),
        ("sslmode=bogus", "sslmode 'bogus'"),
        ("sslmode=REQUIRE", "sslmode 'REQUIRE'"),
        ("port=54x2", "port '54x2'"),
    ],
)
def test_a_malformed_option_is_refused_with_the_url_masked(query: str, fragment: str) -> None:
    url = f"postgresql://app:{SECRET}@h/db?password={SECRET}&{query}"
    with pytest.raises(ConfigurationError, match=fragment) as caught:
        PostgresBackend.from_url(url)
    assert SECRET not in str(caught.value)
    assert "app:***@h/db" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("postgresql://h:notaport/db", "port 'notaport' in the PostgreSQL URL"),
        ("postgresql://h:0/db", "port '0'"),
        ("postgresql://h:99999/db", "port '99999'"),
        ("postgresql://h1:5432,h2:x/db", "port 'x'"),
        ("postgresql://[::1]:x/db", "port 'x'"),
        ("postgresql://[::1/db", "malformed PostgreSQL URL"),
    ],
)
def test_a_malformed_address_is_refused(url: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        PostgresBackend.from_url(url)
    with pytest.raises(ConfigurationError, match=fragment):
        PostgresBackend(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://h1:5432,h2:5433/db",
        "postgresql://[::1]:5432/db",
        "postgresql://[::1]/db",
        "postgresql:///db?host=/var/run/postgresql",
        "postgres://u@h/db?sslmode=verify-full&port=5433",
        "postgresql://h/db?sslmode=",
    ],
)
def test_well_formed_addresses_are_taken(url: str) -> None:
    assert isinstance(PostgresBackend.from_url(url), PostgresBackend)


@pytest.mark.anyio
async def test_what_asyncpg_refuses_on_connecting_is_a_configuration_error() -> None:
    # Refused while asyncpg reads its arguments, before it opens a socket.
    for backend in (
        PostgresBackend.from_url(f"postgresql://u:{SECRET}@127.0.0.1:1/db?nofield"),
        PostgresBackend.from_url(f"postgresql://u:{SECRET}@127.0.0.1:1/db", ssl="bogus"),
    ):
        with anyio.fail_after(BOUND), pytest.raises(ConfigurationError) as caught:
            await backend.open()
        assert str(caught.value).startswith("cannot connect to PostgreSQL with postgresql://u:***@")
        assert SECRET not in str(caught.value)


@pytest.fixture
async def schema(postgres_dsn: str) -> AsyncIterator[str]:
    """A fresh schema name on the test server, dropped afterwards."""
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    with anyio.fail_after(BOUND):
        await PostgresBackend.from_url(postgres_dsn, schema=name).drop()


@pytest.mark.anyio
@pytest.mark.postgres
async def test_migrate_and_schema_in_the_url_open_a_new_schema(
    postgres_dsn: str, schema: str
) -> None:
    glue = "&" if "?" in postgres_dsn else "?"
    backend = PostgresBackend.from_url(f"{postgres_dsn}{glue}schema={schema}&migrate=yes")
    with anyio.fail_after(BOUND):
        await backend.open()
        try:
            assert await backend.migrate() == []
            assert await backend.stats() == []
        finally:
            await backend.close()


# -- the command line ------------------------------------------------------------------

APP = """
from asyncq import App

app = App("pg-url", backend="memory://")
"""


@pytest.fixture
def app_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``MODULE:APP`` of a fresh module in the test's own directory."""
    name = f"pg_url_app_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_app puts the cwd first
    monkeypatch.delenv("ASYNCQ_BACKEND", raising=False)
    importlib.invalidate_caches()
    yield f"{name}:app"
    sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("postgresql://127.0.0.1:notaport/test", "port 'notaport'"),
        (f"postgresql://u:{SECRET}@127.0.0.1/test?sslmode=bogus", "sslmode 'bogus'"),
        ("postgresql://127.0.0.1/test?retention_dead=abc", "option 'retention_dead'"),
    ],
)
def test_the_cli_reports_a_malformed_url_as_a_usage_error(
    app_path: str, url: str, fragment: str
) -> None:
    result = CliRunner().invoke(main, ["status", app_path, "--backend", url], prog_name="asyncq")
    assert result.exit_code == EXIT_USAGE, result.output
    assert "Traceback" not in result.output
    assert SECRET not in result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: ")
    assert fragment in line
