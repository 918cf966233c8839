"""The options of an enqueue: typed keyword sets, and EnqueueOptions that checks them once.

Each way of enqueueing takes its options as ``**options``, typed (PEP 692) by
one of these ``TypedDict`` classes, composed so that each option is declared
and documented once:

- ``EnqueueArgs``: ``Handler.enqueue`` and ``record``; ``Admin.enqueue`` and
  ``enqueue_json`` (and so ``asyncq enqueue``).
- ``EnqueueManyArgs``: ``Handler.enqueue_many``; no ``id`` nor ``key``, which
  name one job: those go per item, as ``(payload, ItemArgs)``.
- ``EnqueueAndWaitArgs``: ``Handler.enqueue_and_wait``; the job's deadline is
  ``job_timeout`` there, since its own ``timeout`` is how long the caller waits.

``EnqueueOptions.of`` turns a call's options into one ``EnqueueOptions``,
which checks them; ``Handler`` turns that and the job's defaults
(``JobOptions``) into a ``JobRecord``.

The rules for names (queues, jobs, idempotency keys, job ids) live here too: enqueue
options check them, and so does ``App`` when a job is registered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeAlias, TypedDict

import msgspec

from ._annotations import check_meta
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from ._flow import FlowNode
    from ._handler import JobHandle

#: A parent as ``after=`` takes it: a job's handle, a flow's node, or a job's id.
Parent: TypeAlias = "JobHandle[Any] | FlowNode[Any] | str"

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_NAME_LENGTH",
    "NO_OPTIONS",
    "AFTER_FAILURE",
    "EnqueueAndWaitArgs",
    "EnqueueArgs",
    "EnqueueManyArgs",
    "EnqueueOptions",
    "ItemArgs",
    "KeyArgs",
    "ScheduleArgs",
    "name_problem",
]


class ScheduleArgs(TypedDict, total=False):
    """The options every way of enqueueing takes; unset (or ``None``) means the job's own.

    Attributes:
        delay: run no sooner than this many seconds (or this ``timedelta``)
            from now; a delay in the past runs at once.
        at: run no sooner than this aware datetime (instead of ``delay``).
        priority: larger runs first; may be negative.
        queue: the queue to store the job in.
        max_attempts: attempts before the job is dead (1 means no retry).
    """

    delay: float | timedelta | None
    at: datetime | None
    priority: int | None
    queue: str | None
    max_attempts: int | None


class ItemArgs(TypedDict, total=False):
    """What names one job: its id, its idempotency key, its parents (per item of ``enqueue_many``).

    Attributes:
        id: the job's id, chosen by the caller (at most ``MAX_KEY_LENGTH``
            characters, no control characters). While a job with this id is
            stored, in any state, until it is purged or removed, enqueueing
            returns that job's handle instead and stores nothing
            (``handle.created`` is False). Unset: a fresh id.
        key: idempotency key: while a job with this key (in its queue) is
            pending, running, or completed within its result TTL, enqueueing
            returns that job's handle instead (``handle.created`` is False).
        key_ttl: with ``key``: seconds the key stays held after the job
            finishes (completed, dead or cancelled), whatever its result TTL:
            one run per key per period (a throttle). The result is kept at
            least as long. Removing or purging the job frees the key at once.
        debounce: with ``key``: seconds to wait for a newer enqueue. A job
            with this key still pending (scheduled or queued, never claimed)
            takes this enqueue's payload, metadata and options, and runs this
            many seconds from now; with none pending, a new job is stored,
            delayed by as much. Not with ``key_ttl``, ``delay`` or ``at``.
        meta: the job's metadata (``JobRecord.meta``): ``str`` keys and JSON
            values, at most ``MAX_META_KEYS`` keys and ``MAX_META_BYTES``
            as JSON; shown by ``job``/``jobs`` and filtered on by them.
        after: the job's parents: handles or ids of stored jobs of the same
            queue. The job is stored ``waiting`` and becomes ready once every
            parent completed (a parent already finished counts at once). A
            parent that is not stored raises ``UnknownParent``.
        after_failure: what a parent that ends dead or cancelled does to the
            job: ``"dead"`` (the default: the job ends as that parent did,
            with an error of kind ``dependency`` naming it) or ``"run"`` (the
            job runs once every parent finished, in any way).
    """

    id: str | None
    key: str | None
    key_ttl: float | None
    debounce: float | None
    meta: Mapping[str, Any] | None
    after: Sequence[Parent] | None
    after_failure: Literal["dead", "run"] | None


class KeyArgs(ItemArgs, total=False):
    """The options of the ways of enqueueing one job: ``id``, ``key`` and its
    ``key_ttl`` or ``debounce``, ``meta`` (see ``ItemArgs``)."""


class EnqueueManyArgs(ScheduleArgs, total=False):
    """The options of ``Handler.enqueue_many``: ``ScheduleArgs`` and the job's deadline.

    Attributes:
        timeout: seconds one attempt may run: the job's deadline, not the
            time a caller waits for the result.
    """

    timeout: float | None


class EnqueueArgs(EnqueueManyArgs, KeyArgs, total=False):
    """The options of ``Handler.enqueue``, ``record``, ``Admin.enqueue`` and ``enqueue_json``.

    Those of ``EnqueueManyArgs`` (``ScheduleArgs`` and ``timeout``), and ``id``
    and ``key`` (``KeyArgs``). Name it to pass options around typed::

        urgent: EnqueueArgs = {"priority": 10, "queue": "fast"}
        await charge.enqueue(payload, **urgent)
    """


class EnqueueAndWaitArgs(ScheduleArgs, KeyArgs, total=False):
    """The options of ``Handler.enqueue_and_wait``: ``ScheduleArgs``, ``id``, ``key``, the deadline.

    Attributes:
        job_timeout: seconds one attempt may run: the job's deadline (what
            ``timeout`` is on ``enqueue``); ``enqueue_and_wait``'s own
            ``timeout`` is how long the caller waits.
    """

    job_timeout: float | None


#: The longest queue or job name, in characters. Names are columns of the
#: stores' indexes: PostgreSQL refuses an index row over about 2,700 bytes, and
#: its ``(queue, key)`` index holds both, at up to 4 bytes a character (UTF-8):
#: 200 + 400 characters stay under it (2,400 bytes). Redis and SQLite have no
#: such limit.
MAX_NAME_LENGTH = 200

#: The longest idempotency key or caller-chosen job id, in characters (see
#: ``MAX_NAME_LENGTH``; an id alone is the jobs' primary key): room
#: for any id, hash or composite key; a longer natural key can be hashed.
MAX_KEY_LENGTH = 400

# Characters no name may hold: the C0 and C1 controls and DEL (NUL breaks
# PostgreSQL text, ESC starts terminal escape sequences, newlines fake table
# rows), the Unicode line and paragraph separators, and the bidirectional
# formatting characters that make a name display as another.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")


class EnqueueOptions(msgspec.Struct, frozen=True, kw_only=True):
    """The options of one enqueue, checked; ``None`` everywhere means the job's defaults.

    Built by ``of`` from a call's ``**options``; its fields are the keys of
    ``EnqueueArgs``, documented there.

    Raises:
        ConfigurationError: both ``delay`` and ``at``, a naive ``at``, a
            priority or ``max_attempts`` that is not an int, ``max_attempts``
            below 1, a ``timeout`` that is not positive, a queue, key or id
            that breaks the rules for names (see ``name_problem``), or a
            ``key_ttl`` or ``debounce`` that is not positive finite seconds,
            lacks a ``key``, or is given with an option it excludes.
    """

    delay: float | timedelta | None = None
    at: datetime | None = None
    priority: int | None = None
    key: str | None = None
    id: str | None = None
    queue: str | None = None
    timeout: float | None = None
    max_attempts: int | None = None
    meta: dict[str, Any] | None = None
    key_ttl: float | None = None
    debounce: float | None = None
    #: the parents' ids (``ItemArgs.after``, handles turned into ids by ``of``)
    after: tuple[str, ...] | None = None
    after_failure: str | None = None

    def __post_init__(self) -> None:
        # Each check is one comparison when the option is unset: enqueue is a hot path.
        if self.at is not None:
            if self.delay is not None:
                _invalid("give delay= or at=, not both")
            if self.at.tzinfo is None:
                _invalid("at= must be an aware datetime (with a tzinfo)")
        if self.priority is not None and not _is_int(self.priority):
            _invalid(f"priority must be an int, got {self.priority!r}")
        attempts = self.max_attempts
        if attempts is not None and (not _is_int(attempts) or attempts < 1):
            _invalid(f"max_attempts must be at least 1, got {attempts!r}")
        if self.timeout is not None and not self.timeout > 0:
            _invalid(f"timeout must be positive seconds or None, got {self.timeout}")
        if self.queue is not None and (problem := name_problem("queue", self.queue)):
            _invalid(problem)
        if self.key is not None and (problem := name_problem("key", self.key, MAX_KEY_LENGTH)):
            _invalid(problem)
        if self.id is not None and (problem := name_problem("id", self.id, MAX_KEY_LENGTH)):
            _invalid(problem)
        if self.key_ttl is not None or self.debounce is not None:
            self._check_key_options()
        if self.after is not None or self.after_failure is not None:
            _check_after(self.after, self.after_failure, self.id)
        if self.meta is not None:
            try:
                check_meta(self.meta)
            except ValueError as exc:
                _invalid(str(exc))

    def _check_key_options(self) -> None:
        """``key_ttl`` and ``debounce``: positive finite seconds, with a key, not together."""
        for option in ("key_ttl", "debounce"):
            value = getattr(self, option)
            if value is not None and not _positive_seconds(value):
                _invalid(f"{option} must be a positive finite number of seconds, got {value!r}")
        if self.key is None:
            given = "key_ttl" if self.key_ttl is not None else "debounce"
            _invalid(f"{given}= needs key=: it applies to the job holding that key")
        if self.debounce is not None:
            if self.key_ttl is not None:
                _invalid(
                    "give debounce= or key_ttl=, not both: debounce replaces a pending job, "
                    "key_ttl keeps a finished one's key"
                )
            if self.delay is not None or self.at is not None:
                _invalid("debounce= is the delay: give it without delay= or at=")
            if self.after:
                _invalid(
                    "give debounce= or after=, not both: a debounced job replaces a pending "
                    "one, and a job waiting for its parents is not pending"
                )

    @classmethod
    def of(
        cls, options: Mapping[str, Any], job: str, call: str = "Handler.enqueue"
    ) -> EnqueueOptions:
        """The options of one call to ``call`` on job ``job``: its ``**options``, checked.

        ``options`` holds keys of ``EnqueueArgs`` (the checker has seen to
        that for typed callers); no options at all is ``NO_OPTIONS``.

        Raises:
            ConfigurationError: an option is invalid (the message names the job).
            TypeError: an option that ``call`` does not take, as Python would say it.
        """
        if not options:
            return NO_OPTIONS  # the usual enqueue(payload): nothing to build or check
        try:
            if "after" in options:
                options = {**options, "after": _parent_ids(options["after"])}
            return cls(**options)
        except ConfigurationError as exc:
            msg = f"job {job!r}: {exc}"
            raise ConfigurationError(msg) from None
        except TypeError:
            unknown = sorted(options.keys() - _FIELDS)
            if not unknown:
                raise  # a value of the wrong type, met by a check above
            msg = f"{call}() got an unexpected keyword argument {unknown[0]!r}"
            raise TypeError(msg) from None


#: No overrides: what a plain ``enqueue(payload)`` uses, made once.
NO_OPTIONS = EnqueueOptions()

_FIELDS = frozenset(EnqueueOptions.__struct_fields__)


def name_problem(what: str, name: object, limit: int = MAX_NAME_LENGTH) -> str | None:
    """What breaks the rules for names in ``name``; ``None`` when nothing does.

    A name (``what``: "queue", "job name", "key", "id") is a non-empty ``str`` of at
    most ``limit`` characters holding no control character (see ``_CONTROL``).
    """
    if type(name) is str and name and len(name) <= limit and _CONTROL.search(name) is None:
        return None  # the usual case: one call, no message built
    if not isinstance(name, str):
        return f"{what} must be a str, got {type(name).__name__}"
    if not name:
        return f"{what} must be a non-empty name"
    if len(name) > limit:
        return f"{what} {name[:40]!r}... is {len(name):,} characters long; the limit is {limit}"
    found = _CONTROL.search(name)
    if found is None:
        return None  # a subclass of str
    return (
        f"{what} {name[:80]!r} holds the control character U+{ord(found.group()):04X}; "
        "names may not hold control characters"
    )


def _positive_seconds(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


#: The values of ``after_failure``.
AFTER_FAILURE = ("dead", "run")


def _parent_ids(after: object) -> tuple[str, ...] | None:
    """``after=`` as ids: a handle gives its ``id``; a lone str is refused (a common slip)."""
    if after is None:
        return None
    if isinstance(after, (str, bytes)) or not isinstance(after, Sequence | set | frozenset):
        _invalid(f"after= takes a list of handles or ids, got {type(after).__name__}")
    ids: list[str] = []
    for parent in after:
        parent_id = parent if isinstance(parent, str) else getattr(parent, "id", None)
        if not isinstance(parent_id, str):
            _invalid(f"after= takes handles or ids, got {type(parent).__name__}")
        ids.append(parent_id)
    return tuple(ids)


def _check_after(after: tuple[str, ...] | None, after_failure: str | None, own: str | None) -> None:
    if after_failure is not None and after_failure not in AFTER_FAILURE:
        _invalid(f'after_failure must be "dead" or "run", got {after_failure!r}')
    if after is None:
        return
    for parent in after:
        if problem := name_problem("parent id", parent, MAX_KEY_LENGTH):
            _invalid(f"after=: {problem}")
    if len(set(after)) != len(after):
        _invalid("after= names a parent twice")
    if own is not None and own in after:
        _invalid(f"job {own!r} cannot wait for itself (after=)")


def _is_int(value: object) -> bool:
    # bool is an int to Python, but priority=True is a mistake, not a priority.
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def _invalid(problem: str) -> NoReturn:
    raise ConfigurationError(problem)
