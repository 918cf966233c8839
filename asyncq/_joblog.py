"""``asyncq run --log-jobs``: an INFO line per finished attempt, with how long it ran.

An ``Instrumentation`` (no cost to a worker that does not ask for it): the
line names the job, its id, queue and attempt, says how the attempt ended
(``completed``, ``failed`` for a retry to come, ``dead``, ``cancelled``,
``queued`` when handed back, ``lost`` when the lease was) and carries the
job's fields and ``duration`` (seconds) for the JSON format.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ._instrumentation import AttemptEnd, Instrumentation
from ._logging import job_fields

if TYPE_CHECKING:
    from ._context import JobContext
    from ._records import JobRecord, Outcome

__all__ = ["JobLog"]

log = logging.getLogger("asyncq.worker")


class JobLog(Instrumentation):
    """Logs each attempt's end at INFO, with its duration."""

    def on_start(self, job: JobRecord, ctx: JobContext) -> AttemptEnd | None:
        started = time.perf_counter()

        def ended(outcome: Outcome | None, error: BaseException | None) -> None:
            took = time.perf_counter() - started
            state = "lost" if outcome is None else str(outcome.state)
            fields = job_fields(job, state)
            fields["duration"] = round(took, 6)
            log.info(
                "job %r (id %s, queue %r, attempt %d) %s in %.3fs",
                job.name,
                job.id,
                job.queue,
                job.attempts,
                state,
                took,
                extra=fields,
            )

        return ended
