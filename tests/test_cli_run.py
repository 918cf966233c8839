"""``asyncq run`` options that shape the worker: ``--prefetch``, ``--loop``, ``--threads``..."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from _cli import WriteModule, invoke
from asyncq import App

APP_MODULE = """
    import asyncio
    from contextlib import asynccontextmanager

    from asyncq import App

    loops = []


    @asynccontextmanager
    async def lifespan(app):
        loops.append(type(asyncio.get_running_loop()).__module__.partition(".")[0])
        yield None


    app = App("cli-run-test", backend="memory://", lifespan=lifespan)


    @app.job(schema=int, name="noop")
    async def noop(payload: int) -> None:
        pass
"""

pytestmark = pytest.mark.usefixtures("cli_isolated")


@pytest.fixture
def app_path(write_module: WriteModule) -> str:
    """``MODULE:APP`` of a fresh module in the test's directory."""
    return f"{write_module(APP_MODULE)}:app"


@pytest.fixture
def worker_options(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The options of every worker the command makes."""
    seen: list[dict[str, Any]] = []
    make_worker = App.make_worker

    def recording(self: App, **options: Any) -> Any:
        seen.append(options)
        return make_worker(self, **options)

    monkeypatch.setattr(App, "make_worker", recording)
    return seen


def test_prefetch_reaches_the_worker(app_path: str, worker_options: list[dict[str, Any]]) -> None:
    result = invoke("run", app_path, "--burst", "--prefetch", "7")
    assert result.exit_code == 0, result.output
    assert [options.get("prefetch") for options in worker_options] == [7]


def test_prefetch_left_to_the_worker_by_default(
    app_path: str, worker_options: list[dict[str, Any]]
) -> None:
    result = invoke("run", app_path, "--burst", "-c", "8")
    assert result.exit_code == 0, result.output
    assert [("prefetch" in options, options["concurrency"]) for options in worker_options] == [
        (False, 8)
    ]


def test_negative_prefetch_is_a_usage_error(app_path: str) -> None:
    result = invoke("run", app_path, "--burst", "--prefetch", "-1")
    assert result.exit_code == 2
    assert "--prefetch" in result.stderr


def test_threads_and_handler_processes_reach_the_worker(
    app_path: str, worker_options: list[dict[str, Any]]
) -> None:
    result = invoke(
        "run",
        app_path,
        "--burst",
        "--threads",
        "3",
        "--handler-processes",
        "2",
        "--warn-blocking",
        "0.25",
    )
    assert result.exit_code == 0, result.output
    assert [
        (o.get("threads"), o.get("processes"), o.get("warn_blocking")) for o in worker_options
    ] == [(3, 2, 0.25)]


def test_threads_and_handler_processes_left_to_the_worker_by_default(
    app_path: str, worker_options: list[dict[str, Any]]
) -> None:
    result = invoke("run", app_path, "--burst")
    assert result.exit_code == 0, result.output
    assert [("threads" in o, "processes" in o, "warn_blocking" in o) for o in worker_options] == [
        (False, False, False)
    ]


@pytest.mark.parametrize("option", ["--threads", "--handler-processes"])
def test_zero_threads_or_handler_processes_is_a_usage_error(app_path: str, option: str) -> None:
    result = invoke("run", app_path, "--burst", option, "0")
    assert result.exit_code == 2
    assert option in result.stderr


def loops_seen(app_path: str) -> list[str]:
    """The event loops the app's lifespan ran on: ``asyncio`` or ``uvloop``."""
    loops: list[str] = sys.modules[app_path.partition(":")[0]].loops
    return loops


def test_loop_defaults_to_asyncio(app_path: str) -> None:
    result = invoke("run", app_path, "--burst")
    assert result.exit_code == 0, result.output
    assert loops_seen(app_path) == ["asyncio"]


def test_loop_uvloop_runs_the_worker_on_uvloop(app_path: str) -> None:
    pytest.importorskip("uvloop", reason="the uvloop extra is not installed")
    result = invoke("run", app_path, "--burst", "--loop", "uvloop")
    assert result.exit_code == 0, result.output
    assert loops_seen(app_path) == ["uvloop"]


def test_loop_uvloop_without_uvloop_names_the_extra(
    app_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "uvloop" else find_spec(name, *args),
    )
    result = invoke("run", app_path, "--burst", "--loop", "uvloop")
    assert result.exit_code == 1
    assert "pip install 'asyncq[uvloop]'" in result.stderr
    assert "Traceback" not in result.output
    assert loops_seen(app_path) == []


def test_unknown_loop_is_a_usage_error(app_path: str) -> None:
    result = invoke("run", app_path, "--burst", "--loop", "trio")
    assert result.exit_code == 2
    assert "--loop" in result.stderr


@pytest.mark.timeout(30)
def test_run_on_a_path_that_names_no_database_exits_1(app_path: str, tmp_path: Path) -> None:
    # Before: the worker waited for such a store for ever (and exited 0 when signalled).
    url = f"sqlite:///{tmp_path / 'missing' / 'jobs.db'}"
    result = invoke("run", app_path, "--backend", url)
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "does not exist" in line
    assert "fix the path" in line
    assert "Traceback" not in result.output
