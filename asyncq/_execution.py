"""One attempt of one leased job: decode, call the handler, turn what happened into an Outcome.

Nothing here talks to the backend except ``ctx.progress``; the worker settles
the returned outcome (in batches). Every way an attempt can end maps to
exactly one outcome, or to ``None`` when the lease was lost and the result
must be discarded.
"""

from __future__ import annotations

import enum
import logging
import time
import traceback
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from ._context import JobContext, ParentReader, _current
from ._instrumentation import AttemptEnd, Instrumentation, hooks_ended
from ._logging import job_fields
from ._middleware import CallNext, compose
from ._offload import ChildFailure, Encoded, Offload, ThreadJobContext
from ._records import ErrorInfo, ErrorKind, JobRecord, JobState, Lease, Outcome
from ._retry import FailureClass, RetryPolicy, seconds
from .backends.base import Backend
from .exceptions import CircuitOpen, Reject, Retry

if TYPE_CHECKING:
    from ._app import App
    from ._handler import Handler

__all__ = [
    "UNKNOWN_JOB_RETRY",
    "Running",
    "StopReason",
    "execute",
    "scope_class",
    "stopped_outcome",
]

log = logging.getLogger("asyncq.worker")

_TRACEBACK_LIMIT = 16_000
_FINAL_KINDS = frozenset({ErrorKind.REJECT, ErrorKind.DECODE, ErrorKind.UNKNOWN_JOB})
# Outcomes logged at DEBUG only: an INFO line per completed job costs throughput
# (see docs/observability.md) and says little that the metrics do not.
_QUIET = {JobState.COMPLETED: "completed", JobState.QUEUED: "handed back to its queue"}

#: The delays between hand-backs of a job whose name the worker does not know
#: (5 s, doubling, capped at 60 s), within the app's ``unknown_job_grace``.
UNKNOWN_JOB_RETRY = RetryPolicy.exponential(5.0, cap=60.0, jitter=False)


class StopReason(enum.Enum):
    """Why the worker cancelled a running attempt."""

    CANCEL = "cancel"  #: an operator cancelled the job
    LOST = "lost"  #: the lease is no longer ours
    SHUTDOWN = "shutdown"  #: the worker is stopping; hand the job back


class Running:
    """A job a worker is running: its lease, its cancel scope, and why it was stopped, if it was."""

    __slots__ = ("lease", "scope", "stop")

    def __init__(self, lease: Lease, scope: anyio.CancelScope | None = None) -> None:
        self.lease = lease
        self.scope = anyio.CancelScope() if scope is None else scope
        self.stop: StopReason | None = None

    def stopped(self) -> bool:
        """Whether the worker interrupted this attempt."""
        return self.stop is not None

    def interrupt(self, reason: StopReason) -> None:
        """Cancel the attempt, remembering the first reason given."""
        if self.stop is None:
            self.stop = reason
        self.scope.cancel()


def parent_reader(app: App, backend: Backend) -> ParentReader:
    """How a job with parents reads them: the store, and the app's decoders by job name."""
    from ._codec import Codec

    def codec_of(name: str) -> Codec[Any]:
        handler = app.handlers.get(name)
        return handler.result_codec if handler is not None else Codec(Any, name)

    return ParentReader(backend.get, codec_of)


def scope_class() -> type[anyio.CancelScope]:
    """The class of anyio's cancel scopes on the running event loop.

    ``anyio.CancelScope()`` looks the running async library up on every call
    (about 2 µs); its class makes the same scopes directly (about 0.6 µs),
    and a worker makes one per job.
    """
    return type(anyio.CancelScope())


async def execute(
    app: App, backend: Backend, running: Running, state: Any = None, offload: Offload | None = None
) -> Outcome | None:
    """Run one attempt and return its outcome (``None``: lease lost, discard).

    The app's instrumentation sees the attempt start before anything else
    (so the job's span is current in the middleware, the handler and the
    logs) and sees it end with the outcome decided here. Sync and process
    handlers run in ``offload``'s pools (a default set when not given).
    """
    job = running.lease.job
    handler = app.handlers.get(job.name)
    progress = partial(backend.progress, running.lease)
    store_log = partial(backend.log, running.lease)
    parents = parent_reader(app, backend) if job.parents else None
    if handler is not None and handler.sync:
        ctx: JobContext = ThreadJobContext(
            job, state=state, progress=progress, log=store_log, parents=parents
        )
    else:
        ctx = JobContext(job, state=state, progress=progress, log=store_log, parents=parents)
    hooks: Sequence[Instrumentation] = app.instrumentation
    ends = _started(hooks, job, ctx) if hooks else ()
    debug = log.isEnabledFor(logging.DEBUG)
    if debug:
        log.debug("job %r (id %s) started", job.name, job.id, extra=job_fields(job, "active"))
    try:
        outcome, error = await _attempt(app, running, ctx, handler, offload)
    except BaseException as exc:  # the worker itself is being cancelled
        hooks_ended(ends, None, exc, log, "an attempt")
        raise
    # Retries, dead letters and cancellations are logged where they are decided.
    if debug and outcome is not None and outcome.state in _QUIET:
        what = _QUIET[outcome.state]
        log.debug("job %r (id %s) %s", job.name, job.id, what, extra=job_fields(job, outcome.state))
    hooks_ended(ends, outcome, error, log, "an attempt")
    return outcome


def _started(hooks: Sequence[Instrumentation], job: JobRecord, ctx: JobContext) -> list[AttemptEnd]:
    ends: list[AttemptEnd] = []
    for hook in hooks:
        try:
            end = hook.on_start(job, ctx)
        except Exception:  # a hook's bug must not fail the job
            log.exception("instrumentation %r failed on start of job %s", hook, job.id)
            continue
        if end is not None:
            ends.append(end)
    return ends


async def _attempt(
    app: App,
    running: Running,
    ctx: JobContext,
    handler: Handler[Any, Any] | None,
    offload: Offload | None,
) -> tuple[Outcome | None, BaseException | None]:
    """The attempt proper: its outcome, and the exception behind it when there is one."""
    lease = running.lease
    job = lease.job
    if running.stop is not None:  # stopped before a slot picked it up
        return stopped_outcome(running, started=False), None
    if handler is None or handler.fn is None:
        return _unknown_job(app, lease), None
    fn = handler.fn
    call: CallNext
    if handler.process:  # the child decodes the payload and encodes the result
        call = partial(_pools(offload).processes.run, handler, job, ctx)
    else:
        try:
            payload = handler.payload_codec.decode_payload(job.payload, app.max_payload_bytes)
        # Whatever the stored bytes make the decoder raise (a RecursionError from
        # nesting no producer let through, included) is this job's failure alone.
        except Exception as exc:  # noqa: BLE001
            message = f"payload does not decode as {handler.schema!r} for job {job.name!r}: {exc}"
            return _failure(lease, handler.options.retry, ErrorKind.DECODE, message, exc=exc), exc
        if handler.sync:
            args = (payload, ctx) if handler.takes_context else (payload,)
            call = partial(_pools(offload).threads.run, fn, args, ctx)
        elif handler.takes_context:
            call = partial(fn, payload, ctx)
        else:
            call = partial(fn, payload)
    if app.middleware:
        call = compose(app.middleware, ctx, call)

    completed = False
    result: Any = None
    error: Exception | None = None
    scope = running.scope
    if job.timeout is not None:
        # One scope for both ends: its deadline is the timeout, and the worker
        # cancels it to interrupt (then ``running.stop`` says why).
        scope.deadline = anyio.current_time() + job.timeout
    reset = _current.set(ctx)
    try:
        with scope:
            result = await call()
            completed = True
    except Exception as exc:  # noqa: BLE001 - every handler failure becomes an outcome
        error = exc
    finally:
        _current.reset(reset)

    if completed:
        if handler.process and type(result) is Encoded:  # encoded by the child
            data = result.data
        else:
            try:
                data = handler.result_codec.encode_result(result)
            except Exception as exc:  # noqa: BLE001 - a result we cannot store fails the job
                message = f"job {job.name!r} returned a value that cannot be stored: {exc}"
                policy = handler.options.retry
                return _failure(lease, policy, ErrorKind.REJECT, message, exc=exc), exc
        done = Outcome(job_id=job.id, token=lease.token, state=JobState.COMPLETED, result=data)
        return done, None
    if running.stopped():
        return stopped_outcome(running), None
    policy = handler.options.retry
    if scope.cancelled_caught:  # not stopped by the worker: the deadline passed
        message = f"attempt ran past its timeout of {job.timeout:g}s and was cancelled"
        return _failure(lease, policy, ErrorKind.TIMEOUT, message), None
    if isinstance(error, ChildFailure):
        return _child_failure(lease, policy, error), error
    if isinstance(error, Retry):
        delay = None if error.delay is None else seconds(error.delay)
        return _failure(lease, policy, ErrorKind.RETRY, str(error), exc=error, delay=delay), error
    if isinstance(error, Reject):
        return _failure(lease, policy, ErrorKind.REJECT, str(error), exc=error), error
    if isinstance(error, CircuitOpen):
        return _failure(lease, policy, ErrorKind.CIRCUIT_OPEN, str(error), exc=error), error
    assert error is not None
    verdict = policy.failure_class(error) or _app_class(app, error) or policy.default_class
    kind = ErrorKind.FATAL if verdict == "fatal" else ErrorKind.ERROR
    final = verdict == "permanent"
    return _failure(lease, policy, kind, str(error), exc=error, final=final), error


def _pools(offload: Offload | None) -> Offload:
    """The worker's pools, or this process's default ones (``execute`` called directly)."""
    global _default_offload
    if offload is not None:
        return offload
    if _default_offload is None:
        _default_offload = Offload.of(None, None)
    return _default_offload


_default_offload: Offload | None = None

_CHILD_KINDS = {
    "retry": ErrorKind.RETRY,
    "reject": ErrorKind.REJECT,
    "decode": ErrorKind.DECODE,
    "result": ErrorKind.REJECT,
}


def _child_failure(lease: Lease, policy: RetryPolicy, error: ChildFailure) -> Outcome:
    """The outcome of an attempt that failed in a child process, as if it had failed here."""
    failed = error.failed
    kind = _CHILD_KINDS.get(failed.kind, ErrorKind.ERROR)
    final = False
    if kind is ErrorKind.ERROR and failed.kind == "error":
        verdict = failed.verdict or policy.default_class
        kind = ErrorKind.FATAL if verdict == "fatal" else ErrorKind.ERROR
        final = verdict == "permanent"
    info = ErrorInfo(
        kind=kind,
        message=failed.message,
        attempt=lease.job.attempts,
        at=time.time(),
        type=failed.error_type,
        traceback=failed.traceback if kind not in (ErrorKind.RETRY, ErrorKind.REJECT) else None,
    )
    return _failure(lease, policy, kind, failed.message, delay=failed.delay, final=final, info=info)


def _app_class(app: App, error: Exception) -> FailureClass | None:
    """The class the app's ``classify`` rules give ``error``: the first match's, in order."""
    for rule in app.classifiers:
        try:
            matched = rule.match(error)
        except Exception:  # a broken predicate must not lose the outcome
            log.exception("failure classifier %s raised on %r; skipping it", rule.what, error)
            continue
        if matched:
            return rule.failure_class
    return None


def _handed_back(job: JobRecord) -> list[ErrorInfo]:
    """This job's hand-backs for an unknown name since it last started afresh, oldest first.

    They are the ``unknown_job`` errors at the end of the job's errors whose
    attempt numbers count down from this attempt's: an operator's retry
    starts the count again from 1, which ends the run.
    """
    found: list[ErrorInfo] = []
    expected = job.attempts - 1
    for info in reversed(job.errors):
        if info.attempt != expected or expected < 1:
            break
        if info.kind is ErrorKind.UNKNOWN_JOB:
            found.append(info)
        expected -= 1
    found.reverse()
    return found


def _unknown_job(app: App, lease: Lease) -> Outcome:
    """Hand a job whose name this app does not know back for a newer worker, or kill it.

    Each hand-back settles the attempt ``failed`` with a ``retry_at`` (the
    store counts it), and ``_failure`` does not count it against
    ``max_attempts``. Once ``app.unknown_job_grace`` has passed since the first
    hand-back, the job is dead.
    """
    job = lease.job
    known = ", ".join(sorted(n for n, h in app.handlers.items() if h.fn is not None)) or "none"
    what = f"no job named {job.name!r} in app {app.name!r} (queue {job.queue!r}; known: {known})"
    handed = _handed_back(job)
    now = time.time()
    grace = app.unknown_job_grace
    deadline = (handed[0].at if handed else now) + grace
    if now >= deadline:
        message = (
            f"{what}; no worker that has it took it within the grace period of {grace:g}s; "
            "deploy a worker that has it, then retry the dead job"
        )
        return _failure(lease, UNKNOWN_JOB_RETRY, ErrorKind.UNKNOWN_JOB, message, final=True)
    wait = min(UNKNOWN_JOB_RETRY.delay(len(handed) + 1), deadline - now)
    message = (
        f"{what}; handed back for a worker that has it, "
        f"for up to {grace:g}s after the first hand-back"
    )
    info = _error(job, ErrorKind.UNKNOWN_JOB, message)
    log.warning(
        "job %r (id %s, queue %r) is unknown here, retrying in %.2fs: %s",
        job.name,
        job.id,
        job.queue,
        wait,
        message,
        extra=job_fields(job, JobState.FAILED.value),
    )
    return Outcome(
        job_id=job.id, token=lease.token, state=JobState.FAILED, error=info, retry_at=now + wait
    )


def stopped_outcome(running: Running, *, started: bool = True) -> Outcome | None:
    """The outcome of an attempt the worker stopped: discarded, handed back, or cancelled.

    ``started`` is false for a job stopped while it waited for a slot.
    """
    lease = running.lease
    job = lease.job
    if running.stop is StopReason.SHUTDOWN:
        return Outcome(job_id=job.id, token=lease.token, state=JobState.QUEUED)
    if running.stop is StopReason.CANCEL:
        when = "while running" if started else "before it started"
        info = _error(job, ErrorKind.CANCELLED, f"cancelled by request {when}")
        log.info(
            "job %r (id %s, queue %r) cancelled %s",
            job.name,
            job.id,
            job.queue,
            when,
            extra=job_fields(job, JobState.CANCELLED.value),
        )
        return Outcome(job_id=job.id, token=lease.token, state=JobState.CANCELLED, error=info)
    return None


# Failures the handler chose (``raise Retry``, ``raise Reject``): no stack trace to report.
_ASKED_KINDS = (ErrorKind.RETRY, ErrorKind.REJECT)


def _error(
    job: JobRecord, kind: ErrorKind, message: str, exc: BaseException | None = None
) -> ErrorInfo:
    tb = None
    if exc is not None and kind not in _ASKED_KINDS:
        tb = "".join(traceback.format_exception(exc))[-_TRACEBACK_LIMIT:]
    return ErrorInfo(
        kind=kind,
        message=message,
        attempt=job.attempts,
        at=time.time(),
        type=type(exc).__qualname__ if exc is not None else None,
        traceback=tb,
    )


def _failure(
    lease: Lease,
    policy: RetryPolicy,
    kind: ErrorKind,
    message: str,
    *,
    exc: BaseException | None = None,
    delay: float | None = None,
    final: bool = False,
    info: ErrorInfo | None = None,
) -> Outcome:
    """A failed attempt's outcome: retry later, or dead when out of attempts or not retryable.

    Hand-backs of an unknown name (``_unknown_job``) are not counted against
    ``max_attempts``.
    """
    job = lease.job
    if info is None:
        info = _error(job, kind, message, exc)
    attempts = job.attempts
    if job.errors and kind is not ErrorKind.UNKNOWN_JOB:
        attempts -= len(_handed_back(job))
    where = (
        f"job {job.name!r} (id {job.id}, queue {job.queue!r}, "
        f"attempt {attempts}/{job.max_attempts})"
    )
    if final or kind in _FINAL_KINDS or attempts >= job.max_attempts:
        reason = info.one_line() or kind.value
        # The exception rides along (Sentry's logging integration and the like
        # take its stack trace), unless the job asked for its fate (Reject).
        traced = exc if exc is not None and kind not in _ASKED_KINDS else None
        log.error(
            "%s is dead: %s",
            where,
            reason,
            exc_info=traced,
            extra=job_fields(job, JobState.DEAD.value),
        )
        return Outcome(job_id=job.id, token=lease.token, state=JobState.DEAD, error=info)
    wait = policy.delay(attempts) if delay is None else delay
    log.warning(
        "%s failed, retrying in %.2fs: %s",
        where,
        wait,
        info.one_line() or kind.value,
        extra=job_fields(job, JobState.FAILED.value),
    )
    return Outcome(
        job_id=job.id,
        token=lease.token,
        state=JobState.FAILED,
        error=info,
        retry_at=info.at + wait,
    )
