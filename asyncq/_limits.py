"""Flow control declared on the app: limits shared by jobs (``app.limit``).

A ``Limit`` is a declaration: its numbers travel with each job it is
attached to (as a ``Gate`` in ``JobRecord.limits``), and the store applies
them when it claims the job (``asyncq.backends._limits``). So the limit
holds across every worker of every host, and a held-back job uses no attempt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ._options import MAX_KEY_LENGTH, name_problem
from ._records import Breaker, Gate, JobRecord, JobState
from .exceptions import ConfigurationError, ValidationError

__all__ = ["Circuit", "Limit", "why_held"]


class Limit:
    """A limit on when jobs start, shared by every job it is attached to.

    Made by ``app.limit(...)`` and attached with ``@app.job(..., limits=[limit])``.

    Attributes:
        name: the limit's name (the operator's handle in ``asyncq limits``).
        rate: at most this many starts per ``per`` seconds (``None``: no rate).
        per: the rate's period in seconds.
        concurrency: at most this many jobs running at once (``None``: no cap).
        burst: how many starts may go at once after an idle spell (the token
            bucket's size); 1 spaces starts evenly.
        key: a function of the payload naming the counter a job uses: the
            limit then holds per value (``None``: one counter).
    """

    __slots__ = ("burst", "concurrency", "key", "name", "per", "rate")

    def __init__(
        self,
        name: str,
        *,
        rate: float | None = None,
        per: float = 1.0,
        concurrency: int | None = None,
        burst: float = 1.0,
        key: Callable[[Any], object] | None = None,
    ) -> None:
        problem = name_problem("limit name", name)
        if problem is not None:
            raise ConfigurationError(problem)
        if rate is None and concurrency is None:
            msg = f"limit {name!r} needs rate=, concurrency= or both"
            raise ConfigurationError(msg)
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            msg = f"limit {name!r}: rate must be a positive number of starts, got {rate!r}"
            raise ConfigurationError(msg)
        if not (math.isfinite(per) and per > 0):
            msg = f"limit {name!r}: per must be positive seconds, got {per!r}"
            raise ConfigurationError(msg)
        if concurrency is not None and (type(concurrency) is not int or concurrency < 1):
            msg = f"limit {name!r}: concurrency must be an int of at least 1, got {concurrency!r}"
            raise ConfigurationError(msg)
        if not (math.isfinite(burst) and burst >= 1):
            msg = f"limit {name!r}: burst must be at least 1 start, got {burst!r}"
            raise ConfigurationError(msg)
        self.name = name
        self.rate = None if rate is None else float(rate)
        self.per = float(per)
        self.concurrency = concurrency
        self.burst = float(burst)
        self.key = key

    def __repr__(self) -> str:
        shown = [f"{self.name!r}"]
        if self.rate is not None:
            shown.append(f"rate={self.rate:g}, per={self.per:g}")
        if self.concurrency is not None:
            shown.append(f"concurrency={self.concurrency}")
        if self.key is not None:
            shown.append("keyed")
        return f"Limit({', '.join(shown)})"

    def gate(self, payload: object, job: str) -> Gate:
        """The gate a job with ``payload`` passes: this limit, keyed by the payload if keyed.

        Raises:
            ValidationError: the key function failed, or gave an empty or too long key.
        """
        key: str | None = None
        if self.key is not None:
            try:
                value = self.key(payload)
            except Exception as exc:
                detail = (
                    f"the key of limit {self.name!r} could not be computed from the payload"
                    f" ({type(exc).__name__}: {exc}); fix the payload or the key function"
                )
                raise ValidationError(job, detail) from exc
            key = str(value)
            if not key or len(key) > MAX_KEY_LENGTH:
                detail = (
                    f"the key of limit {self.name!r} must be 1 to {MAX_KEY_LENGTH}"
                    f" characters, got {key[:80]!r}"
                )
                raise ValidationError(job, detail)
        return Gate(
            name=self.name,
            key=key,
            concurrency=self.concurrency,
            rate=self.rate,
            per=self.per,
            burst=self.burst,
        )


class Circuit:
    """A circuit breaker shared by the jobs that call one service.

    Made by ``app.circuit(...)`` and attached with ``@app.job(..., circuit=circuit)``.
    After ``failures`` failed attempts within ``within`` seconds (or one
    ``raise CircuitOpen(...)``), the circuit opens: its jobs wait, unclaimed and
    without using attempts, for ``reset_after`` seconds; then one job runs as a
    probe, whose success closes the circuit and whose failure opens it again.
    The state is in the store, shared by every worker.
    """

    __slots__ = ("failures", "name", "reset_after", "within")

    def __init__(
        self, name: str, *, failures: int = 5, within: float = 60.0, reset_after: float = 30.0
    ) -> None:
        problem = name_problem("circuit name", name)
        if problem is not None:
            raise ConfigurationError(problem)
        if type(failures) is not int or failures < 1:
            msg = f"circuit {name!r}: failures must be an int of at least 1, got {failures!r}"
            raise ConfigurationError(msg)
        for what, value in (("within", within), ("reset_after", reset_after)):
            if not (math.isfinite(value) and value > 0):
                msg = f"circuit {name!r}: {what} must be positive seconds, got {value!r}"
                raise ConfigurationError(msg)
        self.name = name
        self.failures = failures
        self.within = float(within)
        self.reset_after = float(reset_after)

    def __repr__(self) -> str:
        return (
            f"Circuit({self.name!r}, failures={self.failures}, within={self.within:g},"
            f" reset_after={self.reset_after:g})"
        )

    @property
    def breaker(self) -> Breaker:
        """The breaker stored with each job behind this circuit."""
        return Breaker(self.name, self.failures, self.within, self.reset_after)


def why_held(job: JobRecord) -> str | None:
    """What holds a queued job back, in words for operators; ``None`` when nothing does.

    ``held_until`` says until when for a rate limit or a circuit; a job set
    aside on a full limit waits for one of that limit's running jobs to end.
    """
    if job.state is not JobState.QUEUED:
        return None
    if job.held_by is not None:
        return f"limit {job.held_by} is full: it starts when one of its running jobs ends"
    if job.held_until is None:
        return None
    kind, _, name = (job.hold or "").partition(":")
    if kind == "rate":
        return f"rate limit {name}: it starts at the time it booked"
    if kind == "circuit":
        return f"circuit {name} is open: it starts when the circuit lets it"
    return "its limits: it starts at the time they set"
