"""Retry policies and failure classification: pure functions, no I/O."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

__all__ = ["RetryPolicy", "seconds"]


def seconds(value: float | timedelta) -> float:
    """A delay as float seconds, from a number or a ``timedelta``."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait before the next attempt, and which errors are worth one.

    Build one with ``fixed``, ``linear``, ``exponential`` (the default) or
    ``delays``. With ``jitter`` (full jitter), the delay is drawn uniformly
    between 0 and the computed value, so many jobs failing together do not
    retry together. Every delay is capped at ``cap`` seconds.

    ``retry_on`` and ``dead_on`` classify exceptions a handler raises: an
    exception matching ``dead_on`` goes to the dead letters at once; when
    ``retry_on`` is given, only exceptions matching it are retried.
    """

    kind: Literal["fixed", "linear", "exponential", "delays"] = "exponential"
    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: bool = True
    schedule: tuple[float, ...] = ()
    retry_on: tuple[type[BaseException], ...] | None = None
    dead_on: tuple[type[BaseException], ...] = field(default=())

    @classmethod
    def fixed(cls, delay: float | timedelta, *, jitter: bool = False) -> RetryPolicy:
        """The same delay before every retry."""
        return cls(kind="fixed", base=seconds(delay), cap=seconds(delay), jitter=jitter)

    @classmethod
    def linear(
        cls, step: float | timedelta, *, cap: float | timedelta = 300.0, jitter: bool = False
    ) -> RetryPolicy:
        """``step``, ``2 * step``, ``3 * step``, ... up to ``cap``."""
        return cls(kind="linear", base=seconds(step), cap=seconds(cap), jitter=jitter)

    @classmethod
    def exponential(
        cls,
        base: float | timedelta = 1.0,
        *,
        factor: float = 2.0,
        cap: float | timedelta = 300.0,
        jitter: bool = True,
    ) -> RetryPolicy:
        """``base``, ``base * factor``, ``base * factor**2``, ... up to ``cap``."""
        return cls(
            kind="exponential", base=seconds(base), factor=factor, cap=seconds(cap), jitter=jitter
        )

    @classmethod
    def delays(cls, schedule: Sequence[float | timedelta], *, jitter: bool = False) -> RetryPolicy:
        """Explicit delays; the last one repeats once the list runs out."""
        if not schedule:
            msg = "RetryPolicy.delays needs at least one delay"
            raise ValueError(msg)
        values = tuple(seconds(d) for d in schedule)
        return cls(kind="delays", schedule=values, cap=max(values), jitter=jitter)

    def classify(
        self,
        retry_on: tuple[type[BaseException], ...] | None = None,
        dead_on: tuple[type[BaseException], ...] = (),
    ) -> RetryPolicy:
        """A copy of this policy with exception classification set."""
        return RetryPolicy(
            kind=self.kind,
            base=self.base,
            factor=self.factor,
            cap=self.cap,
            jitter=self.jitter,
            schedule=self.schedule,
            retry_on=retry_on,
            dead_on=dead_on,
        )

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        n = max(1, attempt)
        if self.kind == "fixed":
            raw = self.base
        elif self.kind == "linear":
            raw = self.base * n
        elif self.kind == "delays":
            raw = self.schedule[min(n, len(self.schedule)) - 1]
        else:
            try:
                raw = self.base * self.factor ** (n - 1)
            except OverflowError:  # far past any cap
                raw = self.cap
        capped = min(raw, self.cap)
        if self.jitter:
            return (rng or random).uniform(0.0, capped)
        return capped

    def retryable(self, exc: BaseException) -> bool:
        """Whether an exception raised by a handler is worth another attempt."""
        if self.dead_on and isinstance(exc, self.dead_on):
            return False
        return self.retry_on is None or isinstance(exc, self.retry_on)
