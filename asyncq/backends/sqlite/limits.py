"""Flow control on SQLite: ``backends._limits`` applied inside the caller's transaction.

The counters are rows of ``asyncq_limits`` (a ``LimitState`` as MessagePack
per slot); a job set aside keeps state ``queued`` with ``held_by`` naming its
slot, which the ready index leaves out; a job held until a time is kept as a
scheduled job, with ``held_until`` (``schema._HOLDS``). Like the rest of
``sql``, every function here runs under the write lock its caller took, so a
read of a counter and its update are one atomic step with the claim or the
settle.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import msgspec

from ..._records import Breaker, CircuitState, Gate, JobState, LimitState
from .._limits import (
    Verdict,
    admit,
    circuit_admit,
    circuit_ended,
    circuit_hold,
    forced,
    idle,
    released,
)
from .poison import fetch

if TYPE_CHECKING:
    from ..._records import JobRecord

__all__ = [
    "admit_job",
    "circuit_states",
    "ended",
    "free_gates",
    "job_ended",
    "prune_idle",
    "set_circuit",
    "states",
]

_encode = msgspec.msgpack.Encoder().encode
_state = msgspec.msgpack.Decoder(LimitState)
_gates = msgspec.msgpack.Decoder(tuple[Gate, ...])
_breaker = msgspec.msgpack.Decoder(Breaker)
_circuit = msgspec.msgpack.Decoder(CircuitState)


def _load_circuit(conn: sqlite3.Connection, name: str) -> CircuitState | None:
    row = conn.execute("SELECT state FROM asyncq_circuits WHERE name = ?", (name,)).fetchone()
    return None if row is None else _circuit.decode(row[0])


def _save_circuit(conn: sqlite3.Connection, state: CircuitState) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO asyncq_circuits (name, state) VALUES (?, ?)",
        (state.name, _encode(state)),
    )


def _load(conn: sqlite3.Connection, slots: list[str]) -> dict[str, LimitState]:
    marks = ", ".join("?" * len(slots))
    rows = conn.execute(
        f"SELECT slot, state FROM asyncq_limits WHERE slot IN ({marks})", tuple(slots)
    ).fetchall()
    return {slot: _state.decode(blob) for slot, blob in rows}


def _save(conn: sqlite3.Connection, verdict: Verdict) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO asyncq_limits (slot, state) VALUES (?, ?)",
        [(slot, _encode(state)) for slot, state in verdict.states.items()],
    )


def admit_job(conn: sqlite3.Connection, now: float, job: JobRecord) -> bool:
    """Whether ``job`` (queued, with limits or a circuit) starts now; if not, hold it."""
    if job.circuit is not None:
        circuit, until = circuit_admit(
            _load_circuit(conn, job.circuit.name), job.circuit, job.id, now
        )
        _save_circuit(conn, circuit)
        if until is not None:
            _hold(conn, job.id, until, circuit_hold(job.circuit.name), paid=job.rate_paid)
            return False
        if not job.limits:
            return True
    current = _load(conn, [gate.slot for gate in job.limits])
    verdict = admit(job.limits, current, now, paid=job.rate_paid)
    _save(conn, verdict)
    if verdict.start:
        conn.execute("UPDATE asyncq_jobs SET held_by = NULL, rate_paid = 0 WHERE id = ?", (job.id,))
        return True
    if verdict.held_by is not None:
        conn.execute("UPDATE asyncq_jobs SET held_by = ? WHERE id = ?", (verdict.held_by, job.id))
        # Its other slots may have room it was let out to use: pass it on.
        for gate in job.limits:
            state = verdict.states.get(gate.slot)
            if (
                gate.slot != verdict.held_by
                and state is not None
                and state.concurrency is not None
                and state.running < state.concurrency
            ):
                _let_out(conn, gate.slot)
        return False
    assert verdict.until is not None
    _hold(conn, job.id, verdict.until, verdict.hold, paid=True)
    return False


def _hold(
    conn: sqlite3.Connection, job_id: str, until: float, hold: str | None, *, paid: bool
) -> None:
    """Hold a job until ``until``: queued, kept as a scheduled job is (``schema._HOLDS``)."""
    conn.execute(
        "UPDATE asyncq_jobs SET state = 'scheduled', scheduled_at = ?, held_until = ?, hold = ?,"
        " rate_paid = ? WHERE id = ?",
        (until, until, hold, int(paid), job_id),
    )


def _let_out(conn: sqlite3.Connection, slot: str) -> bool:
    """Put the first job set aside on ``slot`` back in the claim order; whether there was one."""
    cursor = conn.execute(
        "UPDATE asyncq_jobs SET held_by = NULL WHERE id = ("
        " SELECT id FROM asyncq_jobs WHERE held_by = ? AND state = 'queued'"
        " ORDER BY priority DESC, scheduled_at, id LIMIT 1)",
        (slot,),
    )
    return cursor.rowcount > 0


def free_gates(conn: sqlite3.Connection, gates: tuple[Gate, ...]) -> bool:
    """A job with ``gates`` left ``active``: free its slots, let one job out of each.

    Returns whether a job went back to the claim order.
    """
    slots = [gate.slot for gate in gates if gate.concurrency is not None]
    if not slots:
        return False
    current = _load(conn, slots)
    conn.executemany(
        "UPDATE asyncq_limits SET state = ? WHERE slot = ?",
        [(_encode(released(state)), slot) for slot, state in current.items()],
    )
    let_out = False
    for slot in slots:
        let_out = _let_out(conn, slot) or let_out
    return let_out


def job_ended(
    conn: sqlite3.Connection, now: float, job: JobRecord, outcome: JobState, kind: str | None
) -> bool:
    """A job with limits or a circuit left ``active`` as ``outcome``: free its slots, count
    its end on its circuit. Returns whether a job went back to the claim order."""
    if job.circuit is not None:
        name = job.circuit.name
        _save_circuit(
            conn,
            circuit_ended(_load_circuit(conn, name), job.circuit, job.id, outcome, kind, now),
        )
    return free_gates(conn, job.limits)


def ended(
    conn: sqlite3.Connection,
    now: float,
    job_id: str,
    gates: bytes | None,
    breaker: bytes | None,
    outcome: JobState,
    kind: str | None,
) -> bool:
    """``job_ended`` from a job's stored ``limits`` and ``circuit`` columns.

    Columns that do not decode (written by hand while the job ran) count for
    nothing: the settle of the job goes on.
    """
    try:
        circuit = None if breaker is None else _breaker.decode(breaker)
        gated = () if gates is None else _gates.decode(gates)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    if circuit is not None:
        _save_circuit(
            conn,
            circuit_ended(_load_circuit(conn, circuit.name), circuit, job_id, outcome, kind, now),
        )
    return free_gates(conn, gated)


def circuit_states(conn: sqlite3.Connection, now: float) -> list[CircuitState]:
    rows = fetch(conn, "SELECT state FROM asyncq_circuits ORDER BY name", ())
    return [_circuit.decode(blob) for (blob,) in rows]


def set_circuit(conn: sqlite3.Connection, now: float, name: str, open_: bool) -> list[CircuitState]:
    state = forced(_load_circuit(conn, name), name, open_=open_, now=now)
    _save_circuit(conn, state)
    return [state]


def states(conn: sqlite3.Connection, now: float) -> list[LimitState]:
    """Every counter, sorted by slot, with how many jobs are set aside on it now."""
    held = dict(
        fetch(
            conn,
            "SELECT held_by, count(*) FROM asyncq_jobs"
            " WHERE held_by IS NOT NULL AND state = 'queued' GROUP BY held_by",
            (),
        )
    )
    rows = fetch(conn, "SELECT slot, state FROM asyncq_limits ORDER BY slot", ())
    return [
        msgspec.structs.replace(_state.decode(blob), held=held.get(slot, 0)) for slot, blob in rows
    ]


def prune_idle(
    conn: sqlite3.Connection, now: float, after: str, batch: int
) -> tuple[int, str | None]:
    """Delete the idle keyed counters (``_limits.idle``) among the ``batch`` after slot ``after``.

    Returns how many went, and the slot to go on after (``None``: the last
    was read). A counter a queued job is set aside on stays.
    """
    rows = conn.execute(
        "SELECT slot, state FROM asyncq_limits WHERE slot > ? ORDER BY slot LIMIT ?",
        (after, batch),
    ).fetchall()
    doomed = []
    for slot, blob in rows:
        try:
            state = _state.decode(blob)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # written by hand: left to its writer
        if idle(state, now):
            doomed.append((slot,))
    deleted = 0
    if doomed:
        deleted = conn.executemany(
            "DELETE FROM asyncq_limits WHERE slot = ? AND NOT EXISTS ("
            " SELECT 1 FROM asyncq_jobs WHERE held_by = asyncq_limits.slot AND state = 'queued')",
            doomed,
        ).rowcount
    return deleted, (rows[-1][0] if len(rows) >= batch else None)
