"""JobContext: what a running handler may know and do about its own job."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

import anyio.from_thread

from ._records import JobRecord

__all__ = ["JobContext", "current_job"]

P = ParamSpec("P")
R = TypeVar("R")

_current: ContextVar[JobContext] = ContextVar("asyncq_current_job")
_job_logger = logging.getLogger("asyncq.job")


class JobContext:
    """The running job, as its handler sees it.

    A handler receives it as an optional second argument; code deeper in the
    call stack reaches the same object through ``asyncq.current_job()``.

    The job's fields (``job_id``, ``name``, ``queue``, ``attempt``,
    ``max_attempts``, ``enqueued_at``, ``headers``) are read-only.

    Attributes:
        state: what the app's lifespan yielded (shared resources), or ``None``.
    """

    # The job's fields are read through from its record: a context is made for
    # every attempt, and most handlers never look at most of them.
    __slots__ = ("_job", "_report_progress", "state")

    def __init__(
        self,
        job: JobRecord,
        *,
        state: Any = None,
        progress: Callable[[float], Awaitable[bool]] | None = None,
    ) -> None:
        self._job = job
        self.state = state
        self._report_progress = progress

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self._job.id

    @property
    def name(self) -> str:
        """The job's name."""
        return self._job.name

    @property
    def queue(self) -> str:
        """The queue it came from."""
        return self._job.queue

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self._job.attempts

    @property
    def max_attempts(self) -> int:
        """How many attempts the job may have."""
        return self._job.max_attempts

    @property
    def enqueued_at(self) -> float:
        """When it was enqueued (epoch seconds)."""
        return self._job.enqueued_at

    @property
    def headers(self) -> dict[str, str]:
        """Propagation headers set by the producer (trace context)."""
        return self._job.headers

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger that adds ``job_id``, ``job_name``, ``queue`` and ``attempt`` to each record."""
        extra = {
            "job_id": self.job_id,
            "job_name": self.name,
            "queue": self.queue,
            "attempt": self.attempt,
        }
        return logging.LoggerAdapter(_job_logger, extra)

    async def progress(self, value: float) -> None:
        """Record how far the job has got, from 0.0 to 1.0; operators see it in ``job``/``jobs``.

        Raises:
            ValueError: ``value`` is outside 0.0 to 1.0.
        """
        if not 0.0 <= value <= 1.0:
            msg = f"progress must be between 0.0 and 1.0, got {value!r} (job {self.name!r})"
            raise ValueError(msg)
        if self._report_progress is not None:
            await self._report_progress(value)

    @property
    def is_last_attempt(self) -> bool:
        """Whether a failure now sends the job to the dead letters."""
        return self.attempt >= self.max_attempts

    def __repr__(self) -> str:
        return (
            f"JobContext(job_id={self.job_id!r}, name={self.name!r}, queue={self.queue!r}, "
            f"attempt={self.attempt}/{self.max_attempts})"
        )

    # -- sync handlers: calling into the event loop from the handler's thread ---------

    @property
    def cancelled(self) -> bool:
        """Whether this attempt was stopped while its sync handler still runs.

        A sync handler runs in a thread that cannot be interrupted: when its
        deadline passes, the job is cancelled, or the worker hands the job
        back on shutdown, this turns ``True`` and the handler's result will be
        discarded, so a long handler should poll it and return early. It is
        always ``False`` in an async handler (its cancel scope interrupts it
        instead) and in a process handler (its process is killed).
        """
        return False

    def from_thread(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run an async method of this context on the worker's event loop, and wait for it.

        The sync variant of every async method, for a sync handler's thread::

            ctx.from_thread(ctx.progress, 0.5)

        Raises:
            RuntimeError: called outside a sync handler's thread (an async
                handler awaits the method instead).
        """

        async def call() -> R:
            return await fn(*args, **kwargs)

        return anyio.from_thread.run(call)


def current_job() -> JobContext:
    """The context of the job running in this task.

    Raises:
        LookupError: called outside a running job.
    """
    try:
        return _current.get()
    except LookupError:
        msg = "asyncq.current_job() was called outside a running job"
        raise LookupError(msg) from None
