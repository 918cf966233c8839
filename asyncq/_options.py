"""EnqueueOptions: the per-enqueue overrides every way of enqueueing takes, checked in one place.

``Handler.enqueue``, ``enqueue_many``, ``enqueue_and_wait`` and ``record``
(and through them ``Admin.enqueue`` and ``asyncq enqueue``) take these as
keyword arguments and build one ``EnqueueOptions``; ``Handler`` turns it and
the job's defaults (``JobOptions``) into a ``JobRecord``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NoReturn

import msgspec

from .exceptions import ConfigurationError

__all__ = ["NO_OPTIONS", "EnqueueOptions"]


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
            below 1, a ``timeout`` that is not positive, or an empty queue name.
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
        if self.queue is not None and not self.queue:
            _invalid("queue must be a non-empty name")


#: No overrides: what a plain ``enqueue(payload)`` uses, made once.
NO_OPTIONS = EnqueueOptions()


def _is_int(value: object) -> bool:
    # bool is an int to Python, but priority=True is a mistake, not a priority.
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def _invalid(problem: str) -> NoReturn:
    raise ConfigurationError(problem)
