"""The mistakes of a first hour end in one line that says what to do, through the real command.

A typo in a store URL, a database number on a Redis Cluster, an error in the
user's own module, a file path for MODULE:APP, a burst worker whose store is
down, a queue no job uses and an app with no jobs: each is an ``Error:`` line
with the documented exit code (or, for the queue, a warning), never a
traceback or a silent wait.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from _cli import WriteModule, invoke
from asyncq.cli import EXIT_FAILED, EXIT_USAGE
from test_cli_errors import assert_failed

pytestmark = pytest.mark.usefixtures("cli_isolated")

APP = """
    import msgspec

    from asyncq import App


    class Charge(msgspec.Struct):
        order_id: str


    app = App("first-hour", backend="memory://")


    @app.job(schema=Charge, name="charge", queue="payments")
    async def charge(payload: Charge) -> str:
        return payload.order_id
"""


@pytest.fixture
def app_path(write_module: WriteModule) -> str:
    return f"{write_module(APP)}:app"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- store URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["status", "run"])
def test_a_typo_in_a_redis_url_option_names_the_option_meant(verb: str, app_path: str) -> None:
    pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/0?socket_timout=1"
    result = invoke(verb, app_path, "--backend", url, *(["--burst"] if verb == "run" else []))
    [line] = assert_failed(result, EXIT_USAGE)
    assert line.startswith(
        f"Error: unknown option 'socket_timout' in the URL '{url}': "
        "did you mean 'socket_timeout'? known are "
    )


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/3?cluster=true", "redis://127.0.0.1:6379?cluster=true&db=2"],
)
@pytest.mark.parametrize("verb", ["status", "run"])
def test_a_database_number_on_a_redis_cluster_is_a_usage_error(
    verb: str, url: str, app_path: str
) -> None:
    pytest.importorskip("redis")
    result = invoke(verb, app_path, "--backend", url, *(["--burst"] if verb == "run" else []))
    [line] = assert_failed(result, EXIT_USAGE)
    db = "3" if "/3" in url else "2"
    assert line == (
        f"Error: a Redis Cluster has only database 0, but {url!r} asks for database {db}: "
        "drop the database number from the URL (keep apps apart with ?namespace=NAME instead)"
    )


# -- the user's module -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "error"),
    [
        ("import msgspec\n\nrate = 1 / 0\n", 3, "ZeroDivisionError: division by zero"),
        (
            "import msgspec\nimport asyncq_no_such_dependency\n",
            2,
            "ModuleNotFoundError: No module named 'asyncq_no_such_dependency'",
        ),
        ("from asyncq import App\n\napp = App(\n", 3, "SyntaxError: '(' was never closed"),
        (
            "from asyncq import App\n\napp = App('x', backend='memory://', max_payload_bytes=0)\n",
            3,
            "ConfigurationError: ",
        ),
    ],
    ids=["raises", "imports-what-is-missing", "syntax", "asyncq-refuses"],
)
@pytest.mark.parametrize("verb", ["status", "run"])
def test_an_error_in_the_users_module_names_its_file_and_line(
    verb: str, source: str, line: int, error: str, write_module: WriteModule, tmp_path: Path
) -> None:
    name = write_module(source)
    result = invoke(verb, f"{name}:app", *(["--burst"] if verb == "run" else []))
    [shown] = assert_failed(result, EXIT_USAGE)
    assert shown.startswith(
        f"Error: importing module {name!r} for '{name}:app' failed at "
        f"{tmp_path / (name + '.py')}, line {line}: {error}"
    )


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("jobs.py:app", "jobs:app"),
        ("shop/jobs.py:app", "shop.jobs:app"),
        ("./jobs.py:app", "jobs:app"),
    ],
)
def test_a_file_path_for_the_app_gets_the_dotted_name_to_use(given: str, meant: str) -> None:
    [line] = assert_failed(invoke("status", given), EXIT_USAGE)
    assert line == (
        f"Error: {given!r} names a file: give the module's dotted name, as Python imports it "
        f"(for example {meant}), run from the directory it is imported from"
    )


# -- asyncq run --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:{port}/0", "Error: BackendUnavailable: Redis at redis://127.0.0.1:"),
        (
            "postgresql://postgres@127.0.0.1:{port}/test",
            "Error: BackendUnavailable: PostgreSQL at postgresql://postgres@127.0.0.1:",
        ),
    ],
    ids=["redis", "postgres"],
)
def test_a_burst_worker_whose_store_is_down_exits_1_after_a_few_tries(
    url: str, shown: str, app_path: str
) -> None:
    pytest.importorskip("redis" if url.startswith("redis") else "asyncpg")
    started = time.monotonic()
    result = invoke("run", app_path, "--burst", "--backend", url.format(port=closed_port()))
    [line] = assert_failed(result, EXIT_FAILED)
    assert line.startswith(shown)
    assert time.monotonic() - started < 10
    assert result.stderr.count("cannot reach the backend") == 2  # 3 tries, 2 waits between


def test_queues_no_job_uses_are_warned_of_with_the_apps_queues(app_path: str) -> None:
    result = invoke("run", app_path, "--burst", "--queues", "paymnets,payments")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1
    assert warnings[0].endswith(
        "--queues names 'paymnets', which no job of app 'first-hour' uses "
        "(its queues: payments); the worker claims from it anyway"
    )


def test_a_worker_for_an_app_with_no_jobs_refuses_to_start(write_module: WriteModule) -> None:
    name = write_module(
        "from asyncq import App\n\napp = App('empty', backend='memory://')\n"
        "charge = app.handle('charge', schema=int)  # a producer's handle runs nothing\n"
    )
    [line] = assert_failed(invoke("run", f"{name}:app", "--burst"), EXIT_USAGE)
    assert line == (
        f"Error: app 'empty' ({name}:app) has no registered jobs, so a worker would never run "
        "one: decorate the handlers with @app.job in that module, or import the modules that "
        "do from it"
    )
