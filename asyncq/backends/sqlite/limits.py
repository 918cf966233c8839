"""Flow control on SQLite: ``backends._limits`` applied inside the caller's transaction.

The counters are rows of ``asyncq_limits`` (a ``LimitState`` as MessagePack
per slot); a job set aside keeps state ``queued`` with ``held_by`` naming its
slot, which the ready index leaves out. Like the rest of ``sql``, every
function here runs under the write lock its caller took, so a read of a
counter and its update are one atomic step with the claim or the settle.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import msgspec

from ..._records import Gate, LimitState
from .._limits import Verdict, admit, released
from .poison import fetch

if TYPE_CHECKING:
    from ..._records import JobRecord

__all__ = ["admit_job", "free_gates", "free_slots", "states"]

_encode = msgspec.msgpack.Encoder().encode
_state = msgspec.msgpack.Decoder(LimitState)
_gates = msgspec.msgpack.Decoder(tuple[Gate, ...])


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
    """Whether ``job`` (queued, with limits) starts now; if not, set it aside or book it ahead."""
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
    conn.execute(
        "UPDATE asyncq_jobs SET state = 'scheduled', scheduled_at = ?, rate_paid = 1 WHERE id = ?",
        (verdict.until, job.id),
    )
    return False


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


def free_slots(conn: sqlite3.Connection, limits: bytes) -> bool:
    """``free_gates`` of a job's stored ``limits`` column."""
    return free_gates(conn, _gates.decode(limits))


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
