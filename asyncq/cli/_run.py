"""``asyncq run``: a worker for MODULE:APP, with optional health probes."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
import click

from .._health import HealthServer
from .._joblog import JobLog
from .._logging import configure_logging
from .._metrics import install as install_metrics
from ..exceptions import AsyncqError, ConfigurationError
from ._base import (
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    CommandError,
    Verb,
    choice_option,
    fail,
    leaves,
    load_app,
)
from ._render import printable
from ._supervise import (
    PROCESSES,
    child_arguments,
    refuse_memory_store,
    supervise,
    worker_command,
)

if TYPE_CHECKING:
    from .._app import App
    from .._worker import FatalFailure, Worker
    from .._worker_types import WorkerOptions

__all__ = ["run"]

log = logging.getLogger("asyncq.worker")


@click.command(cls=Verb)
@click.argument("app_path", metavar="MODULE:APP")
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Jobs running at once.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=0),
    help="Jobs claimed ahead of free slots [default: a quarter of --concurrency].",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Sync (def) handlers running at once, each in a thread [default: min(32, CPUs + 4)].",
)
@click.option(
    "--handler-processes",
    type=click.IntRange(min=1),
    help="Child processes of this worker for process=True handlers [default: one per CPU].",
)
@click.option(
    "--processes",
    type=PROCESSES,
    default="1",
    show_default=True,
    help="Worker processes to run, each with --concurrency slots, kept running by this one "
    "('auto': one per CPU).",
)
@click.option(
    "--warn-blocking",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Development: warn when an async handler blocks the event loop this long.",
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
@choice_option("--log-level", ["debug", "info", "warning", "error"], "info")
@choice_option(
    "--log-format", ["text", "json"], help="json: one object per line, with the job's fields."
)
@choice_option(
    "--loop",
    ["asyncio", "uvloop"],
    help="Event loop: asyncio's own, or uvloop (pip install 'asyncq[uvloop]').",
)
@click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    help="Serve GET /livez and /readyz (Kubernetes probes) on this port.",
)
@click.option(
    "--health-host",
    default="0.0.0.0",  # the kubelet probes the pod's IP
    show_default=True,
    help="Address the health probes listen on.",
)
@click.option(
    "--metrics",
    is_flag=True,
    help="Also serve GET /metrics (Prometheus text format) on the health port "
    "(pip install 'asyncq[prometheus]').",
)
@click.option(
    "--log-jobs",
    is_flag=True,
    help="Log an INFO line per finished attempt, with its duration.",
)
def run(
    app_path: str,
    concurrency: int,
    prefetch: int | None,
    threads: int | None,
    handler_processes: int | None,
    processes: int,
    warn_blocking: float | None,
    queues: str | None,
    lease: float,
    shutdown_timeout: float,
    backend: str | None,
    burst: bool,
    log_level: str,
    log_format: str,
    loop: str,
    health_port: int | None,
    health_host: str,
    metrics: bool,
    log_jobs: bool,
) -> None:
    """Run a worker for MODULE:APP until SIGTERM/SIGINT (a second signal stops at once).

    A failure classified fatal stops it too, and it exits 3.
    """
    configure_logging(log_level, log_format)
    app = load_app(app_path)
    if not app.queues:
        msg = (
            f"app {app.name!r} ({app_path}) has no registered jobs, so a worker would never run "
            "one: decorate the handlers with @app.job in that module, or import the modules "
            "that do from it"
        )
        raise click.UsageError(msg)
    if processes > 1:
        _supervise_workers(app, app_path, backend, processes, health_port, burst)
    if backend:
        app.use_backend(backend)
    if log_jobs:
        app.instrumentation.append(JobLog())
    options: WorkerOptions = {
        "concurrency": concurrency,
        "lease": lease,
        "shutdown_timeout": shutdown_timeout,
        "burst": burst,
    }
    if prefetch is not None:
        options["prefetch"] = prefetch
    if threads is not None:
        options["threads"] = threads
    if handler_processes is not None:
        options["processes"] = handler_processes
    if warn_blocking is not None:
        options["warn_blocking"] = warn_blocking
    if queues:
        chosen = [q.strip() for q in queues.split(",") if q.strip()]
        warn_unknown_queues(app, chosen)
        options["queues"] = chosen
    exposition = None
    if metrics:
        if health_port is None:
            raise click.UsageError("--metrics is served on the health port: add --health-port P")
        exposition = install_metrics()
    health = None
    if health_port is not None:
        health = HealthServer(health_host, health_port, metrics=exposition)
    fatal: list[FatalFailure] = []
    workers: list[Worker] = []

    async def serve() -> None:
        try:
            if health is not None:
                # Bound before the worker starts: a port in use fails the command at once.
                try:
                    await health.bind()
                except OSError as exc:
                    msg = f"cannot serve health probes on {health_host}:{health_port}: {exc}"
                    raise CommandError(msg) from exc
                options["services"] = [health.serve]
            worker = await app.run_worker(**options)
            workers.append(worker)
            if worker.fatal is not None:
                fatal.append(worker.fatal)
        finally:
            await app.close()

    try:
        backend_options = loop_options(loop)
    except ConfigurationError as exc:
        fail(str(exc))  # 1, not 2: the option is valid, this machine lacks uvloop
    try:
        anyio.run(serve, backend_options=backend_options)
    except KeyboardInterrupt:  # a signal that arrived before the worker listened for it
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        # What the worker raised (or each error in the task group that wraps
        # them) ends as one ``Error:`` line through the group's ``guarded``.
        # Anything but asyncq's own errors is a fault to diagnose: the worker's
        # log keeps its traceback.
        found = leaves(exc) if isinstance(exc, ExceptionGroup) else [exc]
        if not all(isinstance(leaf, AsyncqError | CommandError) for leaf in found):
            log.error("the worker stopped on an unexpected error", exc_info=exc)
        raise
    if workers and (stuck := workers[0].offload.threads.abandoned_running):
        exit_now(
            stuck,
            EXIT_FATAL if fatal else 0,
            f"the worker stopped on a {fatal[0]}" if fatal else None,
        )
    if fatal:
        fail(f"the worker stopped on a {fatal[0]}", code=EXIT_FATAL)


def _supervise_workers(
    app: App,
    app_path: str,
    backend: str | None,
    processes: int,
    health_port: int | None,
    burst: bool,
) -> NoReturn:
    """``--processes N``: run N workers with this command's options, then exit as they did."""
    refuse_memory_store(app, backend, processes)
    if health_port is not None:
        msg = (
            f"--processes {processes} with --health-port: a probe must reach one worker, so run "
            "one worker process per container (scale with replicas) when you probe it, or drop "
            "--health-port and let the supervisor restart the workers"
        )
        raise click.UsageError(msg)
    context = click.get_current_context()
    arguments = child_arguments(context.command, context.params, skip=frozenset({"processes"}))
    log.info("running %d worker processes for %s", processes, app_path)
    sys.exit(supervise(worker_command(arguments), processes, burst=burst))


def warn_unknown_queues(app: App, queues: list[str]) -> None:
    """Warn of a queue no registered job uses: most likely a typo, worked for nothing."""
    for queue in queues:
        if queue not in app.queues:
            log.warning(
                "--queues names %r, which no job of app %r uses (its queues: %s); "
                "the worker claims from it anyway",
                queue,
                app.name,
                ", ".join(app.queues),
            )


def exit_now(threads: int, code: int, error: str | None) -> NoReturn:
    """Exit without waiting for abandoned threads of sync handlers, which cannot be stopped.

    Their jobs were settled or handed back already; only the threads remain,
    and the interpreter would wait for them to return before it exits.
    """
    log.warning("exiting with %d abandoned sync handler thread(s) still running", threads)
    if error is not None:
        click.echo(f"Error: {printable(error)}", err=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def loop_options(loop: str) -> dict[str, Any]:
    """``anyio.run``'s ``backend_options`` for the event loop named ``loop``.

    Raises:
        ConfigurationError: ``uvloop`` was asked for but is not installed.
    """
    if loop == "asyncio":
        return {}
    if importlib.util.find_spec("uvloop") is None:
        msg = "--loop uvloop needs uvloop, which is not installed: pip install 'asyncq[uvloop]'"
        raise ConfigurationError(msg)
    return {"use_uvloop": True}
