"""RetryPolicy: delays, caps, jitter bounds, and exception classification."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncq import ConfigurationError, Reject, Retry, RetryPolicy
from asyncq._retry import seconds

HUGE = 10**400  # larger than any float: int-to-float conversion of it overflows


def no_jitter(policy: RetryPolicy) -> list[float]:
    return [policy.delay(n) for n in range(1, 8)]


def test_fixed_is_the_same_every_time() -> None:
    assert no_jitter(RetryPolicy.fixed(2.5)) == [2.5] * 7


def test_linear_grows_by_one_step_up_to_the_cap() -> None:
    assert no_jitter(RetryPolicy.linear(2, cap=9)) == [2, 4, 6, 8, 9, 9, 9]


def test_exponential_multiplies_by_the_factor_up_to_the_cap() -> None:
    policy = RetryPolicy.exponential(0.5, factor=3, cap=20, jitter=False)
    assert no_jitter(policy) == [0.5, 1.5, 4.5, 13.5, 20, 20, 20]


def test_delays_follow_the_schedule_then_repeat_the_last() -> None:
    assert no_jitter(RetryPolicy.delays([1, 5, 30])) == [1, 5, 30, 30, 30, 30, 30]


def test_default_policy_is_exponential_from_one_second_with_jitter() -> None:
    policy = RetryPolicy()
    assert (policy.kind, policy.base, policy.factor, policy.cap, policy.jitter) == (
        "exponential",
        1.0,
        2.0,
        300.0,
        True,
    )


@pytest.mark.parametrize("attempt", [0, -1, -(10**9)])
def test_attempts_below_one_count_as_the_first(attempt: int) -> None:
    policy = RetryPolicy.exponential(3, jitter=False)
    assert policy.delay(attempt) == policy.delay(1) == 3


def test_timedelta_inputs_become_seconds() -> None:
    assert RetryPolicy.fixed(timedelta(milliseconds=250)).delay(1) == 0.25
    linear = RetryPolicy.linear(timedelta(seconds=1), cap=timedelta(seconds=2.5))
    assert no_jitter(linear)[:4] == [1, 2, 2.5, 2.5]
    exponential = RetryPolicy.exponential(timedelta(seconds=1), cap=timedelta(minutes=1))
    assert (exponential.base, exponential.cap) == (1.0, 60.0)
    delays = RetryPolicy.delays([timedelta(seconds=1), 2, timedelta(minutes=1)])
    assert no_jitter(delays)[:4] == [1, 2, 60, 60]
    assert seconds(timedelta(hours=1)) == 3600.0
    assert seconds(7) == 7.0


@pytest.mark.parametrize(
    "policy",
    [
        RetryPolicy.fixed(4),
        RetryPolicy.linear(1.5, cap=100),
        RetryPolicy.exponential(1, cap=100, jitter=False),
        RetryPolicy.exponential(1e300, factor=1e10, cap=100, jitter=False),
        RetryPolicy.exponential(1, factor=1.0, cap=100, jitter=False),
        RetryPolicy.delays([1, 2, 3]),
    ],
    ids=["fixed", "linear", "exponential", "exponential-huge-base", "factor-one", "delays"],
)
@pytest.mark.parametrize("attempt", [1_000, 2**64, HUGE])
def test_huge_attempt_numbers_do_not_overflow(policy: RetryPolicy, attempt: int) -> None:
    delay = policy.delay(attempt)
    assert math.isfinite(delay)
    assert 0 <= delay <= policy.cap
    assert delay == policy.delay(attempt - 1)  # long past growing


def test_huge_attempts_reach_the_cap_and_a_zero_base_stays_zero() -> None:
    assert RetryPolicy.linear(1, cap=50).delay(HUGE) == 50
    assert RetryPolicy.exponential(1, cap=50, jitter=False).delay(HUGE) == 50
    assert RetryPolicy.exponential(0, cap=50, jitter=False).delay(HUGE) == 0
    assert RetryPolicy.exponential(2, factor=1, cap=50, jitter=False).delay(HUGE) == 2


def test_jitter_draws_between_zero_and_the_computed_delay() -> None:
    policy = RetryPolicy.exponential(1, cap=10, jitter=True)
    rng = random.Random(1234)
    draws = [policy.delay(3, rng) for _ in range(2_000)]
    assert all(0 <= d <= 4 for d in draws)
    # Full jitter spreads over the whole range, not a band around the delay.
    assert min(draws) < 0.4
    assert max(draws) > 3.6


def test_jitter_with_a_seeded_rng_is_reproducible() -> None:
    policy = RetryPolicy.fixed(10, jitter=True)
    first = [policy.delay(1, random.Random(7)) for _ in range(3)]
    assert first == [policy.delay(1, random.Random(7))] * 3


class Transient(Exception):
    pass


class TransientSubclass(Transient):
    pass


class Fatal(Exception):
    pass


def test_everything_is_retryable_by_default() -> None:
    policy = RetryPolicy()
    assert policy.retryable(ValueError())
    assert policy.retryable(Fatal())


def test_retry_on_limits_retries_to_matching_exceptions() -> None:
    policy = RetryPolicy().classify(retry_on=(Transient, OSError))
    assert policy.retryable(Transient())
    assert policy.retryable(TransientSubclass())
    assert policy.retryable(ConnectionResetError())  # an OSError
    assert not policy.retryable(Fatal())
    assert not policy.retryable(ValueError())


def test_dead_on_wins_over_retry_on() -> None:
    policy = RetryPolicy().classify(retry_on=(Exception,), dead_on=(Fatal, TransientSubclass))
    assert not policy.retryable(Fatal())
    assert not policy.retryable(TransientSubclass())
    assert policy.retryable(Transient())


def test_empty_retry_on_retries_nothing() -> None:
    assert not RetryPolicy().classify(retry_on=()).retryable(Transient())


def test_classify_keeps_the_delays_and_leaves_the_original_alone() -> None:
    original = RetryPolicy.linear(2, cap=7)
    classified = original.classify(retry_on=(Transient,), dead_on=(Fatal,))
    assert no_jitter(classified) == no_jitter(original)
    assert (classified.retry_on, classified.dead_on) == ((Transient,), (Fatal,))
    assert (original.retry_on, original.dead_on) == (None, ())


def test_classification_accepts_lists_and_single_classes() -> None:
    # A list would otherwise only fail inside isinstance(), in a worker.
    policy = RetryPolicy(retry_on=[Transient, OSError], dead_on=Fatal)  # type: ignore[arg-type]
    assert policy.retry_on == (Transient, OSError)
    assert policy.dead_on == (Fatal,)
    assert not policy.retryable(Fatal())


@pytest.mark.parametrize("bad", [[Transient, "OSError"], ["Transient"], "Transient", 3, [int]])
def test_classification_rejects_what_is_not_an_exception_class(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="exception classes"):
        RetryPolicy().classify(retry_on=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="exception classes"):
        RetryPolicy().classify(dead_on=bad)  # type: ignore[arg-type]


def test_signals_are_ordinary_exceptions_to_the_policy() -> None:
    # Retry and Reject are handled before classification; retryable() stays pure.
    policy = RetryPolicy().classify(dead_on=(Reject,))
    assert not policy.retryable(Reject())
    assert policy.retryable(Retry())


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: RetryPolicy.fixed(-1), "base delay"),
        (lambda: RetryPolicy.fixed(math.nan), "base delay"),
        (lambda: RetryPolicy.fixed(math.inf), "base delay"),
        (lambda: RetryPolicy.fixed(timedelta(seconds=-1)), "base delay"),
        (lambda: RetryPolicy.linear(1, cap=-5), "cap"),
        (lambda: RetryPolicy.exponential(1, cap=math.inf), "cap"),
        (lambda: RetryPolicy.exponential(1, factor=0.5), "factor"),
        (lambda: RetryPolicy.exponential(1, factor=-2), "factor"),
        (lambda: RetryPolicy.exponential(1, factor=math.nan), "factor"),
        (lambda: RetryPolicy.delays([]), "at least one delay"),
        (lambda: RetryPolicy.delays([1, -1]), "delay"),
        (lambda: RetryPolicy(kind="delays"), "at least one delay"),
        (lambda: RetryPolicy(kind="bogus"), "kind"),  # type: ignore[arg-type]
    ],
)
def test_invalid_policies_are_configuration_errors(build: Callable[[], object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        build()


def test_policies_are_frozen_and_hashable() -> None:
    policy = RetryPolicy.fixed(1).classify(retry_on=(Transient,))
    with pytest.raises(AttributeError):
        policy.base = 2  # type: ignore[misc]
    assert hash(policy) == hash(RetryPolicy.fixed(1).classify(retry_on=(Transient,)))


# -- properties ------------------------------------------------------------------------

delays_s = st.floats(min_value=0, max_value=1e6, allow_nan=False)
attempts = st.one_of(st.integers(min_value=1, max_value=10_000), st.integers(min_value=1))


@st.composite
def policies(draw: st.DrawFn, jitter: bool | None = None) -> RetryPolicy:
    kind = draw(st.sampled_from(["fixed", "linear", "exponential", "delays"]))
    with_jitter = draw(st.booleans()) if jitter is None else jitter
    if kind == "fixed":
        return RetryPolicy.fixed(draw(delays_s), jitter=with_jitter)
    if kind == "linear":
        return RetryPolicy.linear(draw(delays_s), cap=draw(delays_s), jitter=with_jitter)
    if kind == "exponential":
        factor = draw(st.floats(min_value=1, max_value=100))
        return RetryPolicy.exponential(
            draw(delays_s), factor=factor, cap=draw(delays_s), jitter=with_jitter
        )
    schedule = draw(st.lists(delays_s, min_size=1, max_size=8))
    return RetryPolicy.delays(schedule, jitter=with_jitter)


@given(policy=policies(), attempt=attempts, seed=st.integers())
def test_every_delay_is_between_zero_and_the_cap(
    policy: RetryPolicy, attempt: int, seed: int
) -> None:
    delay = policy.delay(attempt, random.Random(seed))
    assert 0 <= delay <= policy.cap


@given(policy=policies(jitter=False), attempt=attempts)
def test_without_jitter_delays_never_shrink(policy: RetryPolicy, attempt: int) -> None:
    if policy.kind == "delays":  # an explicit schedule may go down on purpose
        return
    assert policy.delay(attempt) <= policy.delay(attempt + 1)


@given(policy=policies(jitter=True), attempt=attempts, seed=st.integers())
def test_jitter_never_exceeds_the_delay_without_it(
    policy: RetryPolicy, attempt: int, seed: int
) -> None:
    plain = RetryPolicy(
        kind=policy.kind,
        base=policy.base,
        factor=policy.factor,
        cap=policy.cap,
        jitter=False,
        schedule=policy.schedule,
    )
    assert 0 <= policy.delay(attempt, random.Random(seed)) <= plain.delay(attempt)


@given(
    base=st.floats(min_value=1e-3, max_value=1e3),
    factor=st.floats(min_value=1, max_value=10),
    cap=st.floats(min_value=0, max_value=1e4),
    attempt=st.integers(min_value=1, max_value=200),
)
def test_exponential_matches_its_formula(
    base: float, factor: float, cap: float, attempt: int
) -> None:
    policy = RetryPolicy.exponential(base, factor=factor, cap=cap, jitter=False)
    try:
        expected = min(base * factor ** (attempt - 1), cap)
    except OverflowError:
        expected = cap
    assert policy.delay(attempt) == expected


@given(schedule=st.lists(delays_s, min_size=1, max_size=8), attempt=attempts)
def test_delays_index_the_schedule_and_then_repeat_the_last(
    schedule: list[float], attempt: int
) -> None:
    expected = schedule[min(attempt, len(schedule)) - 1]
    assert RetryPolicy.delays(schedule).delay(attempt) == expected
