"""Poison isolation: a stored record that cannot be read costs only its own job.

A store reads records in batches (a claim, a page of ``list_jobs``). One
record that does not decode (a garbage field written by hand, a bug in
another writer, a half-restored backup) must never fail the batch: the
healthy jobs beside it run, and the bad one is taken aside as a dead letter
of kind ``undecodable`` with what could be read of it (its id, its queue if
known, the raw bytes in hex and the decoding error), so an operator can find
it, look at it and purge it.

The rules every store shares live here:

- ``read_all`` decodes a batch; a batch that decodes whole costs nothing
  more than the plain loop (no call or ``try`` per record on the happy
  path), and one that fails is read again record by record to find the bad
  ones.
- ``unreadable_error`` is the error a store appends when it takes a job aside.
- ``stand_in`` is what operator verbs (``get``, ``list_jobs``) show in place
  of a record they cannot read: a dead job named ``<unreadable>`` carrying
  that error, instead of an exception that hides every other job.

How a store takes the job aside atomically is its own business (one
statement, one script, one transaction); it must change nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

from .._records import ErrorInfo, ErrorKind, JobRecord, JobState

__all__ = [
    "RAW_SHOWN",
    "UNREADABLE_NAME",
    "Unreadable",
    "describe",
    "read_all",
    "stand_in",
    "unreadable_error",
]

#: The name operator verbs show for a job whose record cannot be read.
UNREADABLE_NAME = "<unreadable>"
#: At most this many raw bytes are kept (in hex) with the error: enough to
#: recognise the record, bounded so that a huge garbage value stays small.
RAW_SHOWN = 2048
#: The ``ErrorInfo.type`` of the error a store appends to an unreadable job.
ERROR_TYPE = "UnreadableRecord"

_Item = TypeVar("_Item")
_Read = TypeVar("_Read")


class Unreadable(NamedTuple):
    """What could be read of a stored record that did not decode."""

    job_id: str
    #: the queue the record was found in, when the store knows it without decoding
    queue: str | None
    #: the stored bytes (or their text form) as found
    raw: bytes
    #: the decoding error, one line
    reason: str


def describe(exc: BaseException) -> str:
    """One line naming the error: ``ValidationError: Expected `int`, got `str` - at `$[3]```."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text[:500]


def read_all(
    items: Sequence[_Item],
    read: Callable[[_Item], _Read],
    identify: Callable[[_Item], tuple[str, str | None, bytes]],
) -> tuple[list[_Read], list[Unreadable]]:
    """Decode every item; return the decoded ones and what could not be read.

    ``read`` decodes one stored item (a row, a reply); ``identify`` tells,
    without decoding, its job id, its queue if known, and its raw bytes. The
    batch is first decoded as a whole; only when that fails is it read again
    item by item, so the common case pays nothing for the isolation.
    ``identify`` itself must not fail: a store that cannot even tell a
    record's id has no job to take aside and should skip the item.
    """
    try:
        return [read(item) for item in items], []
    except Exception:  # noqa: BLE001 - any failure: find the bad ones one by one below
        pass
    good: list[_Read] = []
    bad: list[Unreadable] = []
    for item in items:
        try:
            good.append(read(item))
        except Exception as exc:  # noqa: BLE001 - a stored record must never stop the batch
            job_id, queue, raw = identify(item)
            bad.append(Unreadable(job_id, queue, raw, describe(exc)))
    return good, bad


def unreadable_error(bad: Unreadable, *, attempt: int, at: float) -> ErrorInfo:
    """The error a store appends to a job it takes aside because its record cannot be read."""
    shown = bad.raw[:RAW_SHOWN]
    more = f" (first {RAW_SHOWN} shown)" if len(bad.raw) > RAW_SHOWN else ""
    return ErrorInfo(
        kind=ErrorKind.UNDECODABLE,
        message=(
            f"the stored record of job {bad.job_id} could not be read ({bad.reason}); "
            "it was taken aside as a dead letter: inspect it, then purge it or enqueue it anew"
        ),
        attempt=attempt,
        at=at,
        type=ERROR_TYPE,
        traceback=f"raw record, {len(bad.raw)} bytes{more}:\n{shown.hex()}",
    )


def stand_in(bad: Unreadable, *, at: float, state: JobState = JobState.DEAD) -> JobRecord:
    """What operator verbs show for a record they cannot read: a named, dead placeholder."""
    return JobRecord(
        id=bad.job_id,
        name=UNREADABLE_NAME,
        queue=bad.queue if bad.queue is not None else "?",
        payload=b"",
        state=state,
        errors=(unreadable_error(bad, attempt=0, at=at),),
    )
