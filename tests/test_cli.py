"""The ``asyncq`` command: loading ``MODULE:APP``, usage errors, and ``python -m asyncq``."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import click
import pytest
from click.testing import Result

import asyncq
from _cli import WriteModule, invoke
from asyncq.cli import load_app

pytestmark = pytest.mark.usefixtures("cli_isolated")


def assert_usage_error(result: Result, *fragments: str) -> str:
    """Exit 2, no traceback, and exactly one ``Error:`` line naming the problem; return it."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]
    return errors[0]


APP_MODULE = """
    from asyncq import App

    app = App("cli-test", backend="memory://")
    not_an_app = 42


    @app.job(schema=int, name="noop")
    async def noop(payload: int) -> None:
        pass

    class Namespace:
        app = app
"""


# -- asyncq run MODULE:APP errors ---------------------------------------------------


@pytest.mark.parametrize("path", ["myservice", "myservice.jobs", ":app", "myservice:", ":"])
def test_run_without_module_and_attribute_is_a_usage_error(path: str) -> None:
    line = assert_usage_error(invoke("run", path), "expected MODULE:APP", repr(path))
    assert line == (f"Error: expected MODULE:APP (for example myservice.jobs:app), got {path!r}")


def test_run_with_a_missing_module_is_a_usage_error() -> None:
    assert_usage_error(
        invoke("run", "asyncq_no_such_module:app"),
        "cannot import module 'asyncq_no_such_module'",
        "No module named 'asyncq_no_such_module'",
    )


def test_run_names_the_missing_dependency_of_a_module(write_module: WriteModule) -> None:
    name = write_module("import asyncq_missing_dependency\n")
    assert_usage_error(
        invoke("run", f"{name}:app"),
        f"importing module {name!r} for '{name}:app' failed at ",
        f"{name}.py, line 1: ModuleNotFoundError: No module named 'asyncq_missing_dependency'",
    )


def test_run_with_a_missing_attribute_is_a_usage_error(write_module: WriteModule) -> None:
    name = write_module(APP_MODULE)
    assert_usage_error(invoke("run", f"{name}:nope"), f"module {name!r} has no attribute 'nope'")
    assert_usage_error(invoke("run", f"{name}:Namespace.nope"), "has no attribute 'Namespace.nope'")


def test_run_with_something_that_is_not_an_app_is_a_usage_error(
    write_module: WriteModule,
) -> None:
    name = write_module(APP_MODULE)
    assert_usage_error(
        invoke("run", f"{name}:not_an_app"), f"'{name}:not_an_app' is a int, not an asyncq.App"
    )
    assert_usage_error(invoke("run", f"{name}:Namespace"), "is a type, not an asyncq.App")


@pytest.mark.parametrize(
    "options",
    [["-c", "0"], ["--lease", "0"], ["--shutdown-timeout", "-1"], ["--log-level", "loud"]],
    ids=["concurrency", "lease", "shutdown-timeout", "log-level"],
)
def test_run_rejects_bad_options(options: list[str], write_module: WriteModule) -> None:
    name = write_module(APP_MODULE)
    assert_usage_error(invoke("run", f"{name}:app", *options), options[0])


def test_run_in_burst_mode_exits_once_the_queues_are_empty(write_module: WriteModule) -> None:
    name = write_module(APP_MODULE)
    result = invoke("run", f"{name}:app", "--burst", "--backend", "memory://", "-c", "2")
    assert result.exit_code == 0, result.output


# -- load_app -------------------------------------------------------------------------


def test_load_app_returns_the_app(write_module: WriteModule) -> None:
    name = write_module(APP_MODULE)
    app = load_app(f"{name}:app")
    assert isinstance(app, asyncq.App)
    assert app is sys.modules[name].app
    assert app.name == "cli-test"


def test_load_app_follows_dotted_attributes(write_module: WriteModule) -> None:
    name = write_module(APP_MODULE)
    assert load_app(f"{name}:Namespace.app") is sys.modules[name].app


def test_load_app_imports_from_a_package_in_the_current_directory(tmp_path: Path) -> None:
    package = f"cli_app_{uuid.uuid4().hex[:10]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "jobs.py").write_text(textwrap.dedent(APP_MODULE))
    importlib.invalidate_caches()
    assert str(tmp_path) not in sys.path
    app = load_app(f"{package}.jobs:app")
    assert app is sys.modules[f"{package}.jobs"].app
    assert sys.path[0] == str(tmp_path)


def test_load_app_raises_usage_errors() -> None:
    with pytest.raises(click.UsageError, match="expected MODULE:APP"):
        load_app("nocolon")
    with pytest.raises(click.UsageError, match="cannot import module"):
        load_app("asyncq_no_such_module:app")


# -- entry points -----------------------------------------------------------------------


def test_help_lists_the_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "run" in result.output
    run_help = invoke("run", "--help")
    assert run_help.exit_code == 0
    assert "MODULE:APP" in run_help.output


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output == f"asyncq, version {asyncq.__version__}\n"


def test_python_dash_m_asyncq_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "asyncq", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: asyncq [OPTIONS] COMMAND [ARGS]...")
    assert "run" in result.stdout
