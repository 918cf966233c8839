"""Retry policies and failure classification: pure functions, no I/O."""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Literal, TypeAlias

from .exceptions import ConfigurationError

__all__ = ["FAILURE_CLASSES", "Classifier", "FailureClass", "RetryPolicy", "classifier", "seconds"]

#: What a failed attempt means: ``transient`` (retry per the policy),
#: ``permanent`` (dead letter now) or ``fatal`` (retry per the policy, and stop
#: the worker: the process itself is broken).
FailureClass: TypeAlias = Literal["transient", "permanent", "fatal"]
FAILURE_CLASSES: tuple[FailureClass, ...] = ("transient", "permanent", "fatal")

_KINDS = ("fixed", "linear", "exponential", "delays")
# Attempt numbers past this change no delay (every policy reached its cap long
# before) and would overflow the int-to-float conversions below.
_MAX_ATTEMPT = 2**53


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

    ``retry_on``, ``dead_on`` and ``fatal_on`` classify exceptions a handler
    raises: an exception matching ``dead_on`` goes to the dead letters at
    once; one matching ``retry_on`` is retried; one matching ``fatal_on`` is
    retried and stops the worker. When ``retry_on`` is given, an exception
    that no rule (nor the app's ``App.classify``) claims is not retried.

    Raises:
        ConfigurationError: a delay or the cap is negative or not finite, the
            factor is below 1, the schedule is empty, or ``retry_on`` /
            ``dead_on`` / ``fatal_on`` holds something that is not an
            exception class.
    """

    kind: Literal["fixed", "linear", "exponential", "delays"] = "exponential"
    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: bool = True
    schedule: tuple[float, ...] = ()
    retry_on: tuple[type[BaseException], ...] | None = None
    dead_on: tuple[type[BaseException], ...] = field(default=())
    fatal_on: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            msg = f"RetryPolicy kind must be one of {', '.join(_KINDS)}, got {self.kind!r}"
            raise ConfigurationError(msg)
        if self.kind == "delays" and not self.schedule:
            msg = "RetryPolicy.delays needs at least one delay"
            raise ConfigurationError(msg)
        named = [("base delay", self.base), ("cap", self.cap)]
        named += [("delay", d) for d in self.schedule]
        for what, value in named:
            if not (math.isfinite(value) and value >= 0):
                msg = f"RetryPolicy {what} must be a finite number of seconds >= 0, got {value!r}"
                raise ConfigurationError(msg)
        if not (math.isfinite(self.factor) and self.factor >= 1):
            msg = f"RetryPolicy factor must be a finite number >= 1, got {self.factor!r}"
            raise ConfigurationError(msg)
        # A list here would only fail later, inside isinstance() in a worker,
        # so normalise to a tuple now (a frozen dataclass needs object.__setattr__).
        if self.retry_on is not None:
            object.__setattr__(self, "retry_on", _exception_types("retry_on", self.retry_on))
        object.__setattr__(self, "dead_on", _exception_types("dead_on", self.dead_on))
        object.__setattr__(self, "fatal_on", _exception_types("fatal_on", self.fatal_on))

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
            raise ConfigurationError(msg)
        values = tuple(seconds(d) for d in schedule)
        return cls(kind="delays", schedule=values, cap=max(values), jitter=jitter)

    def classify(
        self,
        retry_on: tuple[type[BaseException], ...] | None = None,
        dead_on: tuple[type[BaseException], ...] = (),
        fatal_on: tuple[type[BaseException], ...] | None = None,
    ) -> RetryPolicy:
        """A copy of this policy with exception classification set.

        ``fatal_on`` left ``None`` keeps this policy's own.
        """
        fatal = self.fatal_on if fatal_on is None else fatal_on
        return replace(self, retry_on=retry_on, dead_on=dead_on, fatal_on=fatal)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        n = min(max(1, attempt), _MAX_ATTEMPT)
        if self.kind == "fixed":
            raw = self.base
        elif self.kind == "linear":
            raw = self.base * n
        elif self.kind == "delays":
            raw = self.schedule[min(n, len(self.schedule)) - 1]
        else:
            try:
                raw = self.base * self.factor ** (n - 1)
            except OverflowError:  # far past any cap (but a zero base stays zero)
                raw = math.inf if self.base > 0 else 0.0
        capped = min(raw, self.cap)
        if self.jitter:
            return (rng or random).uniform(0.0, capped)
        return capped

    def retryable(self, exc: BaseException) -> bool:
        """Whether an exception raised by a handler is worth another attempt."""
        if self.dead_on and isinstance(exc, self.dead_on):
            return False
        return self.retry_on is None or isinstance(exc, self.retry_on)

    def failure_class(self, exc: BaseException) -> FailureClass | None:
        """The class this policy's own rules give ``exc``, or ``None`` when none applies.

        ``dead_on`` first (permanent), then ``retry_on`` (transient), then
        ``fatal_on`` (fatal). The app's classifiers decide what is left, then
        ``default_class``.
        """
        if self.dead_on and isinstance(exc, self.dead_on):
            return "permanent"
        if self.retry_on is not None and isinstance(exc, self.retry_on):
            return "transient"
        if self.fatal_on and isinstance(exc, self.fatal_on):
            return "fatal"
        return None

    @property
    def default_class(self) -> FailureClass:
        """The class of an exception no rule claims: permanent when ``retry_on`` is given."""
        return "transient" if self.retry_on is None else "permanent"


def _exception_types(what: str, value: object) -> tuple[type[BaseException], ...]:
    """``value`` as a tuple of exception classes: a single class or any iterable of them."""
    items: Iterable[object] = (value,)
    if isinstance(value, Iterable) and not isinstance(value, (type, str)):
        items = value
    checked: list[type[BaseException]] = []
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            msg = f"RetryPolicy {what} must hold exception classes, got {item!r}"
            raise ConfigurationError(msg)
        checked.append(item)
    return tuple(checked)


class Classifier:
    """One ``App.classify`` rule: which exceptions it matches, and their class."""

    __slots__ = ("failure_class", "match", "what")

    def __init__(
        self, match: Callable[[BaseException], bool], failure_class: FailureClass, what: str
    ) -> None:
        self.match = match
        self.failure_class: FailureClass = failure_class
        #: names the rule in logs: the exception types or the predicate
        self.what = what

    def __repr__(self) -> str:
        return f"Classifier({self.what}, {self.failure_class!r})"


def classifier(
    match: type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool],
    failure_class: FailureClass,
) -> Classifier:
    """The ``App.classify`` rule for ``match`` (exception classes or a predicate).

    Raises:
        ConfigurationError: ``failure_class`` is not one of the three, or
            ``match`` is neither exception classes nor a callable.
    """
    if failure_class not in FAILURE_CLASSES:
        msg = (
            f"failure class must be one of {', '.join(map(repr, FAILURE_CLASSES))}, "
            f"got {failure_class!r}"
        )
        raise ConfigurationError(msg)
    types = match if isinstance(match, tuple) else (match,)
    if all(inspect.isclass(t) and issubclass(t, BaseException) for t in types) and types:
        exc_types: tuple[type[BaseException], ...] = types  # type: ignore[assignment]
        what = ", ".join(t.__qualname__ for t in exc_types)

        def matches(exc: BaseException) -> bool:
            return isinstance(exc, exc_types)

        return Classifier(matches, failure_class, what)
    if isinstance(match, tuple) or inspect.isclass(match) or not callable(match):
        msg = (
            "classify() takes an exception class, a tuple of them, or a predicate "
            f"taking the exception; got {match!r}"
        )
        raise ConfigurationError(msg)
    what = getattr(match, "__qualname__", repr(match))
    return Classifier(match, failure_class, what)
