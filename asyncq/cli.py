"""The ``asyncq`` command: a thin layer that loads ``module:app`` and calls the Python API.

Exit codes: 0 success; 1 the operation failed (a job failed, the backend
refused); 2 usage errors (bad arguments, an app that cannot be loaded).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import anyio
import click

from ._app import App
from ._logging import configure_logging
from .exceptions import AsyncqError

__all__ = ["load_app", "main"]

EXIT_FAILED = 1
EXIT_USAGE = 2


def load_app(path: str) -> App:
    """Import ``module:attribute`` (the current directory first on ``sys.path``) and return the App.

    Raises:
        click.UsageError: the module cannot be imported, the attribute is
            missing, or it is not an ``asyncq.App``.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        msg = f"expected MODULE:APP (for example myservice.jobs:app), got {path!r}"
        raise click.UsageError(msg)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"cannot import module {module_name!r} for {path!r}: {exc}"
        raise click.UsageError(msg) from exc
    except Exception as exc:  # any import-time failure means the app cannot be loaded
        msg = f"importing module {module_name!r} for {path!r} failed: {type(exc).__name__}: {exc}"
        raise click.UsageError(msg) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            msg = f"module {module_name!r} has no attribute {attr!r}"
            raise click.UsageError(msg) from None
    if not isinstance(obj, App):
        msg = f"{path!r} is a {type(obj).__name__}, not an asyncq.App"
        raise click.UsageError(msg)
    return obj


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="asyncq")
def main() -> None:
    """asyncq: run workers and operate queues."""


@main.command()
@click.argument("app_path", metavar="MODULE:APP")
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Jobs running at once.",
)
@click.option("-q", "--queues", help="Comma-separated queues to work (default: the app's).")
@click.option(
    "--lease",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a claim lasts without a heartbeat.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds running jobs get to finish on SIGTERM.",
)
@click.option("--backend", envvar="ASYNCQ_BACKEND", help="Backend URL (overrides the app's).")
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line, with the job's fields.",
)
def run(
    app_path: str,
    concurrency: int,
    queues: str | None,
    lease: float,
    shutdown_timeout: float,
    backend: str | None,
    burst: bool,
    log_level: str,
    log_format: str,
) -> None:
    """Run a worker for MODULE:APP until SIGTERM/SIGINT (a second signal stops at once)."""
    configure_logging(log_level, log_format)
    app = load_app(app_path)
    if backend:
        app.use_backend(backend)
    options: dict[str, Any] = {
        "concurrency": concurrency,
        "lease": lease,
        "shutdown_timeout": shutdown_timeout,
        "burst": burst,
    }
    if queues:
        options["queues"] = [q.strip() for q in queues.split(",") if q.strip()]

    async def serve() -> None:
        try:
            await app.run_worker(**options)
        finally:
            await app.close()

    try:
        anyio.run(serve)
    except AsyncqError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:  # a signal that arrived before the worker listened for it
        sys.exit(130)
