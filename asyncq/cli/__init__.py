"""The ``asyncq`` command: a thin layer that loads ``module:app`` and calls the Python API.

Every verb, ``run`` included, fails through ``_base.fail``: ``Error: ...`` on
stderr, then exit 1 when the operation failed (a job failed or was not found,
the store down or answering wrongly) or 2 on a usage error (bad arguments, an
invalid payload, a bad backend URL, an app that cannot be loaded). The table is
in docs/cli.md.
"""

from __future__ import annotations

from ._base import EXIT_FAILED, EXIT_USAGE, load_app, main
from ._dashboard import dashboard
from ._events import events
from ._limits import circuit, limits
from ._manage import enqueue, migrate
from ._ops import cancel, job, jobs, pause, purge, resume, retry, status
from ._remove import remove
from ._run import run
from ._workers import workers

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "load_app", "main"]

for _command in (
    run,
    status,
    jobs,
    job,
    retry,
    purge,
    remove,
    cancel,
    enqueue,
    pause,
    resume,
    migrate,
):
    main.add_command(_command)
main.add_command(workers)
main.add_command(limits)
main.add_command(circuit)
main.add_command(events)
main.add_command(dashboard)
del _command
