"""Every exception asyncq raises, under one root.

::

    AsyncqError
    ├── ConfigurationError     duplicate job name, bad backend URL, missing extra, bad option
    ├── ValidationError        a payload does not match its schema; nothing was stored
    ├── JobNotFound            no job with that id (never existed, or purged)
    ├── JobActive              the job is running: it cannot be removed (cancel it first)
    ├── UnknownParent          enqueue(after=[...]) names a job that is not stored; nothing stored
    ├── JobFailed              ended dead or cancelled (``result``, ``enqueue_and_wait``)
    │   └── JobCancelled       ... cancelled, specifically
    └── BackendError           the store cannot be reached or answered wrongly
        └── BackendUnavailable ... cannot be reached (also a ``ConnectionError``)

Signals a handler raises to steer its own job (not errors of asyncq)::

    Retry(delay=..., reason=...)   ask for another attempt
    Reject(reason=...)             dead-letter now, no more attempts
    CircuitOpen(reason=...)        the service is down: open the job's circuit now

Waiting that runs out raises the builtin ``TimeoutError``; the job may still run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import timedelta

    from ._records import ErrorInfo, JobRecord

__all__ = [
    "AsyncqError",
    "BackendError",
    "BackendUnavailable",
    "CircuitOpen",
    "ConfigurationError",
    "JobActive",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "Reject",
    "Retry",
    "UnknownParent",
    "ValidationError",
]


class AsyncqError(Exception):
    """The root of every error asyncq raises."""


class ConfigurationError(AsyncqError):
    """The app, a job or a backend is configured wrongly; the message says how to fix it."""


class ValidationError(AsyncqError, ValueError):
    """A payload does not match its job's schema, or breaks a limit. Nothing was stored.

    The limits (size, nesting depth, no self-reference) are in
    ``docs/guarantees.md``, "Limits".

    Attributes:
        job_name: the job whose schema or limits rejected the payload.
        detail: the explanation, naming the field
            (``Expected `int`, got `str` - at `$.cents```) or the limit.
    """

    def __init__(self, job_name: str, detail: str) -> None:
        self.job_name = job_name
        self.detail = detail
        super().__init__(f"invalid payload for job {job_name!r}: {detail}")


class JobNotFound(AsyncqError, LookupError):
    """No job with this id: it never existed, or it was removed or purged (or its result expired).

    A caller waiting for a job's result (``JobHandle.result``,
    ``enqueue_and_wait``) gets it when the job is removed while it waits.
    """

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            f"no job with id {job_id!r} (never enqueued, removed, or purged after its TTL)"
        )


class JobActive(AsyncqError):
    """The job is running (``active``): it cannot be removed while a worker holds it.

    Attributes:
        job_id: the job's id.
        name: its name, when known.
        queue: its queue, when known.
    """

    def __init__(self, job_id: str, name: str | None = None, queue: str | None = None) -> None:
        self.job_id = job_id
        self.name = name
        self.queue = queue
        what = f"job {job_id}"
        if name is not None and queue is not None:
            what += f" ({name}, queue {queue!r})"
        super().__init__(
            f"{what} is running, so it was not removed: cancel it first"
            f" (asyncq cancel {job_id}), then remove it once it has stopped"
        )


class UnknownParent(AsyncqError, LookupError):
    """A job was enqueued ``after`` a parent that is not stored; nothing of the batch was stored.

    A parent must exist when its child is enqueued (a finished one counts at
    once), in the child's queue: parents and children share a queue, which
    keeps a graph in one Redis Cluster slot.

    Attributes:
        parent_id: the parent that was not found.
        job_id: the child that named it.
        queue: the child's queue, where the parent was looked for.
    """

    def __init__(self, parent_id: str, job_id: str, queue: str) -> None:
        self.parent_id = parent_id
        self.job_id = job_id
        self.queue = queue
        super().__init__(
            f"job {job_id} (queue {queue!r}) waits for parent {parent_id!r}, which is not a job"
            f" of queue {queue!r}: enqueue the parent first, in the same queue (or in the same"
            " flow, before it); nothing was stored"
        )


class JobFailed(AsyncqError):
    """The job ended without a result: it is dead (out of attempts, rejected) or cancelled.

    Attributes:
        job: the job's record as stored, with every error (``job.errors``).
        error: the last error, if any.
    """

    def __init__(self, job: JobRecord) -> None:
        self.job = job
        self.error: ErrorInfo | None = job.last_error
        what = (
            f"job {job.name!r} (id {job.id}, queue {job.queue!r}, "
            f"attempt {job.attempts}/{job.max_attempts})"
        )
        why = f": {self.error.one_line()}" if self.error else ""
        super().__init__(f"{what} ended {job.state.value}{why}")

    @property
    def job_id(self) -> str:
        """The id of the job that failed."""
        return self.job.id

    def __repr__(self) -> str:
        job = self.job
        name = type(self).__name__
        return f"{name}(job_id={job.id!r}, name={job.name!r}, state={job.state.value!r})"


class JobCancelled(JobFailed):
    """The job was cancelled before it completed."""


class BackendError(AsyncqError):
    """The store answered wrongly, or could not be reached (see ``BackendUnavailable``)."""


class BackendUnavailable(BackendError, ConnectionError):
    """The store cannot be reached. Workers reconnect with backoff; producers get this error."""


class Retry(Exception):
    """Raised by a handler to ask for another attempt, after ``delay`` seconds if given.

    It counts as a failed attempt: a job out of attempts goes to the dead letters.
    """

    def __init__(self, reason: str = "", *, delay: float | timedelta | None = None) -> None:
        self.reason = reason
        self.delay = delay
        super().__init__(reason or "retry requested")


class Reject(Exception):
    """Raised by a handler to send its job straight to the dead letters, with no more attempts."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason or "rejected")


class CircuitOpen(Exception):
    """Raised by a handler whose downstream service is down: its job's circuit opens now.

    The attempt fails with kind ``circuit_open`` (retried per the job's policy),
    and the jobs behind the circuit (``@app.job(circuit=...)``) wait, without
    using attempts, until it half-opens (``App.circuit``).
    """

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason or "circuit open")
