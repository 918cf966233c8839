"""The benchmark's ``process=True`` handler, at the top level of a module of its own.

A worker's child processes import a process handler by its module and name,
so it cannot be registered inside a scenario; each run includes it in the
scenario's app (``App.include``).
"""

from __future__ import annotations

from asyncq import App

from .asyncq_bench import Noop

jobs = App("bench-process-jobs", telemetry=False)


@jobs.job(schema=Noop, name="noop-process", max_attempts=1, result_ttl=3600, process=True)
def noop_process(payload: Noop) -> None:
    """Does nothing, in a child process."""
