"""``Retention``: what ``prune`` keeps, the same settings on every store.

``over_cap`` is the count rule written once for stores that hold records in
Python (the memory backend); SQL and Lua that decide the same thing name it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .._records import JobRecord, JobState
from ..exceptions import ConfigurationError

__all__ = ["Retention", "over_cap"]

_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Retention:
    """How long ``prune`` keeps finished jobs: seconds after ``finished_at``, ``None`` for ever.

    Every store takes these settings with the same names, units and defaults,
    as ``retention=Retention(...)`` or as the options ``retention_completed``,
    ``retention_dead`` and ``retention_cancelled`` (keywords, or in the URL's
    query: a number of seconds, or ``none``).

    Attributes:
        completed: completed jobs without a ``result_ttl``. A job with one is
            deleted when it passes, whatever this says: retention never
            shortens nor extends what the producer asked for.
        dead: dead jobs (the dead letters).
        cancelled: cancelled jobs.
        max_completed: completed jobs each queue keeps at most (``None``: no
            cap, the default); ``prune`` deletes the oldest by ``finished_at``
            beyond it, alongside the age rules (options
            ``retention_max_completed``, ...).
        max_dead: dead jobs each queue keeps at most.
        max_cancelled: cancelled jobs each queue keeps at most.
        events: seconds the job events (``read_events``) are kept after
            they were written (option ``retention_events``; default 1 day).
        max_events: events each queue keeps at most (``None``: no cap, the
            default; option ``retention_max_events``).

    Raises:
        ConfigurationError: a setting is negative, not finite, or not a number
            (a cap: not a whole number).
    """

    completed: float | None = _DAY
    dead: float | None = 14 * _DAY
    cancelled: float | None = 14 * _DAY
    max_completed: int | None = None
    max_dead: int | None = None
    max_cancelled: int | None = None
    events: float | None = _DAY
    max_events: int | None = None

    def __post_init__(self) -> None:
        counts: tuple[tuple[str, object], ...] = (
            ("max_completed", self.max_completed),
            ("max_dead", self.max_dead),
            ("max_cancelled", self.max_cancelled),
            ("max_events", self.max_events),
        )
        for name, value in counts:
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                msg = f"Retention {name} must be a whole number >= 0 or None, got {value!r}"
                raise ConfigurationError(msg)
        settings: tuple[tuple[str, object], ...] = (
            ("completed", self.completed),
            ("dead", self.dead),
            ("cancelled", self.cancelled),
            ("events", self.events),
        )
        for name, value in settings:
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value >= 0)
            ):
                msg = (
                    f"Retention {name} must be a finite number of seconds >= 0 or None,"
                    f" got {value!r}"
                )
                raise ConfigurationError(msg)

    def keep_for(self, state: JobState) -> float | None:
        """Seconds a job finished in ``state`` is kept; ``None``: for ever (or not finished)."""
        if state is JobState.COMPLETED:
            return self.completed
        if state is JobState.DEAD:
            return self.dead
        if state is JobState.CANCELLED:
            return self.cancelled
        return None

    def keep_most(self, state: JobState) -> int | None:
        """Jobs finished in ``state`` a queue keeps at most; ``None``: no cap (or not finished)."""
        if state is JobState.COMPLETED:
            return self.max_completed
        if state is JobState.DEAD:
            return self.max_dead
        if state is JobState.CANCELLED:
            return self.max_cancelled
        return None

    @property
    def capped(self) -> tuple[tuple[JobState, int], ...]:
        """The finished states with a count cap, and their caps."""
        caps = (
            (JobState.COMPLETED, self.max_completed),
            (JobState.DEAD, self.max_dead),
            (JobState.CANCELLED, self.max_cancelled),
        )
        return tuple((state, most) for state, most in caps if most is not None)


def over_cap(jobs: Iterable[JobRecord], retention: Retention) -> list[JobRecord]:
    """The finished jobs among ``jobs`` beyond their state's count cap in their queue.

    Per queue and capped state, the newest ``cap`` jobs (by ``finished_at``,
    then id) stay; the rest are returned, oldest first.
    """
    caps = dict(retention.capped)
    if not caps:
        return []
    groups: dict[tuple[str, JobState], list[JobRecord]] = {}
    for job in jobs:
        if job.state in caps:
            groups.setdefault((job.queue, job.state), []).append(job)
    doomed: list[JobRecord] = []
    for (_, state), group in groups.items():
        excess = len(group) - caps[state]
        if excess > 0:
            group.sort(key=lambda job: (job.finished_at or 0.0, job.id))
            doomed += group[:excess]
    return doomed
