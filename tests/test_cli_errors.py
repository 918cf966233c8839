"""Every verb, ``run`` included, fails one way: ``Error: ...`` on stderr, the documented code.

The codes are those of the table in docs/cli.md: 1 the operation failed, 2 usage
(click's own usage errors included). Each test runs every verb that can meet the
failure, in-process, against an app on the memory backend or a store that cannot
be opened.
"""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest
from click.testing import Result

from _cli import WriteModule, invoke
from asyncq.cli import EXIT_FAILED, EXIT_USAGE

APP_MODULE = """
    import os
    from contextlib import asynccontextmanager

    import msgspec

    from asyncq import App, BackendError, ConfigurationError


    class Resize(msgspec.Struct):
        image: str
        width: int


    @asynccontextmanager
    async def lifespan(app):
        raising = {"backend": BackendError, "configuration": ConfigurationError}
        kind = os.environ.get("CLI_ERRORS_LIFESPAN_RAISES")
        if kind:
            raise raising[kind](f"lifespan refused ({kind})")
        yield None


    app = App("cli-errors", backend="memory://", lifespan=lifespan)


    @app.job(schema=Resize, name="resize")
    async def resize(payload: Resize) -> int:
        return payload.width
"""

#: Every verb, with the arguments it needs besides MODULE:APP to reach the store.
VERBS: dict[str, list[str]] = {
    "run": ["--burst"],
    "status": [],
    "jobs": [],
    "job": ["01nosuchjob"],
    "retry": ["01nosuchjob"],
    "purge": ["-s", "dead", "--older-than", "1d", "--yes"],
    "cancel": ["01nosuchjob"],
    "remove": ["01nosuchjob"],
    "enqueue": ["resize", '{"image": "a.png", "width": 3}'],
    "pause": ["default"],
    "resume": ["default"],
    "migrate": [],
}
OPERATOR_VERBS = [verb for verb in VERBS if verb != "run"]


pytestmark = pytest.mark.usefixtures("cli_isolated")


@pytest.fixture
def app_path(write_module: WriteModule, monkeypatch: pytest.MonkeyPatch) -> str:
    """``MODULE:APP`` of a fresh module in the test's directory, its lifespan raising nothing."""
    monkeypatch.delenv("CLI_ERRORS_LIFESPAN_RAISES", raising=False)
    return f"{write_module(APP_MODULE)}:app"


def assert_failed(result: Result, code: int, *fragments: str) -> list[str]:
    """Exit ``code``, no traceback, nothing on stdout, every problem an ``Error:`` line."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert errors, result.stderr
    assert [line for line in lines if line.lower().startswith("error")] == errors
    for fragment in fragments:
        assert any(fragment in line for line in errors), (fragment, errors)
    return errors


# -- usage: exit 2 --------------------------------------------------------------------------


@pytest.mark.parametrize("verb", VERBS)
def test_a_bad_backend_url_is_a_usage_error_for_every_verb(verb: str, app_path: str) -> None:
    result = invoke(verb, app_path, *VERBS[verb], "--backend", "nosuch://host")
    [line] = assert_failed(result, EXIT_USAGE)
    assert line.startswith("Error: unknown backend URL 'nosuch://host': the scheme must be one of")


@pytest.mark.parametrize("verb", VERBS)
def test_an_app_that_cannot_be_imported_is_a_usage_error_for_every_verb(verb: str) -> None:
    result = invoke(verb, "asyncq_no_such_module:app", *VERBS[verb])
    [line] = assert_failed(result, EXIT_USAGE)
    assert line == (
        "Error: cannot import module 'asyncq_no_such_module' for 'asyncq_no_such_module:app': "
        "No module named 'asyncq_no_such_module'"
    )
    assert result.stderr.startswith(f"Usage: asyncq {verb} [OPTIONS] MODULE:APP")


@pytest.mark.parametrize("verb", VERBS)
def test_an_unknown_option_is_clicks_usage_error_for_every_verb(verb: str, app_path: str) -> None:
    result = invoke(verb, app_path, *VERBS[verb], "--no-such-option")
    assert len(assert_failed(result, EXIT_USAGE, "No such option", "--no-such-option")) == 1
    assert result.stderr.startswith(f"Usage: asyncq {verb} [OPTIONS] MODULE:APP")


def test_a_payload_that_is_not_json_is_a_usage_error(app_path: str) -> None:
    for extra in ([], ["--json"], ["--wait"]):
        result = invoke("enqueue", app_path, "resize", '{"image": ', *extra)
        [line] = assert_failed(result, EXIT_USAGE)
        assert line.startswith("Error: invalid payload for job 'resize': not valid JSON: ")


def test_a_payload_that_misses_a_field_is_a_usage_error(app_path: str) -> None:
    result = invoke("enqueue", app_path, "resize", '{"image": "a.png"}', "--json")
    [line] = assert_failed(result, EXIT_USAGE)
    assert line == "Error: invalid payload for job 'resize': Object missing required field `width`"


def test_an_unknown_job_name_is_a_usage_error(app_path: str) -> None:
    result = invoke("enqueue", app_path, "resise", "{}")
    [line] = assert_failed(result, EXIT_USAGE)
    assert line == "Error: app 'cli-errors' has no job named 'resise'; its jobs: resize"


# -- the operation failed: exit 1 -------------------------------------------------------


@pytest.mark.parametrize("verb", ["job", "retry", "cancel", "remove"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_an_unknown_job_id_fails_the_operation(verb: str, as_json: bool, app_path: str) -> None:
    args = [verb, app_path, "01nosuchjob", *(["--json"] if as_json else [])]
    result = invoke(*args)
    assert result.exit_code == EXIT_FAILED, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1
    assert errors[0].startswith("Error: no job with id '01nosuchjob'")
    assert "Traceback" not in result.output
    if verb == "job" or not as_json:
        assert result.stdout == ""
    else:  # the ids a verb handled, as JSON, whatever failed among them
        assert result.stdout.startswith(("{", "["))


@pytest.mark.parametrize("verb", [verb for verb in OPERATOR_VERBS if verb != "migrate"])
def test_a_store_that_cannot_be_opened_fails_the_operation(verb: str, app_path: str) -> None:
    url = "sqlite:///no/such/directory/jobs.db"
    result = invoke(verb, app_path, *VERBS[verb], "--backend", url)
    [line] = assert_failed(result, EXIT_FAILED)
    assert line.startswith("Error: BackendError: cannot use the SQLite database ")


def test_migrate_on_a_store_that_cannot_be_reached_fails(app_path: str) -> None:
    # SQLite has no migrations to open its file for; PostgreSQL does.
    pytest.importorskip("asyncpg", reason="the postgres extra is not installed")
    result = invoke("migrate", app_path, "--backend", "postgresql://127.0.0.1:1/nothing")
    [line] = assert_failed(result, EXIT_FAILED)
    assert line.startswith("Error: BackendUnavailable: PostgreSQL at postgresql://127.0.0.1:1/")


@pytest.mark.parametrize(
    ("raised", "code", "shown"),
    [
        ("configuration", EXIT_USAGE, "Error: lifespan refused (configuration)"),
        ("backend", EXIT_FAILED, "Error: BackendError: lifespan refused (backend)"),
    ],
)
def test_run_ends_on_an_asyncq_error_with_its_code(
    app_path: str, monkeypatch: pytest.MonkeyPatch, raised: str, code: int, shown: str
) -> None:
    """A configuration error is usage (2), a store error a failure (1), as for every verb."""
    monkeypatch.setenv("CLI_ERRORS_LIFESPAN_RAISES", raised)
    [line] = assert_failed(invoke("run", app_path, "--burst"), code)
    assert line == shown


def test_run_with_its_health_port_taken_fails(app_path: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke(
            "run", app_path, "--burst", "--health-host", "127.0.0.1", "--health-port", str(port)
        )
    [line] = assert_failed(result, EXIT_FAILED)
    assert line.startswith(f"Error: cannot serve health probes on 127.0.0.1:{port}: ")


def test_enqueue_wait_that_runs_out_of_time_fails(app_path: str, tmp_path: Path) -> None:
    # No worker runs: the wait ends at its timeout, which fails the operation.
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    args = ["enqueue", app_path, "resize", '{"image": "a", "width": 1}', "--backend", url]
    result = invoke(*args, "--wait", "--timeout", "0.1", "--json")
    [line] = assert_failed(result, EXIT_FAILED)
    assert line.startswith("Error: no result within 0.1s; job ")


def test_run_with_uvloop_missing_fails(app_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "uvloop" else find_spec(name, *args),
    )
    [line] = assert_failed(invoke("run", app_path, "--burst", "--loop", "uvloop"), EXIT_FAILED)
    assert line == (
        "Error: --loop uvloop needs uvloop, which is not installed: pip install 'asyncq[uvloop]'"
    )
