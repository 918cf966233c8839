"""The record codec of the Redis backend: job hashes, leases and script arguments.

Pure functions, no I/O. A job lives in a hash whose fields ``scripts``
lists; these turn such a hash (as the flat field/value list ``HGETALL``
answers) into a ``JobRecord``, a claim script's reply into ``Lease``\\ s,
outcomes into the settle scripts' arguments, and pack many arguments into
one string (and back) as the scripts' ``batch_args`` and ``notify`` expect.

A hash that does not decode (a field written by hand, see ``_poison``) costs
only its own job: ``leases`` hands out the others and names it as ``Spoilt``
for the backend to take aside; ``readable`` and ``records`` show it as a
stand-in to operator verbs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec
from msgspec.structs import replace

from ..._annotations import decode_json, decode_lines, meta_text
from ..._records import Breaker, ErrorInfo, Gate, JobRecord, JobState, Lease, Outcome
from .._poison import Unreadable, describe, read_all, stand_in, unreadable_error

__all__ = [
    "STORED",
    "Spoilt",
    "by_token_queue",
    "encode",
    "fields",
    "gates_text",
    "leases",
    "local_time",
    "meta_texts",
    "notice_job",
    "noticed",
    "opt_float",
    "pack",
    "readable",
    "record",
    "records",
    "settle_args",
    "token",
    "token_queue",
    "unpack",
]

#: what the enqueue script answers for a job it stored
STORED = {b"queued": JobState.QUEUED, b"scheduled": JobState.SCHEDULED}

#: a record as the hash keeps it (field ``d``): MessagePack, as enqueued
encode = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(JobRecord).decode
_encode_json = msgspec.json.Encoder().encode
_decode_errors = msgspec.json.Decoder(tuple[ErrorInfo, ...]).decode


def pack(args: Sequence[str | bytes | int]) -> bytes:
    """Many script arguments as one (the scripts' ``batch_args`` reads it back)."""
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b",".join(str(len(p)).encode() for p in parts) + b";" + b"".join(parts)


def unpack(packed: bytes) -> list[bytes]:
    """The strings ``pack`` (or the scripts' ``notify``) packed into one."""
    head, _, body = packed.partition(b";")
    out, pos = [], 0
    for size in map(int, head.split(b",")):
        out.append(body[pos : pos + size])
        pos += size
    return out


def notice_job(notice: bytes) -> str:
    """The id of the job a notice is about: the first packed string."""
    head, sep, body = notice.partition(b";")
    first = head.partition(b",")[0]
    if not sep or not first.isdigit():
        return notice.decode(errors="replace")  # a bare id
    return body[: int(first)].decode(errors="replace")


def noticed(notice: bytes) -> JobRecord | None:
    """The job a notice carries (see ``notify`` in ``prelude.lua``); ``None`` if none."""
    if b";" not in notice:
        return None
    packed = unpack(notice)
    if len(packed) < 2:
        return None
    return readable(packed[1:], packed[0].decode(errors="replace"), None)


def opt_float(raw: bytes | None) -> float | None:
    return None if raw is None else float(raw)


def _finite(raw: bytes) -> float:
    """A stored time or progress; ``nan`` and infinities are no such thing."""
    value = float(raw)
    if not math.isfinite(value):
        msg = f"not a finite number: {raw[:40]!r}"
        raise ValueError(msg)
    return value


def _opt_finite(raw: bytes | None) -> float | None:
    return None if raw is None else _finite(raw)


def fields(flat: list[bytes]) -> dict[bytes, bytes]:
    """A hash from the flat field/value list ``HGETALL`` answers."""
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def record(flat: list[bytes] | dict[bytes, bytes]) -> JobRecord:
    """The job a hash holds."""
    f = flat if isinstance(flat, dict) else fields(flat)
    errors = _decode_errors(b"[" + f[b"e"] + b"]") if b"e" in f else ()
    state = JobState(f[b"st"].decode())
    # An attempt that ends leaves its lease fields behind (see ``scripts``).
    leased = state is JobState.ACTIVE
    worker = f.get(b"w") if leased else None
    return replace(
        _decode_record(f[b"d"]),
        state=state,
        attempts=int(f[b"att"]),
        scheduled_at=_finite(f[b"sa"]),
        started_at=_opt_finite(f.get(b"sta")),
        finished_at=_opt_finite(f.get(b"fin")),
        lease_expires_at=_opt_finite(f.get(b"lx")) if leased else None,
        worker=None if worker is None else worker.decode(),
        result=f.get(b"r"),
        errors=errors,
        progress=_opt_finite(f.get(b"pr")),
        cancel_requested=f.get(b"c") == b"1",
        progress_detail=decode_json(f[b"pd"]) if b"pd" in f else None,
        logs=decode_lines(f.get(b"lg")),
        logs_dropped=int(f.get(b"ld", 0)),
        children=tuple(f[b"ch"].decode().split("\n")) if b"ch" in f else (),
        held_by=hb.decode() if (hb := f.get(b"hb")) is not None else None,
        rate_paid=f.get(b"rp") == b"1",
        # held until a time (see ``admit`` in prelude.lua); left behind on a job that ended
        held_until=_opt_finite(f.get(b"hu")) if state is JobState.QUEUED else None,
        hold=ho.decode() if state is JobState.QUEUED and (ho := f.get(b"ho")) else None,
    )


def gates_text(gates: Sequence[Gate], circuit: Breaker | None = None) -> str:
    """The hash field ``lim``: a job's limits and circuit as the scripts read them.

    One line per limit: name, key, concurrency, rate, per, burst, tab
    separated, '' for what is unset (names and keys hold no control
    character); then for a circuit, '!' and its name, failures, within and
    reset_after.
    """
    lines = (
        [
            "!"
            + "\t".join(
                (
                    circuit.name,
                    str(circuit.failures),
                    repr(circuit.within),
                    repr(circuit.reset_after),
                )
            )
        ]
        if circuit is not None
        else []
    )
    return "\n".join(
        [
            *lines,
            *(
                "\t".join(
                    (
                        gate.name,
                        gate.key or "",
                        "" if gate.concurrency is None else str(gate.concurrency),
                        "" if gate.rate is None else repr(gate.rate),
                        repr(gate.per),
                        repr(gate.burst),
                    )
                )
                for gate in gates
            ),
        ]
    )


def meta_texts(meta: dict[str, Any]) -> bytes:
    """The hash field ``mt``: each metadata value as the text ``list`` matches (JSON)."""
    return _encode_json({key: meta_text(value) for key, value in meta.items()})


def _stand_in(flat: list[bytes], job_id: str, queue: str | None, exc: Exception) -> JobRecord:
    """What operator verbs show for a hash that does not decode (``_poison.stand_in``)."""
    f = fields(flat) if len(flat) % 2 == 0 else {}
    try:
        state = JobState(f[b"st"].decode())
    except (KeyError, ValueError):
        state = JobState.DEAD
    bad = Unreadable(job_id, queue, pack(flat), describe(exc))
    shown = stand_in(bad, at=time.time(), state=state)
    try:
        # When it was taken aside, if that much reads: operators sort dead letters by it.
        return replace(shown, finished_at=_opt_finite(f.get(b"fin")))
    except ValueError:
        return shown


def readable(flat: list[bytes], job_id: str, queue: str | None) -> JobRecord:
    """The job a hash holds, or its stand-in when the hash does not decode."""
    try:
        return record(flat)
    except Exception as exc:  # noqa: BLE001 - a stored record must never fail the caller
        return _stand_in(flat, job_id, queue, exc)


def records(pairs: list[Any], queue: str) -> list[JobRecord]:
    """The jobs of a listing script's reply: id, then ``HGETALL``, per job.

    Decoded whole, or one by one (``_poison.read_all``) when one does not
    decode: that one is shown by its stand-in.
    """
    items = [(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)]
    good, bad = read_all(items, _record_of, lambda item: _identify(item, queue))
    if not bad:
        return good
    spoilt = {u.job_id for u in bad}
    out = []
    for job_id, flat in items:
        name = job_id.decode(errors="replace")
        out.append(readable(flat, name, queue) if name in spoilt else record(flat))
    return out


def _record_of(item: tuple[bytes, list[bytes]]) -> JobRecord:
    return record(item[1])


def _identify(item: tuple[bytes, list[bytes]], queue: str) -> tuple[str, str | None, bytes]:
    return item[0].decode(errors="replace"), queue, pack(item[1])


class Spoilt(NamedTuple):
    """A claimed job whose record does not decode: the backend takes it aside
    (the ``set_aside`` script) instead of handing out its lease."""

    job_id: str
    #: the lease token as stored (without the queue suffix)
    token: str
    #: the ``undecodable`` error (JSON, as stored)
    error: bytes
    #: whether the stored errors are unreadable themselves (the error replaces them)
    errors_unreadable: bool


_NONE_SPOILT: tuple[Spoilt, ...] = ()


def leases(reply: list[Any], worker: str, base: str) -> tuple[list[Lease], Sequence[Spoilt]]:
    """The leases in a claim script's reply (see ``claim_from`` in ``prelude.lua``),
    and the claimed jobs whose record does not decode.

    A loop over the reply as it came, not a typed row per job: this runs for
    every job a worker claims, and each row is read once, straight into its
    lease (``_lease``). Only when that fails are the rows from the failing
    one on read job by job, to find the records that do not decode.
    """
    now, expires = float(reply[0]), float(reply[1])
    out: list[Lease] = []
    try:
        for n, i in enumerate(range(3, len(reply), 6), 1):
            out.append(_lease(reply[i : i + 6], n, now, expires, worker, base))
    except Exception:  # noqa: BLE001 - one job's record: find which, below
        return _leases_apart(reply, out, now, expires, worker, base)
    return out, _NONE_SPOILT


def _lease(row: list[Any], n: int, now: float, expires: float, worker: str, base: str) -> Lease:
    """The lease of the ``n``-th job of a claim reply: its row is (id, record, attempts,
    due time, errors, progress)."""
    _, data, attempts, scheduled_at, errors, progress = row
    job = replace(
        _decode_record(data),
        state=JobState.ACTIVE,
        attempts=int(attempts),
        scheduled_at=float(scheduled_at),
        started_at=now,
        lease_expires_at=expires,
        worker=worker,
        errors=() if errors is None else _decode_errors(b"[" + errors + b"]"),
        progress=opt_float(progress),
    )
    # Each token ends with its queue, so settle() can route without a lookup.
    return Lease(job=job, token=f"{base}.{n}:{job.queue}", expires_at=expires)


def _leases_apart(
    reply: list[Any], good: list[Lease], now: float, expires: float, worker: str, base: str
) -> tuple[list[Lease], list[Spoilt]]:
    """``leases`` for a reply holding a record that does not decode: the rows before
    the first that failed are ``good`` (read already), the rest are read job by job."""
    rows = {n: reply[i : i + 6] for n, i in enumerate(range(3, len(reply), 6), 1) if n > len(good)}

    def read(n: int) -> Lease:
        return _lease(rows[n], n, now, expires, worker, base)

    def identify(n: int) -> tuple[str, str | None, bytes]:
        job_id, *values = rows[n]
        flat = [x for k, v in zip(_CLAIMED, values, strict=True) if v is not None for x in (k, v)]
        return job_id.decode(errors="replace"), None, pack(flat)

    rest, bad = read_all(list(rows), read, identify)
    good += rest
    numbers = {rows[n][0].decode(errors="replace"): n for n in rows}
    spoilt = []
    for item in bad:
        _, _, attempts, _, errors, _ = rows[numbers[item.job_id]]
        try:
            attempt = int(attempts)
        except (TypeError, ValueError):
            attempt = 0
        errors_unreadable = False
        if errors is not None:
            try:
                _decode_errors(b"[" + errors + b"]")
            except Exception:  # noqa: BLE001 - any failure: they cannot be kept
                errors_unreadable = True
        error = _encode_json(unreadable_error(item, attempt=attempt, at=now))
        spoilt.append(
            Spoilt(item.job_id, f"{base}.{numbers[item.job_id]}", error, errors_unreadable)
        )
    return good, spoilt


#: the hash fields a claim reply carries, in its order (after the id)
_CLAIMED = (b"d", b"att", b"sa", b"e", b"pr")


def local_time(server_time: bytes | str, server_now: bytes | str) -> float:
    """A time on the server's clock, as a ``time.monotonic()`` time of this process."""
    return float(server_time) + (time.monotonic() - float(server_now))


def by_token_queue(outcomes: Sequence[Outcome]) -> dict[str, list[int]]:
    """Positions of the outcomes by the queue their token names (forged tokens: none)."""
    by_queue: dict[str, list[int]] = {}
    for i, outcome in enumerate(outcomes):
        queue = token_queue(outcome.token)
        if queue is not None:
            by_queue.setdefault(queue, []).append(i)
    return by_queue


def settle_args(outcomes: Sequence[Outcome], indexes: list[int]) -> list[Any]:
    """The settle scripts' 7 arguments per outcome."""
    args: list[Any] = []
    for i in indexes:
        o = outcomes[i]
        args += (
            o.job_id,
            token(o.token),
            o.state.value,
            "0" if o.result is None else "1",
            o.result or b"",
            b"" if o.error is None else _encode_json(o.error),
            "" if o.retry_at is None else repr(float(o.retry_at)),
        )
    return args


def token(lease_token: str) -> str:
    """The part of a lease token the scripts store (without the queue suffix)."""
    return lease_token.partition(":")[0]


def token_queue(lease_token: str) -> str | None:
    """The queue a lease token names, or ``None`` for a token no claim made."""
    head, sep, queue = lease_token.partition(":")
    return queue if sep and head else None
