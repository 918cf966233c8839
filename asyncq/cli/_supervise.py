"""``asyncq run --processes N``: N worker processes on one host, kept running by a supervisor.

The supervisor loads nothing of the app's but its backend setting (a memory
store cannot be shared, so it is refused). It starts each worker as
``python -m asyncq run`` with the command's own options, in a session of its
own so that a terminal's Ctrl+C reaches the supervisor alone, which passes
every SIGTERM and SIGINT on to each worker: the first stops them gracefully,
the second at once, as for a single worker.

A worker that exits on its own is started again, after a pause that doubles
from one second up to thirty (and starts over once a worker has run for a
minute), except:

- under ``--burst``, a worker that exits 0 found its queues empty and stays
  stopped; the supervisor exits once every worker has;
- a worker that exits 3 stopped on a failure classified fatal: the
  supervisor stops the others and exits 3, so that what restarts the host's
  services sees it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import click

from ._base import EXIT_FATAL, EXIT_INTERRUPTED

if TYPE_CHECKING:
    from anyio.abc import Process

    from .._app import App

__all__ = [
    "PROCESSES",
    "RESTART_DELAYS",
    "Supervisor",
    "child_arguments",
    "refuse_memory_store",
]

log = logging.getLogger("asyncq.supervisor")

#: The first and the largest pause before a worker is started again, and how
#: long a worker must have run for the pause to start over.
RESTART_DELAYS = (1.0, 30.0, 60.0)


class _Processes(click.ParamType[int]):
    """``--processes``: a count of at least 1, or ``auto`` for one per CPU."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        if str(value).strip().lower() == "auto":
            return os.cpu_count() or 1
        try:
            count = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number of processes nor 'auto'", param, ctx)
        if count < 1:
            self.fail(f"{count} processes: give 1 or more, or 'auto'", param, ctx)
        return count


PROCESSES = _Processes()


def child_arguments(
    command: click.Command, params: Mapping[str, Any], *, skip: frozenset[str]
) -> list[str]:
    """The command line that repeats ``params`` of ``command``, less the options in ``skip``.

    Built from the parsed values (not from ``sys.argv``), so an option given
    through its environment variable reaches the worker too.
    """
    arguments: list[str] = []
    options: list[str] = []
    for param in command.params:
        name = param.name
        if name in skip:
            continue
        value = params.get(name)
        if isinstance(param, click.Argument):
            arguments.append(str(value))
        elif isinstance(param, click.Option):
            flag = max(param.opts, key=len)
            if param.is_flag:
                if value:
                    options.append(flag)
            elif value is not None:
                options += [flag, str(value)]
    return [*arguments, *options]


def refuse_memory_store(app: App, backend: str | None, processes: int) -> None:
    """Refuse ``--processes`` for an app whose store lives in one process's memory."""
    from ..backends.memory import MemoryBackend

    spec = backend if backend else app.backend_spec
    memory = isinstance(spec, MemoryBackend) or (
        isinstance(spec, str) and spec.startswith("memory:")
    )
    if memory:
        msg = (
            f"--processes {processes}: app {app.name!r} uses the memory store, which lives in "
            "one process, so each worker would see its own jobs only; give it a store that "
            "processes share (sqlite:///path.db, redis://..., postgresql://...) with --backend "
            "or ASYNCQ_BACKEND, or run one process"
        )
        raise click.UsageError(msg)


class Supervisor:
    """Runs ``count`` copies of a worker command and keeps them running (see the module).

    Args:
        command: the worker's command line, ``sys.executable`` first.
        count: how many workers.
        burst: the workers exit once their queues are empty; do not restart those.
    """

    def __init__(self, command: Sequence[str], count: int, *, burst: bool) -> None:
        self.command = list(command)
        self.count = count
        self.burst = burst
        self.signals = 0
        self.fatal = False
        self._running: dict[int, Process] = {}
        self._stopping: anyio.Event | None = None

    def stopping(self) -> bool:
        """A signal or a fatal failure asked every worker to stop."""
        return self._stopping is not None and self._stopping.is_set()

    async def run(self) -> int:
        """Supervise until every worker has stopped; the exit code for the command."""
        self._stopping = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._forward_signals, tg.cancel_scope)
            async with anyio.create_task_group() as workers:
                for index in range(self.count):
                    workers.start_soon(self._keep, index)
            tg.cancel_scope.cancel()
        if self.fatal:
            return EXIT_FATAL
        if self.signals > 1:
            return EXIT_INTERRUPTED
        return 0

    async def _keep(self, index: int) -> None:
        """Run worker ``index``, and again after it exits, until it should stay stopped."""
        first, largest, healthy = RESTART_DELAYS
        delay = first
        while not self.stopping():
            started = anyio.current_time()
            code = await self._run_once(index)
            if code == 0 and (self.burst or self.stopping()):
                return
            if code == EXIT_FATAL:
                log.error(
                    "worker %d stopped on a fatal failure: stopping the others (exit 3)", index
                )
                self.fatal = True
                self._stop_all(signal.SIGTERM)
                return
            if self.stopping():
                return
            if anyio.current_time() - started >= healthy:
                delay = first
            log.warning(
                "worker %d exited with code %d; starting it again in %.0f s", index, code, delay
            )
            with anyio.move_on_after(delay):
                await self._stop_requested()
            delay = min(delay * 2, largest)

    async def _run_once(self, index: int) -> int:
        env = {**os.environ, "ASYNCQ_WORKER_INDEX": str(index)}
        process = await anyio.open_process(
            self.command,
            stdin=None,
            stdout=None,
            stderr=None,
            start_new_session=True,
            env=env,
        )
        self._running[index] = process
        log.info("worker %d started (pid %d)", index, process.pid)
        if self.stopping():  # a signal came while it was starting
            process.send_signal(signal.SIGTERM)
        try:
            with anyio.CancelScope(shield=True):
                code = await process.wait()
        finally:
            del self._running[index]
        # A worker killed by a signal reports minus the signal's number.
        return code if code >= 0 else 128 - code

    async def _forward_signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
            async for number in received:
                signum = signal.Signals(number)
                self.signals += 1
                which = "gracefully" if self.signals == 1 else "at once"
                log.info(
                    "%s: stopping %d worker(s) %s",
                    signum.name,
                    len(self._running),
                    which,
                )
                self._stop_all(signum)

    async def _stop_requested(self) -> None:
        assert self._stopping is not None
        await self._stopping.wait()

    def _stop_all(self, signum: signal.Signals) -> None:
        if self._stopping is not None:
            self._stopping.set()
        for process in list(self._running.values()):
            with contextlib.suppress(ProcessLookupError):  # it exited already
                process.send_signal(signum)


def supervise(command: Sequence[str], count: int, *, burst: bool) -> int:
    """Run the supervisor on its own event loop; its exit code."""
    supervisor = Supervisor(command, count, burst=burst)
    return anyio.run(supervisor.run)


def worker_command(arguments: Sequence[str]) -> list[str]:
    """The command line of one worker: this interpreter, ``-m asyncq run``, ``arguments``."""
    return [sys.executable, "-m", "asyncq", "run", *arguments]
