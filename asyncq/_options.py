"""EnqueueOptions: the per-enqueue overrides every way of enqueueing takes, checked in one place.

``Handler.enqueue``, ``enqueue_many``, ``enqueue_and_wait`` and ``record``
(and through them ``Admin.enqueue`` and ``asyncq enqueue``) take these as
keyword arguments and build one ``EnqueueOptions``; ``Handler`` turns it and
the job's defaults (``JobOptions``) into a ``JobRecord``.

The rules for names (queues, jobs, idempotency keys) live here too: enqueue
options check them, and so does ``App`` when a job is registered.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import NoReturn

import msgspec

from .exceptions import ConfigurationError

__all__ = ["MAX_KEY_LENGTH", "MAX_NAME_LENGTH", "NO_OPTIONS", "EnqueueOptions", "name_problem"]

#: The longest queue or job name, in characters. Names are columns of the
#: stores' indexes: PostgreSQL refuses an index row over about 2,700 bytes, and
#: its ``(queue, key)`` index holds both, at up to 4 bytes a character (UTF-8):
#: 200 + 400 characters stay under it (2,400 bytes). Redis and SQLite have no
#: such limit.
MAX_NAME_LENGTH = 200

#: The longest idempotency key, in characters (see ``MAX_NAME_LENGTH``): room
#: for any id, hash or composite key; a longer natural key can be hashed.
MAX_KEY_LENGTH = 400

# Characters no name may hold: the C0 and C1 controls and DEL (NUL breaks
# PostgreSQL text, ESC starts terminal escape sequences, newlines fake table
# rows), the Unicode line and paragraph separators, and the bidirectional
# formatting characters that make a name display as another.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")


class EnqueueOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Overrides for one enqueue; ``None`` everywhere means the job's defaults.

    Attributes:
        delay: run no sooner than this many seconds (or this ``timedelta``)
            from now; a delay in the past runs at once.
        at: run no sooner than this aware datetime (instead of ``delay``).
        priority: larger runs first; may be negative.
        key: idempotency key: while a job with this key (in its queue) is
            pending, running, or completed within its result TTL, enqueueing
            returns that job instead.
        queue: the queue to store the job in.
        timeout: seconds one attempt may run: the job's deadline, not the
            time a caller waits for the result.
        max_attempts: attempts before the job is dead (1 means no retry).

    Raises:
        ConfigurationError: both ``delay`` and ``at``, a naive ``at``, a
            priority or ``max_attempts`` that is not an int, ``max_attempts``
            below 1, a ``timeout`` that is not positive, or a queue or key
            that breaks the rules for names (see ``name_problem``).
    """

    delay: float | timedelta | None = None
    at: datetime | None = None
    priority: int | None = None
    key: str | None = None
    queue: str | None = None
    timeout: float | None = None
    max_attempts: int | None = None

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


#: No overrides: what a plain ``enqueue(payload)`` uses, made once.
NO_OPTIONS = EnqueueOptions()


def name_problem(what: str, name: object, limit: int = MAX_NAME_LENGTH) -> str | None:
    """What breaks the rules for names in ``name``; ``None`` when nothing does.

    A name (``what``: "queue", "job name", "key") is a non-empty ``str`` of at
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


def _is_int(value: object) -> bool:
    # bool is an int to Python, but priority=True is a mistake, not a priority.
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def _invalid(problem: str) -> NoReturn:
    raise ConfigurationError(problem)
