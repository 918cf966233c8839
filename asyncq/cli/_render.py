"""How the commands show jobs and queues: plain-text tables for people, dicts for ``--json``.

Times are UTC everywhere: ISO 8601 in JSON, ``YYYY-MM-DD HH:MM:SS`` in tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from .._codec import decode_any
from .._records import JobRecord, JobState
from ..admin import Status

__all__ = [
    "age",
    "span",
    "iso",
    "job_dict",
    "job_text",
    "jobs_text",
    "status_dict",
    "status_text",
    "table",
    "utc",
]

_ERROR_WIDTH = 60
_pretty = msgspec.json.Encoder(enc_hook=repr)


def iso(ts: float | None) -> str | None:
    """ISO 8601 in UTC, to the millisecond, or ``None``; a time no date can show, as stored."""
    if ts is None:
        return None
    try:
        moment = datetime.fromtimestamp(ts, UTC)
    except (ValueError, OverflowError, OSError):  # NaN, infinite, beyond year 9999
        return str(ts)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc(ts: float | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC, or ``-``; a time no date can show, as stored."""
    if ts is None:
        return "-"
    try:
        moment = datetime.fromtimestamp(ts, UTC)
    except (ValueError, OverflowError, OSError):  # NaN, infinite, beyond year 9999
        return str(ts)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def age(seconds: float | None) -> str:
    """A short span: ``4.2s``, ``12m30s``, ``5h02m``, ``3d04h``; ``-`` for ``None``."""
    if seconds is None:
        return "-"
    if not math.isfinite(seconds):  # from a stored time that is NaN or infinite
        return str(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86_400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86_400}d{whole % 86_400 // 3600:02d}h"


def span(seconds: float) -> str:
    """A duration as given on the command line: ``7d``, ``1h30m``, ``45s``, ``0.5s``."""
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(seconds)
    parts = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell; ``right`` holds the indexes aligned right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for row in [headers, *rows]:
        cells = [
            str(cell).rjust(width) if i in right else str(cell).ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _decoded(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return decode_any(data)
    except msgspec.DecodeError:
        return {"undecodable": data.hex()}


def _progress(job: JobRecord) -> str:
    return "-" if job.progress is None else f"{job.progress:.0%}"


def job_dict(job: JobRecord, *, full: bool = False) -> dict[str, Any]:
    """A job for ``--json``: the summary ``jobs`` prints, or everything ``job`` prints."""
    last = job.last_error
    out: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "queue": job.queue,
        "state": job.state.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "key": job.key,
        "progress": job.progress,
        "enqueued_at": iso(job.enqueued_at),
        "scheduled_at": iso(job.scheduled_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "last_error": last.one_line() if last else None,
    }
    if full:
        out.update(
            worker=job.worker,
            lease_expires_at=iso(job.lease_expires_at),
            cancel_requested=job.cancel_requested,
            timeout=job.timeout,
            result_ttl=job.result_ttl,
            headers=job.headers,
            payload=_decoded(job.payload),
            result=_decoded(job.result),
            errors=[
                {
                    "attempt": e.attempt,
                    "at": iso(e.at),
                    "kind": e.kind.value,
                    "type": e.type,
                    "message": e.message,
                    "traceback": e.traceback,
                }
                for e in job.errors
            ],
        )
    return out


def _one_line(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def jobs_text(jobs: Sequence[JobRecord]) -> str:
    """The ``jobs`` table."""
    rows = [
        [
            job.id,
            job.name,
            job.queue,
            job.state.value,
            f"{job.attempts}/{job.max_attempts}",
            _progress(job),
            utc(job.enqueued_at),
            utc(job.finished_at),
            _one_line(job.last_error.one_line(), _ERROR_WIDTH) if job.last_error else "",
        ]
        for job in jobs
    ]
    headers = [
        "ID",
        "NAME",
        "QUEUE",
        "STATE",
        "TRIES",
        "PROGRESS",
        "ENQUEUED (UTC)",
        "FINISHED (UTC)",
        "LAST ERROR",
    ]
    return table(headers, rows, right=(5,))


def _indent(text: str, by: str = "    ") -> str:
    return "\n".join(by + line if line else line for line in text.splitlines())


def job_text(job: JobRecord) -> str:
    """The ``job`` view: every field, payload and result as JSON, errors with tracebacks."""
    fields = [
        ("name", job.name),
        ("queue", job.queue),
        ("state", job.state.value + (" (cancel requested)" if job.cancel_requested else "")),
        ("attempts", f"{job.attempts}/{job.max_attempts}"),
        ("priority", str(job.priority)),
        ("key", job.key or "-"),
        ("progress", _progress(job)),
        ("timeout", "-" if job.timeout is None else f"{job.timeout:g}s"),
        ("enqueued", utc(job.enqueued_at) + " UTC"),
        ("scheduled", utc(job.scheduled_at) + " UTC"),
        ("started", utc(job.started_at) + (" UTC" if job.started_at else "")),
        ("finished", utc(job.finished_at) + (" UTC" if job.finished_at else "")),
    ]
    if job.state is JobState.ACTIVE:
        fields.append(("worker", job.worker or "-"))
        fields.append(("lease until", utc(job.lease_expires_at) + " UTC"))
    width = max(len(name) for name, _ in fields)
    lines = [f"job {job.id}"]
    lines += [f"  {name.ljust(width)}  {value}" for name, value in fields]
    lines.append("payload")
    lines.append(_indent(msgspec.json.format(_pretty.encode(_decoded(job.payload))).decode()))
    if job.result is not None:
        lines.append("result")
        lines.append(_indent(msgspec.json.format(_pretty.encode(_decoded(job.result))).decode()))
    lines.append(f"errors ({len(job.errors)})" if job.errors else "errors: none")
    for error in job.errors:
        head = f"  attempt {error.attempt} at {utc(error.at)} UTC [{error.kind.value}]"
        lines.append(f"{head} {error.one_line()}")
        if error.traceback:
            lines.append(_indent(error.traceback.rstrip("\n"), "      "))
        elif "\n" in error.message:
            lines.append(_indent(error.message.rstrip("\n"), "      "))
    return "\n".join(lines)


_STATES = list(JobState)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def status_text(status: Status) -> str:
    """The ``status`` view: a table of queues, then the cron schedules."""
    lines = [f"{status.backend}  {utc(status.at)} UTC", ""]
    rows = [
        [
            q.queue,
            *(str(q.counts.get(s, 0)) for s in _STATES),
            age(q.oldest_ready_age),
            _rate(q.completed_per_minute),
            _rate(q.dead_per_minute),
            "yes" if q.paused else "no",
        ]
        for q in status.queues
    ]
    headers = ["QUEUE", *(s.value.upper() for s in _STATES)]
    headers += ["OLDEST READY", "DONE/MIN", "DEAD/MIN", "PAUSED"]
    if rows:
        counts = range(1, len(_STATES) + 1)
        lines.append(table(headers, rows, right=(*counts, len(headers) - 3, len(headers) - 2)))
    else:
        lines.append("no queues yet")
    if status.cron:
        now = status.at
        cron_rows = [
            [
                c.name,
                c.job,
                c.queue,
                c.expression,
                c.tz,
                f"{utc(c.next_run)} (in {age(max(c.next_run - now, 0.0))})",
            ]
            for c in status.cron
        ]
        lines.append("")
        headers = ["CRON", "JOB", "QUEUE", "SCHEDULE", "TZ", "NEXT RUN (UTC)"]
        lines.append(table(headers, cron_rows))
    return "\n".join(lines)


def status_dict(status: Status) -> dict[str, Any]:
    """The ``status`` view for ``--json``."""
    return {
        "at": iso(status.at),
        "backend": status.backend,
        "queues": [msgspec.to_builtins(q) for q in status.queues],
        "cron": [{**msgspec.to_builtins(c), "next_run": iso(c.next_run)} for c in status.cron],
    }
