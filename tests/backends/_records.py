"""Builders for the records the conformance suite hands to backends.

Every job gets a fresh id from ``new_job_id`` and its times from ``time.time()``,
as a producer would set them; everything else has a plain default a test
overrides by keyword.
"""

from __future__ import annotations

import time

from msgspec.structs import replace

from asyncq._records import ErrorInfo, ErrorKind, JobRecord, JobState, Lease, Outcome, new_job_id

QUEUE = "default"
NAME = "tests.echo"
#: MessagePack for ``[1]`` followed by bytes that are not UTF-8: stores must keep payloads binary.
PAYLOAD = b"\x91\x01\x00\xff\x80"
RESULT = b"\xa2ok"


def job(
    *,
    queue: str = QUEUE,
    name: str = NAME,
    payload: bytes = PAYLOAD,
    delay: float = 0.0,
    at: float | None = None,
    priority: int = 0,
    max_attempts: int = 1,
    key: str | None = None,
    result_ttl: float | None = None,
    timeout: float | None = None,
    headers: dict[str, str] | None = None,
) -> JobRecord:
    """A new job as a producer submits it: ready now, or ``delay`` seconds (or ``at``) later."""
    now = time.time()
    return JobRecord(
        id=new_job_id(),
        name=name,
        queue=queue,
        payload=payload,
        priority=priority,
        max_attempts=max_attempts,
        timeout=timeout,
        key=key,
        result_ttl=result_ttl,
        enqueued_at=now,
        scheduled_at=now + delay if at is None else at,
        headers=headers or {},
    )


def error(lease: Lease, kind: ErrorKind = ErrorKind.ERROR, message: str = "boom") -> ErrorInfo:
    """The error a worker reports for the attempt ``lease`` belongs to."""
    return ErrorInfo(
        kind=kind,
        message=message,
        attempt=lease.job.attempts,
        at=time.time(),
        type="ValueError",
        traceback='Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom\n',
    )


def completed(lease: Lease, result: bytes = RESULT) -> Outcome:
    return Outcome(job_id=lease.job.id, token=lease.token, state=JobState.COMPLETED, result=result)


def failed(lease: Lease, retry_at: float, message: str = "boom") -> Outcome:
    return Outcome(
        job_id=lease.job.id,
        token=lease.token,
        state=JobState.FAILED,
        error=error(lease, message=message),
        retry_at=retry_at,
    )


def dead(lease: Lease) -> Outcome:
    return Outcome(
        job_id=lease.job.id,
        token=lease.token,
        state=JobState.DEAD,
        error=error(lease, ErrorKind.REJECT, "rejected"),
    )


def cancelled(lease: Lease) -> Outcome:
    return Outcome(
        job_id=lease.job.id,
        token=lease.token,
        state=JobState.CANCELLED,
        error=error(lease, ErrorKind.CANCELLED, "cancelled while running"),
    )


def handed_back(lease: Lease) -> Outcome:
    return Outcome(job_id=lease.job.id, token=lease.token, state=JobState.QUEUED)


def forged(lease: Lease) -> Lease:
    """The same lease with a token the backend never issued."""
    return replace(lease, token="0" * 32)
