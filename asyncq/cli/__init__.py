"""The ``asyncq`` command: a thin layer that loads ``module:app`` and calls the Python API.

Exit codes: 0 success; 1 the operation failed (a job failed or was not found,
the backend refused); 2 usage errors (bad arguments, an invalid payload, an
app that cannot be loaded).
"""

from __future__ import annotations

from ._base import EXIT_FAILED, EXIT_USAGE, load_app, main
from ._manage import enqueue, migrate
from ._ops import cancel, job, jobs, pause, purge, resume, retry, status
from ._run import run

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "load_app", "main"]

for _command in (run, status, jobs, job, retry, purge, cancel, enqueue, pause, resume, migrate):
    main.add_command(_command)
del _command
