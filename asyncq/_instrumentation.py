"""The instrumentation hooks: what ``App(instrumentation=[...])`` sees of enqueues and attempts.

``Instrumentation`` wraps every enqueue, sees every attempt start and end with
the outcome the worker decided (which middleware cannot see: it returns
before the outcome exists), and sees every ``enqueue_and_wait`` round trip.
asyncq's OpenTelemetry spans and metrics (``asyncq._telemetry``) are one
implementation of these hooks; this module knows nothing of OpenTelemetry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from ._records import JobRecord, JobState, Outcome

if TYPE_CHECKING:
    from ._context import JobContext

__all__ = [
    "AttemptEnd",
    "EnqueueNext",
    "Instrumentation",
    "RequestEnd",
    "hooks_ended",
    "outcome_name",
    "request_ended",
    "request_started",
]

log = logging.getLogger("asyncq.telemetry")

#: ``await call_next(jobs)`` stores the records and returns them as stored.
EnqueueNext = Callable[[Sequence[JobRecord]], Awaitable[list[JobRecord]]]
#: Called once when an attempt ends: its outcome (``None`` when the lease was
#: lost and the result discarded) and the exception the handler raised, if any.
AttemptEnd = Callable[[Outcome | None, BaseException | None], None]
#: Called once when an ``enqueue_and_wait`` ends: the job's id (``None`` when it
#: was never stored) and the exception that ended the wait, if any.
RequestEnd = Callable[[str | None, BaseException | None], None]

_Value = TypeVar("_Value")


class Instrumentation:
    """Hooks around enqueues, attempts and requests. Subclass it and override what you need.

    The defaults do nothing. Hooks run in the order of ``app.instrumentation``
    (asyncq's ``Telemetry`` first), and attempt and request ends in the
    reverse order, so a hook's ``on_start`` and its ``AttemptEnd`` see the
    job's span as current (and likewise for ``on_request``). The attempt hooks
    are synchronous and run once per job on the worker's hot path: keep them
    cheap. An exception from an attempt or request hook is logged, never
    raised into the worker or the caller.

    .. versionadded:: 0.1
    """

    async def enqueue(self, jobs: Sequence[JobRecord], call_next: EnqueueNext) -> list[JobRecord]:
        """Wrap storing ``jobs`` (one ``enqueue`` or an ``enqueue_many`` batch).

        Pass on the records to store (``msgspec.structs.replace`` them to add
        ``headers``) and return what ``call_next`` returned. A returned record
        whose id differs from the one sent is an existing job with that key.
        """
        return await call_next(jobs)

    def on_start(self, job: JobRecord, ctx: JobContext) -> AttemptEnd | None:
        """An attempt is about to run (before the middleware and the handler).

        Returns:
            A callable told how this attempt ended, or ``None``. It carries the
            attempt's state (a start time, a span) as a closure would.
        """
        return None

    def on_request(self, name: str, queue: str) -> RequestEnd | None:
        """An ``enqueue_and_wait`` of job ``name`` into ``queue`` begins.

        It runs before the payload is checked and the job enqueued, so what a
        hook makes current here (asyncq's ``Telemetry`` makes the request's
        span current) is current for the enqueue, and the job's spans nest
        beneath it.

        Returns:
            A callable told how the request ended, or ``None``.
        """
        return None


def request_started(hooks: Sequence[Instrumentation], name: str, queue: str) -> list[RequestEnd]:
    """Call every hook's ``on_request``, in order; the ends they returned."""
    ends: list[RequestEnd] = []
    for hook in hooks:
        try:
            end = hook.on_request(name, queue)
        except Exception:  # a hook's bug must not fail the request
            log.exception("instrumentation %r failed at the start of a request", hook)
            continue
        if end is not None:
            ends.append(end)
    return ends


def request_ended(
    ends: Sequence[RequestEnd], job_id: str | None, error: BaseException | None
) -> None:
    """Tell every request end, in reverse order, how the request went."""
    hooks_ended(ends, job_id, error, log, "a request")


def hooks_ended(
    ends: Sequence[Callable[[_Value, BaseException | None], None]],
    value: _Value,
    error: BaseException | None,
    logger: logging.Logger,
    what: str,
) -> None:
    """Tell every end a hook returned, in reverse order, how ``what`` ended.

    One loop for attempts (``AttemptEnd``, logged to ``asyncq.worker``) and
    requests (``RequestEnd``, logged to ``asyncq.telemetry``).
    """
    for end in reversed(ends):
        try:
            end(value, error)
        except Exception:  # a hook's bug must not hide the outcome, the result or the error
            logger.exception("instrumentation hook %r failed at the end of %s", end, what)


_OUTCOMES = {
    JobState.COMPLETED: "completed",
    JobState.FAILED: "retried",
    JobState.DEAD: "dead",
    JobState.CANCELLED: "cancelled",
    JobState.QUEUED: "released",
}


def outcome_name(outcome: Outcome | None, error: BaseException | None = None) -> str:
    """The ``asyncq.job.outcome`` value: completed, retried, dead, cancelled, released, lost.

    ``released`` is a job handed back on shutdown; ``lost`` a lease lost
    mid-attempt (the result was discarded); ``interrupted`` an attempt cut
    short because the worker itself was cancelled.
    """
    if outcome is None:
        return "lost" if error is None else "interrupted"
    return _OUTCOMES.get(outcome.state, str(outcome.state))
