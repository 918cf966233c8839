"""The rules every store applies, written once: a store's own code says only how it stores.

- Job rules, in the words of the ``Backend`` specification (``base.py``):
  when a new job is ready, when a job is ready now, when a lease has lapsed
  (and the error ``recover`` then records), when a job holds its idempotency
  key, when a result expires, and what ``prune`` deletes under a
  ``Retention``. Python that holds a record calls them (the memory backend
  throughout); SQL and Lua that decide the same thing name the function they
  mirror.
- ``Waiters``: who in this process waits for which job or queue, and waking
  them, for stores whose wakeups are (partly) in-process events.
- URLs: ``mask_url`` hides every password a URL may carry, and
  ``parse_url_options`` reads a URL's query against the options a store knows.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import unquote

import anyio
from msgspec.structs import replace

from .._records import TERMINAL_STATES, ErrorInfo, ErrorKind, JobRecord, JobState
from ..exceptions import ConfigurationError, UnknownParent
from ._retention import over_cap
from .base import Retention

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator, Mapping

__all__ = [
    "FAILED_PARENT",
    "LIVE_STATES",
    "RETENTION_OPTIONS",
    "Converter",
    "PENDING_STATES",
    "Waiters",
    "as_enqueued",
    "expires_at",
    "flag",
    "holds_key",
    "is_pending",
    "key_held_until",
    "integer",
    "debounced",
    "is_ready",
    "claimed",
    "dependency_error",
    "linked",
    "released",
    "lease_lapsed",
    "lost_error",
    "no_transactions",
    "mask_url",
    "optional_count",
    "optional_seconds",
    "over_cap",
    "parse_url_options",
    "pop_retention",
    "prunable",
    "result_expired",
    "seconds",
    "text",
]

#: The states in which a job holds its key whatever the time: it has not finished.
LIVE_STATES = frozenset(
    {JobState.WAITING, JobState.SCHEDULED, JobState.QUEUED, JobState.ACTIVE, JobState.FAILED}
)
_WAITING = frozenset({JobState.SCHEDULED, JobState.FAILED})


# -- job rules ---------------------------------------------------------------------


def as_enqueued(job: JobRecord, now: float) -> JobRecord:
    """``job`` as ``enqueue`` stores it at ``now``: ``queued`` or ``scheduled``.

    A job asked for now (``scheduled_at <= enqueued_at``) is ready at once,
    with ``scheduled_at`` brought back to ``now`` when the producer's clock is
    ahead of the store's; a delayed job waits while ``scheduled_at`` is after
    ``now``.
    """
    if job.debounce is not None:  # an instruction to the store, never stored
        job = replace(job, debounce=None)
    if job.scheduled_at <= job.enqueued_at:
        return replace(job, state=JobState.QUEUED, scheduled_at=min(job.scheduled_at, now))
    state = JobState.SCHEDULED if job.scheduled_at > now else JobState.QUEUED
    return replace(job, state=state)


def is_ready(job: JobRecord, now: float) -> bool:
    """Whether ``claim`` may take ``job`` at ``now``: queued, or waiting and due."""
    return job.state is JobState.QUEUED or (job.state in _WAITING and job.scheduled_at <= now)


def claimed(job: JobRecord, now: float, worker: str, expires: float) -> JobRecord:
    """``job`` as claimed: active, one attempt more, leased to ``worker`` until ``expires``."""
    return replace(
        job,
        state=JobState.ACTIVE,
        attempts=job.attempts + 1,
        started_at=now,
        worker=worker,
        lease_expires_at=expires,
        cancel_requested=False,
    )


# -- dependencies (``enqueue(after=...)``) -------------------------------------------
#
# The rules every store applies, in the same atomic step as the change that
# triggers them: at enqueue (``linked``), and when a parent finishes or is
# removed (``released``). The stores that cannot call Python there (Lua, SQL)
# spell the same rules out and name these functions.

#: The parent states that fail a child whose ``after_failure`` is ``"dead"``.
FAILED_PARENT = frozenset({JobState.DEAD, JobState.CANCELLED})


def dependency_error(child: JobRecord, parent_id: str, state: JobState, now: float) -> ErrorInfo:
    """The error a child gets when its parent ``parent_id`` ended in ``state``."""
    return ErrorInfo(
        kind=ErrorKind.DEPENDENCY,
        message=f"parent {parent_id} ended {state.value}, so this job did not run"
        " (enqueue it with after_failure='run' to run it anyway)",
        attempt=child.attempts,
        at=now,
    )


def released(
    child: JobRecord, parents: Mapping[str, JobRecord | None], now: float
) -> JobRecord | None:
    """``child`` (``waiting``) as its parents, read now, make it; ``None``: it keeps waiting.

    ``parents`` maps each of ``child.parents`` to its record (``None``: removed
    or purged, which counts as finished). The first parent, in the child's
    order, that ended dead or cancelled ends the child the same way (error of
    kind ``dependency``) unless ``after_failure`` is ``"run"``; once every parent
    finished, the child is ``queued``, or ``scheduled`` while its
    ``scheduled_at`` is ahead.
    """
    pending = False
    for parent_id in child.parents:
        parent = parents.get(parent_id)
        if parent is None:
            continue
        if parent.state in FAILED_PARENT and child.after_failure != "run":
            error = dependency_error(child, parent_id, parent.state, now)
            return replace(
                child, state=parent.state, errors=(*child.errors, error), finished_at=now
            )
        if parent.state not in TERMINAL_STATES:
            pending = True
    if pending:
        return None
    return replace(child, state=JobState.SCHEDULED if child.scheduled_at > now else JobState.QUEUED)


def linked(child: JobRecord, parents: Mapping[str, JobRecord | None], now: float) -> JobRecord:
    """``child`` as ``enqueue`` stores it, given its parents as stored: ``waiting``
    unless they are finished already (then as ``released`` makes it).

    Raises:
        UnknownParent: a parent is not stored, or not in the child's queue.
    """
    for parent_id in child.parents:
        parent = parents.get(parent_id)
        if parent is None or parent.queue != child.queue:
            raise UnknownParent(parent_id, child.id, child.queue)
    waiting = replace(child, state=JobState.WAITING)
    return released(waiting, parents, now) or waiting


def no_transactions(store: str) -> ConfigurationError:
    """The error of ``enqueue(connection=...)`` on a store that has no transactions."""
    return ConfigurationError(
        f"the {store} backend has no transactions: enqueue(connection=...) needs PostgreSQL"
    )


def lease_lapsed(job: JobRecord, now: float) -> bool:
    """Whether ``job`` is active under a lease that ran out by ``now`` (``recover`` takes it)."""
    return job.state is JobState.ACTIVE and (job.lease_expires_at or 0.0) <= now


def lost_error(job: JobRecord, now: float) -> ErrorInfo:
    """The error ``recover`` appends to ``job``, whose lease lapsed, at ``now``."""
    return ErrorInfo(
        kind=ErrorKind.LOST,
        message=f"lease held by worker {job.worker} lapsed before the attempt finished",
        attempt=job.attempts,
        at=now,
    )


def expires_at(job: JobRecord) -> float | None:
    """When a completed job's result expires (``None``: it does not, or not completed)."""
    if job.state is not JobState.COMPLETED or job.result_ttl is None:
        return None
    return (job.finished_at or 0.0) + job.result_ttl


def result_expired(job: JobRecord, now: float) -> bool:
    """Whether ``job`` is a completed job whose ``result_ttl`` has passed at ``now``.

    An expired job is gone for every reader, deleted or not yet.
    """
    expires = expires_at(job)
    return expires is not None and expires <= now


def holds_key(job: JobRecord, now: float) -> bool:
    """Whether ``job`` holds its idempotency key at ``now`` (see "Idempotency keys").

    A job holds it until it finishes; then, with a ``key_ttl``, for that
    long after ``finished_at`` whatever its state; without, a completed one
    for ``result_ttl`` more (for ever when ``None``) and a dead or cancelled
    one not at all.
    """
    if job.state in LIVE_STATES:
        return True
    if job.key_ttl is not None:
        return (job.finished_at or 0.0) + job.key_ttl > now
    return job.state is JobState.COMPLETED and not result_expired(job, now)


def key_held_until(job: JobRecord) -> float | None:
    """When a finished job with a ``key_ttl`` lets its key go (``None``: no ``key_ttl``)."""
    if job.key_ttl is None:
        return None
    return (job.finished_at or 0.0) + job.key_ttl


#: The states in which a debounced enqueue replaces the job holding its key.
PENDING_STATES = frozenset({JobState.SCHEDULED, JobState.QUEUED})


def is_pending(job: JobRecord) -> bool:
    """Whether ``enqueue(debounce=...)`` replaces ``job``: never claimed, not yet run.

    A job that is retrying (``failed``) was claimed already: a debounced
    enqueue stores a new job and takes the key over, as from a running one.
    So does a job a limit set aside (``held_by``), or one that booked its rate
    token (``rate_paid``): its place in the limit's order is its own.
    """
    return (
        job.state in PENDING_STATES
        and job.attempts == 0
        and job.held_by is None
        and not job.rate_paid
    )


def debounced(holder: JobRecord, newer: JobRecord, now: float) -> JobRecord:
    """``holder``, pending, as a debounced enqueue of ``newer`` leaves it at ``now``.

    It keeps its id, key and attempts; everything the producer chose comes
    from ``newer`` (payload, metadata, options, enqueue time), and it runs at
    ``newer.scheduled_at``.
    """
    return replace(
        as_enqueued(newer, now),
        id=holder.id,
        key=holder.key,
        attempts=holder.attempts,
        errors=holder.errors,
        debounce=None,
    )


def prunable(job: JobRecord, now: float, retention: Retention) -> bool:
    """Whether ``prune`` at ``now`` deletes ``job`` under ``retention``.

    A completed job with a ``result_ttl`` goes when it expires; any other
    finished job once it finished more than ``retention`` allows for its state.
    """
    if job.state not in TERMINAL_STATES:
        return False
    if job.state is JobState.COMPLETED and job.result_ttl is not None:
        return result_expired(job, now)
    keep = retention.keep_for(job.state)
    return keep is not None and job.finished_at is not None and job.finished_at < now - keep


# -- waiters -----------------------------------------------------------------------


class _JobWait:
    """One event for everyone waiting on a job, and how many they are."""

    __slots__ = ("count", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.count = 0


class Waiters:
    """Who in this process waits for a job to finish or for work, and waking them.

    A waiter registers, then checks the store, then awaits its event: a wake
    between the check and the wait is kept by the event, so none is lost.
    An event fires once; a waiter that loops registers again. Leaving the
    ``with`` block (also by cancellation) leaves nothing behind.
    """

    __slots__ = ("_jobs", "_work")

    def __init__(self) -> None:
        self._jobs: dict[str, _JobWait] = {}
        self._work: dict[str, set[anyio.Event]] = {}

    @contextmanager
    def job_waiter(self, job_id: str) -> Iterator[anyio.Event]:
        """An event set when ``wake_job(job_id)`` (or ``wake_all``) is called."""
        wait = self._jobs.get(job_id)
        if wait is None:
            wait = self._jobs[job_id] = _JobWait()
        wait.count += 1
        try:
            yield wait.event
        finally:
            wait.count -= 1
            if wait.count == 0 and self._jobs.get(job_id) is wait:
                del self._jobs[job_id]

    @contextmanager
    def work_waiter(self, queues: Iterable[str]) -> Iterator[anyio.Event]:
        """An event set when one of ``queues`` is woken (or every queue is)."""
        event = anyio.Event()
        names = tuple(dict.fromkeys(queues))
        for queue in names:
            self._work.setdefault(queue, set()).add(event)
        try:
            yield event
        finally:
            for queue in names:
                waiting = self._work.get(queue)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._work[queue]

    def wake_job(self, job_id: str) -> None:
        """Wake everyone waiting for ``job_id`` (it finished)."""
        wait = self._jobs.pop(job_id, None)
        if wait is not None:
            wait.event.set()

    def wake_jobs(self, job_ids: Iterable[str]) -> None:
        """``wake_job`` for each of ``job_ids`` (on the settle path: costs nothing when idle)."""
        jobs = self._jobs
        if not jobs:
            return
        for job_id in job_ids:
            wait = jobs.pop(job_id, None)
            if wait is not None:
                wait.event.set()

    def wake_queue(self, queue: str) -> None:
        """Wake everyone waiting for work in ``queue``."""
        waiting = self._work.pop(queue, None)
        if waiting is not None:
            for event in waiting:
                event.set()

    def wake_queues(self, queues: Iterable[str]) -> None:
        """``wake_queue`` for each of ``queues``."""
        for queue in queues:
            self.wake_queue(queue)

    def wake_work(self) -> None:
        """Wake everyone waiting for work, in any queue (when which queues is not known)."""
        waiting, self._work = self._work, {}
        for events in waiting.values():
            for event in events:
                event.set()

    def wake_all(self) -> None:
        """Wake every waiter, for jobs and for work (the backend closes)."""
        jobs, self._jobs = self._jobs, {}
        for wait in jobs.values():
            wait.event.set()
        self.wake_work()

    def __len__(self) -> int:
        """How many jobs and queues have waiters (for tests: nothing is left behind)."""
        return len(self._jobs) + len(self._work)


# -- URLs --------------------------------------------------------------------------

_MASK = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_AUTHORITY_END = re.compile(r"[/?#]")
# Query or keyword names whose value is a secret: password, passwd, pass,
# sslpassword, pwd, secret, token, and their prefixed forms (sentinel_password).
_SECRET_NAME = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)
# key=value words outside a URL (libpq's "host=h password=x" form).
_SECRET_WORD = re.compile(r"(?P<name>[\w.\-]+)\s*=\s*(?P<value>'(?:[^'\\]|\\.)*'|\S*)")


def mask_url(url: str) -> str:
    """``url`` with every password it carries replaced by ``***``; the rest as given.

    Masks the user info's password (``user:***@host``, also when the password
    holds unescaped ``/``, ``?`` or ``#``), and the value of every query
    option named like a secret (``password``, ``pass``, ``pwd``,
    ``sslpassword``, ``token``, ...), whatever the scheme. What is not a URL
    is masked conservatively: everything before an ``@``, and ``name=value``
    words named like a secret.
    """
    match = _SCHEME.match(url)
    if match is None:
        return _mask_words(url)
    start = match.end()
    rest = url[start:]
    end = _userinfo_end(rest)
    if end >= 0:
        user, colon, _ = rest[:end].partition(":")
        rest = f"{user}:{_MASK}{rest[end:]}" if colon else rest
    head, question, query = rest.partition("?")
    if question:
        rest = f"{head}?{_mask_query(query)}"
    return url[:start] + rest


def _userinfo_end(rest: str) -> int:
    """Where the user info of ``rest`` (a URL after ``scheme://``) ends: its ``@``, or -1.

    The authority ends at the first ``/``, ``?`` or ``#``, but a password may
    hold those unescaped; a query's values may hold an ``@`` but come after
    an ``=``. So: the last ``@`` before the first ``=``, or else the last
    ``@`` of the authority, whichever is later.
    """
    equals = rest.find("=")
    before_query = rest.rfind("@", 0, equals if equals >= 0 else len(rest))
    authority = _AUTHORITY_END.search(rest)
    in_authority = rest.rfind("@", 0, authority.start() if authority else len(rest))
    return max(before_query, in_authority)


def _mask_query(query: str) -> str:
    parts = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        if equals and _SECRET_NAME.search(unquote(name)):
            part = f"{name}={_MASK}"
        parts.append(part)
    return "&".join(parts)


def _mask_words(text: str) -> str:
    at = text.rfind("@")
    if at >= 0:
        text = f"{_MASK}{text[at:]}"

    def hide(found: re.Match[str]) -> str:
        if _SECRET_NAME.search(found["name"]):
            return f"{found['name']}={_MASK}"
        return found[0]

    return _SECRET_WORD.sub(hide, text)


# -- URL options -------------------------------------------------------------------

#: Converts one option's text from a URL's query; raises ``ValueError`` saying what it wants.
Converter: TypeAlias = Callable[[str], Any]


def seconds(value: str) -> float:
    """A finite number of seconds, 0 or more."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number >= 0):
        msg = f"must be a number of seconds >= 0, not {value!r}"
        raise ValueError(msg)
    return number


def optional_seconds(value: str) -> float | None:
    """``seconds``, or ``none`` (also ``forever``) for no limit."""
    if value.strip().lower() in ("none", "forever"):
        return None
    try:
        return seconds(value)
    except ValueError:
        msg = f"must be a number of seconds >= 0 or 'none', not {value!r}"
        raise ValueError(msg) from None


def optional_count(value: str) -> int | None:
    """A whole number >= 0, or ``none`` for no cap."""
    if value.strip().lower() == "none":
        return None
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        msg = f"must be a whole number >= 0 or 'none', not {value!r}"
        raise ValueError(msg)
    return count


def integer(value: str) -> int:
    """A whole number."""
    try:
        return int(value)
    except ValueError:
        msg = f"must be a whole number, not {value!r}"
        raise ValueError(msg) from None


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def flag(value: str) -> bool:
    """``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off`` (any case)."""
    lowered = value.strip().lower()
    if lowered in _TRUE or lowered in _FALSE:
        return lowered in _TRUE
    msg = f"must be true or false, not {value!r}"
    raise ValueError(msg)


def text(value: str) -> str:
    """The text as given (decoded from the URL)."""
    return value


#: The ``Retention`` options every store knows, by their URL and keyword names.
RETENTION_OPTIONS: Mapping[str, Converter] = {
    "retention_completed": optional_seconds,
    "retention_dead": optional_seconds,
    "retention_cancelled": optional_seconds,
    "retention_max_completed": optional_count,
    "retention_max_dead": optional_count,
    "retention_max_cancelled": optional_count,
    "retention_events": optional_seconds,
    "retention_max_events": optional_count,
}


def parse_url_options(
    url: str,
    known: Mapping[str, Converter],
    *,
    driver: Collection[str] | None = (),
) -> tuple[dict[str, Any], str]:
    """Read the options of ``url``'s query that a store knows, converted; and the URL without them.

    Args:
        url: the backend URL.
        known: the store's options: name -> converter (``seconds``,
            ``optional_seconds``, ``integer``, ``flag``, ``text``, or any
            callable raising ``ValueError``). A name given twice takes its
            last value.
        driver: names left in the URL for the driver to read (they are
            known too); ``None`` lets every other name through, for drivers
            that take settings of any name.

    Returns:
        The values of the ``known`` options found, and ``url`` with them
        taken out of its query (the rest of the URL as given).

    Raises:
        ConfigurationError: an option in neither ``known`` nor ``driver``
            (the message lists the known ones), or a value its converter
            refuses. The URL in the message is masked.
    """
    head, question, query = url.partition("?")
    if not question:
        return {}, url
    query, hash_, fragment = query.partition("#")
    values: dict[str, Any] = {}
    kept: list[str] = []
    for part in query.split("&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        name = unquote(raw_name.replace("+", " "))
        convert = known.get(name)
        if convert is None:
            if driver is not None and name not in driver:
                names = sorted({*known, *driver})
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                msg = (
                    f"unknown option {name!r} in the URL {mask_url(url)!r}: {hint}"
                    f"known are {', '.join(names)}"
                )
                raise ConfigurationError(msg)
            kept.append(part)
            continue
        try:
            values[name] = convert(unquote(raw_value.replace("+", " ")))
        except ValueError as exc:
            msg = f"option {name!r} in the URL {mask_url(url)!r} {exc}"
            raise ConfigurationError(msg) from None
    rest = head + (f"?{'&'.join(kept)}" if kept else "") + (f"#{fragment}" if hash_ else "")
    return values, rest


def pop_retention(options: dict[str, Any]) -> Retention:
    """Take the retention options out of ``options``; the ``Retention`` they make.

    ``options`` holds keyword arguments and URL options (converted) merged:
    ``retention=`` (a ``Retention``), then ``retention_completed``,
    ``retention_dead``, ``retention_cancelled`` and the caps
    ``retention_max_completed``, ``retention_max_dead``,
    ``retention_max_cancelled``, and ``retention_events``,
    ``retention_max_events`` over it. Unnamed settings keep
    ``Retention``'s defaults.

    Raises:
        ConfigurationError: ``retention`` is not a ``Retention``, or a setting is invalid.
    """
    base = options.pop("retention", None)
    if base is None:
        base = Retention()
    elif not isinstance(base, Retention):
        msg = f"retention= must be a Retention, not {type(base).__name__}"
        raise ConfigurationError(msg)
    given = {name: options.pop(name) for name in RETENTION_OPTIONS if name in options}
    if not given:
        return base
    return Retention(
        completed=given.get("retention_completed", base.completed),
        dead=given.get("retention_dead", base.dead),
        cancelled=given.get("retention_cancelled", base.cancelled),
        max_completed=given.get("retention_max_completed", base.max_completed),
        max_dead=given.get("retention_max_dead", base.max_dead),
        max_cancelled=given.get("retention_max_cancelled", base.max_cancelled),
        events=given.get("retention_events", base.events),
        max_events=given.get("retention_max_events", base.max_events),
    )
