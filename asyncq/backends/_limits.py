"""The flow-control rule every store applies when it claims a job that has limits.

A job's limits are checked at claim, against one counter
per slot (``LimitState``), in the same atomic step as the claim:

- **concurrency**: ``running`` counts the slot's jobs that are ``active``. A
  job whose slot is full is not claimed: it stays ``queued``, set aside with
  ``held_by`` naming the slot, out of the claim order, so the jobs behind it
  keep flowing. When a job of the slot leaves ``active`` (settled, handed
  back, recovered), in that same step ``running`` drops and the first job
  set aside on the slot (claim order) goes back to the claim order.
- **rate**: a token bucket of ``burst`` tokens refilled at ``rate / per``
  tokens a second. A start takes a token. A job that finds the bucket short
  books the next token ahead (the bucket goes below zero) and is held until
  the moment it is due (``held_until``, ``hold`` naming the counter,
  ``rate_paid`` set; ``scheduled_at`` the same time), so a backlog is spread
  over time once, not looked at again per claim. It stays ``queued``: each
  store keeps it out of the claim order until then as it keeps a scheduled
  job (a due time), and reports it queued.

- **circuit**: a ``CircuitState`` per circuit. Closed, jobs start. Open, a
  job is held (queued, ``held_until``) until ``opened_at + reset_after``; the first claimed
  after that runs alone as the probe (half open) while the others wait one
  ``reset_after`` more. When a job with a circuit leaves ``active``
  (``circuit_ended``), its outcome counts: a failure (not a ``Retry`` asked
  for, nor a hand-back) among ``failures`` within ``within`` seconds opens the
  circuit, a ``circuit_open`` failure opens it at once, and the probe's
  success closes it (its failure opens it again).

Memory and SQLite apply these functions inside their critical section; Redis
(``lua/limits.lua``) and PostgreSQL (``sql.py``) spell the same rule in their
own language, naming the function here they mirror.
"""

from __future__ import annotations

import msgspec
from msgspec.structs import replace

from .._records import Breaker, CircuitState, Gate, JobState, LimitState

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "HOLD_BUDGET",
    "OPEN",
    "Verdict",
    "admit",
    "available",
    "circuit_admit",
    "circuit_hold",
    "circuit_ended",
    "forced",
    "fresh_state",
    "idle",
    "rate_hold",
    "released",
]

#: How many limited jobs one claim may set aside or book ahead before it stops
#: looking further (it returns what it has; the next claim goes on).
HOLD_BUDGET = 256


def fresh_state(gate: Gate) -> LimitState:
    """A slot's counter before its first start: no job running, a full bucket."""
    return LimitState(
        slot=gate.slot,
        name=gate.name,
        key=gate.key,
        concurrency=gate.concurrency,
        rate=gate.rate,
        per=gate.per,
        burst=gate.burst,
        tokens=gate.burst,
    )


def available(state: LimitState, now: float) -> float:
    """The tokens in the bucket at ``now``: what it held, refilled, capped at ``burst``."""
    if state.rate is None:
        return state.tokens
    refill = max(0.0, now - state.refilled_at) * state.rate / state.per
    return min(state.burst, state.tokens + refill)


class Verdict(msgspec.Struct, frozen=True):
    """What ``admit`` decided for one job.

    ``start``: claim it. Otherwise ``held_by`` (a full concurrency slot: set
    it aside) or ``until`` (its rate token is booked for then: hold it until
    then, ``hold`` naming the counter that waits longest).
    ``states`` are the counters to write back, changed or not.
    """

    start: bool
    states: dict[str, LimitState]
    held_by: str | None = None
    until: float | None = None
    hold: str | None = None


def admit(
    gates: tuple[Gate, ...], states: dict[str, LimitState], now: float, *, paid: bool
) -> Verdict:
    """Decide whether a job with ``gates`` starts at ``now``, given its slots' counters.

    ``states`` holds the counter of each slot seen so far (others start
    fresh); the verdict's are the new ones. Concurrency is checked first, so a
    job set aside never books a token it cannot use yet; a job that
    ``paid`` for its start already (booked while held) takes no token again.
    """
    new = dict(states)
    for gate in gates:
        state = new.get(gate.slot) or fresh_state(gate)
        # the numbers of the job being claimed are the limit's numbers now
        state = replace(
            state, concurrency=gate.concurrency, rate=gate.rate, per=gate.per, burst=gate.burst
        )
        new[gate.slot] = state
        if gate.concurrency is not None and state.running >= gate.concurrency:
            return Verdict(start=False, states=states, held_by=gate.slot)
    if not paid:
        rated = [gate for gate in gates if gate.rate is not None]
        tokens = {gate.slot: available(new[gate.slot], now) for gate in rated}
        short = [gate for gate in rated if tokens[gate.slot] < 1.0]
        for gate in rated:
            new[gate.slot] = replace(
                new[gate.slot], tokens=tokens[gate.slot] - 1.0, refilled_at=now
            )
        if short:
            # The start is booked on every rate of the job (at the latest of
            # their due times), so one booking is enough however many it has.
            wait, slot = max(
                ((1.0 - tokens[g.slot]) * g.per / (g.rate or 1.0), g.slot) for g in short
            )
            return Verdict(start=False, states=new, until=now + wait, hold=rate_hold(slot))
    for gate in gates:
        if gate.concurrency is not None:
            state = new[gate.slot]
            new[gate.slot] = replace(state, running=state.running + 1)
    return Verdict(start=True, states=new)


def rate_hold(slot: str) -> str:
    """``JobRecord.hold`` of a job held until the token it booked on counter ``slot``."""
    return f"rate:{slot}"


def circuit_hold(name: str) -> str:
    """``JobRecord.hold`` of a job held until circuit ``name`` lets it start."""
    return f"circuit:{name}"


def idle(state: LimitState, now: float) -> bool:
    """Whether a keyed counter may go: no job of it running, its bucket full at ``now``.

    It is then what a fresh counter (``fresh_state``) would be, so a store may
    forget it (``prune``; Redis lets its key expire) and make it again for the
    next job of that key: the counters of keys seen once do not pile up. A
    counter with no key stays, for ``asyncq limits`` to show.
    """
    return (
        state.key is not None
        and state.running <= 0
        and (state.rate is None or available(state, now) >= state.burst)
    )


def released(state: LimitState) -> LimitState:
    """The counter after one of its running jobs left ``active``."""
    return replace(state, running=max(0, state.running - 1))


CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
#: Error kinds that are no sign of the service behind a circuit failing.
_NOT_COUNTED = frozenset({"retry", "cancelled", "lost", "unknown_job", "decode", "undecodable"})


def _defined(state: CircuitState | None, breaker: Breaker) -> CircuitState:
    return replace(
        state or CircuitState(name=breaker.name),
        threshold=breaker.failures,
        within=breaker.within,
        reset_after=breaker.reset_after,
    )


def circuit_admit(
    state: CircuitState | None, breaker: Breaker, job_id: str, now: float
) -> tuple[CircuitState, float | None]:
    """The circuit after a claim looked at job ``job_id``, and ``None`` (it may start)
    or the time it is held until (queued, no attempt used)."""
    st = _defined(state, breaker)
    if st.state == CLOSED:
        return st, None
    if st.state == OPEN:
        reopen = (st.opened_at if st.opened_at is not None else now) + breaker.reset_after
        if now < reopen:
            return st, reopen
        return replace(st, state=HALF_OPEN, probe=job_id), None
    if st.probe is None or st.probe == job_id:
        return replace(st, probe=job_id), None
    return st, now + breaker.reset_after


def circuit_ended(
    state: CircuitState | None,
    breaker: Breaker,
    job_id: str,
    outcome: JobState,
    kind: str | None,
    now: float,
) -> CircuitState:
    """The circuit after job ``job_id`` left ``active`` as ``outcome`` (error ``kind``)."""
    st = _defined(state, breaker)
    probe = st.probe == job_id
    if kind == "circuit_open":
        return replace(st, state=OPEN, opened_at=now, probe=None, failures=())
    if outcome is JobState.COMPLETED:
        if st.state == HALF_OPEN and probe:
            return replace(st, state=CLOSED, opened_at=None, probe=None, failures=())
        return st
    if outcome in (JobState.FAILED, JobState.DEAD) and kind not in _NOT_COUNTED:
        if st.state == HALF_OPEN and probe:
            return replace(st, state=OPEN, opened_at=now, probe=None)
        if st.state == CLOSED:
            recent = (*(t for t in st.failures if t > now - breaker.within), now)
            recent = recent[-breaker.failures :]
            if len(recent) >= breaker.failures:
                return replace(st, state=OPEN, opened_at=now, probe=None, failures=())
            return replace(st, failures=recent)
        return st
    return replace(st, probe=None) if probe else st


def forced(state: CircuitState | None, name: str, *, open_: bool, now: float) -> CircuitState:
    """The circuit as an operator sets it: open now, or closed with no failures counted."""
    st = state or CircuitState(name=name)
    if open_:
        return replace(st, state=OPEN, opened_at=now, probe=None, failures=())
    return replace(st, state=CLOSED, opened_at=None, probe=None, failures=())
