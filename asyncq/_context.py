"""JobContext: what a running handler may know and do about its own job."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

import anyio.from_thread

from ._annotations import LOG_LEVELS, encode_detail, log_line
from ._logging import job_fields
from ._records import JobRecord, JobState, LogLine

if TYPE_CHECKING:
    from ._codec import Codec
    from ._handler import JobHandle

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
    __slots__ = ("_job", "_parents", "_report_log", "_report_progress", "state")

    def __init__(
        self,
        job: JobRecord,
        *,
        state: Any = None,
        progress: Callable[..., Awaitable[bool]] | None = None,
        log: Callable[[Sequence[LogLine]], Awaitable[bool]] | None = None,
        parents: ParentReader | None = None,
    ) -> None:
        self._job = job
        self.state = state
        self._report_progress = progress
        self._report_log = log
        self._parents = parents

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

    async def progress(self, value: float, detail: Any = None) -> None:
        """Record how far the job has got, from 0.0 to 1.0; operators see it in ``job``/``jobs``.

        Args:
            value: the fraction done.
            detail: any JSON value saying more (``{"step": "upload"}``), kept
                with the fraction as ``JobRecord.progress_detail`` until the
                next call (which replaces or, without one, clears it).

        Raises:
            ValueError: ``value`` is outside 0.0 to 1.0, or ``detail`` is not
                JSON-able or over ``MAX_DETAIL_BYTES`` encoded.
        """
        if not 0.0 <= value <= 1.0:
            msg = f"progress must be between 0.0 and 1.0, got {value!r} (job {self.name!r})"
            raise ValueError(msg)
        if detail is None:
            if self._report_progress is not None:
                await self._report_progress(value)  # the store clears an earlier detail
            return
        subject = f"progress detail of job {self.name!r} (id {self.job_id})"
        encoded = encode_detail(detail, subject)
        if self._report_progress is not None:
            await self._report_progress(value, encoded)

    async def log(self, message: str, *, level: str = "info") -> None:
        """Keep a line on the job, for operators (``asyncq job ID``, ``JobRecord.logs``).

        The job keeps its last ``MAX_LOG_LINES`` lines across attempts, each
        cut to ``MAX_LOG_MESSAGE`` characters. The line also goes to the
        ``asyncq.job`` logger with the job's fields.

        Args:
            message: the line.
            level: ``debug``, ``info``, ``warning`` or ``error``.

        Raises:
            ValueError: an unknown ``level``.
        """
        line = log_line(time.time(), self.attempt, level, str(message))
        _job_logger.log(LOG_LEVELS[level], "%s", line.message, extra=job_fields(self._job))
        if self._report_log is not None:
            await self._report_log((line,))

    @property
    def parents(self) -> tuple[str, ...]:
        """The ids of the jobs this one waited for (``enqueue(after=...)``), in order."""
        return self._job.parents

    async def parent_results(self) -> dict[str, Any]:
        """The result of each parent that completed, by parent id, in the parents' order.

        Each result is decoded as its parent's handler returns it when this
        app registers that handler, else as plain msgspec builtins. A parent
        that ended dead or cancelled (``after_failure="run"``), or is gone, is
        left out. Parents are kept by the store until their waiting children
        are released (see the Flows guide for how long results live).
        """
        out: dict[str, Any] = {}
        for parent_id in self._job.parents:
            job = await self._read_parent(parent_id)
            if job is not None and job.state is JobState.COMPLETED:
                out[parent_id] = self._reader().decode(job, None)
        return out

    @overload
    async def parent_result(self, parent: JobHandle[R]) -> R: ...
    @overload
    async def parent_result(self, parent: str) -> Any: ...
    async def parent_result(self, parent: JobHandle[Any] | str) -> Any:
        """One parent's result: typed as the handle's result when given a typed ``JobHandle``.

        Raises:
            ValueError: the job is not a parent of this one.
            JobNotFound: the parent is gone (removed or purged).
            JobFailed: the parent ended dead or cancelled (``JobCancelled``).
        """
        from .exceptions import JobCancelled, JobFailed, JobNotFound

        parent_id = parent if isinstance(parent, str) else parent.id
        if parent_id not in self._job.parents:
            msg = f"job {parent_id!r} is not a parent of job {self.name!r} ({self.job_id})"
            raise ValueError(msg)
        job = await self._read_parent(parent_id)
        if job is None:
            raise JobNotFound(parent_id)
        if job.state is JobState.CANCELLED:
            raise JobCancelled(job)
        if job.state is not JobState.COMPLETED:
            raise JobFailed(job)
        codec = None if isinstance(parent, str) else parent._codec
        return self._reader().decode(job, codec)

    def _reader(self) -> ParentReader:
        if self._parents is None:
            msg = f"job {self.name!r} ({self.job_id}) runs without a store to read its parents from"
            raise RuntimeError(msg)
        return self._parents

    async def _read_parent(self, parent_id: str) -> JobRecord | None:
        return await self._reader().read(parent_id)

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


class ParentReader:
    """How a context reads its job's parents: the store, and the app's result decoders."""

    __slots__ = ("_codec_of", "read")

    def __init__(
        self,
        read: Callable[[str], Awaitable[JobRecord | None]],
        codec_of: Callable[[str], Codec[Any]],
    ) -> None:
        self.read = read
        self._codec_of = codec_of

    def decode(self, job: JobRecord, codec: Codec[Any] | None) -> Any:
        """A completed parent's result, with ``codec`` or the one its name is registered with."""
        return (codec or self._codec_of(job.name)).decode(job.result or b"\xc0")


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
