"""The record codec of the Redis backend: job hashes, leases and script arguments.

Pure functions, no I/O. A job lives in a hash whose fields ``scripts``
lists; these turn such a hash (as the flat field/value list ``HGETALL``
answers) into a ``JobRecord``, a claim script's reply into ``Lease``\\ s,
outcomes into the settle scripts' arguments, and pack many arguments into
one string (and back) as the scripts' ``batch_args`` and ``notify`` expect.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec
from msgspec.structs import replace

from ..._records import ErrorInfo, JobRecord, JobState, Lease, Outcome

__all__ = [
    "STORED",
    "by_token_queue",
    "encode",
    "fields",
    "leases",
    "local_time",
    "notice_job",
    "noticed",
    "opt_float",
    "pack",
    "record",
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
    return record(packed[1:]) if len(packed) > 1 else None


def opt_float(raw: bytes | None) -> float | None:
    return None if raw is None else float(raw)


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
        scheduled_at=float(f[b"sa"]),
        started_at=opt_float(f.get(b"sta")),
        finished_at=opt_float(f.get(b"fin")),
        lease_expires_at=opt_float(f.get(b"lx")) if leased else None,
        worker=None if worker is None else worker.decode(),
        result=f.get(b"r"),
        errors=errors,
        progress=opt_float(f.get(b"pr")),
        cancel_requested=f.get(b"c") == b"1",
    )


def leases(reply: list[Any], worker: str, base: str) -> list[Lease]:
    """The leases in a claim script's reply (see ``claim_from`` in ``prelude.lua``).

    A loop over the reply as it came, not a typed row per job: this runs for
    every job a worker claims, and each row is read once, straight into its
    lease.
    """
    now, expires = float(reply[0]), float(reply[1])
    out = []
    for n, i in enumerate(range(3, len(reply), 5), 1):
        data, attempts, scheduled_at, errors, progress = reply[i : i + 5]
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
        out.append(Lease(job=job, token=f"{base}.{n}:{job.queue}", expires_at=expires))
    return out


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
