"""How the commands show jobs and queues: plain-text tables for people, dicts for ``--json``.

Times are UTC everywhere: ISO 8601 in JSON, ``YYYY-MM-DD HH:MM:SS`` in tables. Text
from the store or the command line goes through ``printable`` before it reaches a
terminal, so a name cannot move the cursor, clear the screen or fake a table row.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec

from .._annotations import meta_text
from .._codec import decode_any
from .._limits import why_held
from .._records import CircuitState, JobRecord, JobState, LimitState
from ..admin import Status

__all__ = [
    "Unshowable",
    "age",
    "iso",
    "job_dict",
    "job_text",
    "jobs_text",
    "json_printable",
    "printable",
    "span",
    "status_dict",
    "status_text",
    "table",
    "utc",
]

_ERROR_WIDTH = 60
_pretty = msgspec.json.Encoder(enc_hook=repr)

# -- text safe for a terminal ----------------------------------------------------------

# What a terminal acts on instead of showing, or shows out of order: the C0 controls
# (ESC starts escape sequences; CR, LF and TAB move the cursor; NUL), DEL and the C1
# controls (0x9b is a one-byte CSI for some terminals), the line and paragraph
# separators, the bidirectional embeddings, overrides and isolates, and lone
# surrogates (bytes of a command-line argument that were not UTF-8).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# The same, less C0: JSON text holds those only as structure (``msgspec`` escapes
# them inside strings), and the rest can be written ``\\uXXXX`` inside a JSON string.
_UNSAFE_IN_JSON = re.compile(r"[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # Python's stand-in for a byte that was not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on written as an escape.

    LF, CR and TAB become ``\\n``, ``\\r`` and ``\\t``; the other controls (ESC,
    NUL, DEL, the C1 range) ``\\x1b``-style; bidirectional overrides and isolates
    and the line separators ``\\u202e``-style; a byte that was not UTF-8 ``\\xff``.
    Backslashes are left as they are, so ordinary text reads unchanged.
    """
    return _UNSAFE.sub(_escape, text)


def json_printable(text: str) -> str:
    """JSON text with the characters ``printable`` escapes that JSON allows raw as ``\\uXXXX``.

    The document still decodes to the same values; only its spelling changes.
    """
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# -- records a view cannot show ----------------------------------------------------------


# The stores asyncq ships check a record's types as they decode it and answer
# one they cannot read with its ``<unreadable>`` stand-in (``backends._poison``),
# so they never reach this. A third-party store (the protocol is structural) may
# hand over a ``JobRecord`` it built without a decode, with a field of the wrong
# type: its job is then named in one ``Error:`` line instead of a traceback.
class Unshowable(Exception):
    """A job's record holds a value its view cannot show: the store answered wrongly.

    Args:
        job_id: the job whose record it is.
        error: what showing it raised.
    """

    def __init__(self, job_id: object, error: Exception) -> None:
        super().__init__(
            f"job {job_id!r} is stored in a form this asyncq cannot show: "
            f"{type(error).__name__}: {error}"
        )
        self.job_id = job_id


@contextmanager
def _showing(job: JobRecord) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # a stored value of the wrong type or range
        raise Unshowable(job.id, exc) from exc


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
    """Columns padded to their widest cell; ``right`` holds the indexes aligned right.

    Every cell goes through ``printable``: one row is one line, whatever it holds.
    """
    text = [[printable(str(cell)) for cell in row] for row in [headers, *rows]]
    widths = [max(len(cell) for cell in column) for column in zip(*text, strict=True)]
    lines = []
    for row in text:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _decoded(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return decode_any(data)
    except (msgspec.DecodeError, RecursionError):  # garbage, or nested deeper than the stack
        return {"undecodable": data.hex()}


def _progress(job: JobRecord) -> str:
    return "-" if job.progress is None else f"{job.progress:.0%}"


def job_dict(job: JobRecord, *, full: bool = False) -> dict[str, Any]:
    """A job for ``--json``: the summary ``jobs`` prints, or everything ``job`` prints.

    Raises:
        Unshowable: the record holds a value of the wrong type or form.
    """
    with _showing(job):
        return _job_dict(job, full=full)


def _job_dict(job: JobRecord, *, full: bool) -> dict[str, Any]:
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
        "progress_detail": job.progress_detail,
        "meta": job.meta,
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
            logs=[
                {"at": iso(x.at), "attempt": x.attempt, "level": x.level, "message": x.message}
                for x in job.logs
            ],
            logs_dropped=job.logs_dropped,
            parents=list(job.parents),
            children=list(job.children),
            after_failure=job.after_failure,
            held_by=job.held_by,
            held_until=iso(job.held_until),
            hold=job.hold,
            held=why_held(job),
        )
    return out


def _one_line(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _job_row(job: JobRecord) -> list[str]:
    with _showing(job):
        last = job.last_error
        return [
            job.id,
            job.name,
            job.queue,
            job.state.value,
            f"{job.attempts}/{job.max_attempts}",
            _progress(job),
            utc(job.enqueued_at),
            utc(job.finished_at),
            _one_line(printable(last.one_line()), _ERROR_WIDTH) if last else "",
        ]


def jobs_text(jobs: Sequence[JobRecord]) -> str:
    """The ``jobs`` table.

    Raises:
        Unshowable: a record holds a value of the wrong type or form.
    """
    rows = [_job_row(job) for job in jobs]
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


def _lines(text: str, by: str) -> str:
    """Multi-line text from the store, indented, each line made ``printable``."""
    return "\n".join(by + printable(line) if line else line for line in text.split("\n"))


def _json_block(data: bytes | None) -> str:
    return _indent(json_printable(msgspec.json.format(_pretty.encode(_decoded(data))).decode()))


def job_text(job: JobRecord, related: Mapping[str, JobState | None] | None = None) -> str:
    """The ``job`` view: every field, payload and result as JSON, errors with tracebacks,
    and the job's parents and children with the state of each (``related``).

    Raises:
        Unshowable: the record holds a value of the wrong type or form.
    """
    with _showing(job):
        text = _job_text(job)
    return text + _relatives_text(job, related or {})


def _relatives_text(job: JobRecord, related: Mapping[str, JobState | None]) -> str:
    lines: list[str] = []
    for title, ids in (("parents", job.parents), ("children", job.children)):
        if not ids:
            continue
        lines.append(f"{title} ({len(ids)})")
        for job_id in ids:
            state = related.get(job_id)
            shown = "(not read)" if job_id not in related else (state or "gone")
            lines.append(f"  {printable(job_id)}  {shown}")
    return "".join("\n" + line for line in lines)


def _job_text(job: JobRecord) -> str:
    fields = [
        ("name", job.name),
        ("queue", job.queue),
        ("state", job.state.value + (" (cancel requested)" if job.cancel_requested else "")),
        ("attempts", f"{job.attempts}/{job.max_attempts}"),
        ("priority", str(job.priority)),
        ("key", job.key or "-"),
        ("progress", _progress(job) + _detail(job)),
        ("timeout", "-" if job.timeout is None else f"{job.timeout:g}s"),
        ("enqueued", utc(job.enqueued_at) + " UTC"),
        ("scheduled", utc(job.scheduled_at) + " UTC"),
        ("started", utc(job.started_at) + (" UTC" if job.started_at else "")),
        ("finished", utc(job.finished_at) + (" UTC" if job.finished_at else "")),
    ]
    if job.meta:
        shown = sorted(job.meta.items())  # stores keep or sort keys as they like
        fields.append(("meta", ", ".join(f"{k}={meta_text(v)}" for k, v in shown)))
    held = why_held(job)
    if held is not None:
        until = "" if job.held_until is None else f" (held until {utc(job.held_until)} UTC)"
        fields.append(("held", held + until))
    if job.state is JobState.ACTIVE:
        fields.append(("worker", job.worker or "-"))
        fields.append(("lease until", utc(job.lease_expires_at) + " UTC"))
    width = max(len(name) for name, _ in fields)
    lines = [f"job {printable(job.id)}"]
    lines += [f"  {name.ljust(width)}  {printable(value)}" for name, value in fields]
    lines.append("payload")
    lines.append(_json_block(job.payload))
    if job.result is not None:
        lines.append("result")
        lines.append(_json_block(job.result))
    lines.append(f"errors ({len(job.errors)})" if job.errors else "errors: none")
    for error in job.errors:
        head = f"  attempt {error.attempt} at {utc(error.at)} UTC [{printable(error.kind.value)}]"
        lines.append(f"{head} {printable(error.one_line())}")
        if error.traceback:
            lines.append(_lines(error.traceback.rstrip("\n"), "      "))
        elif "\n" in error.message:
            lines.append(_lines(error.message.rstrip("\n"), "      "))
    lines += _logs_text(job)
    return "\n".join(lines)


def _detail(job: JobRecord) -> str:
    if job.progress_detail is None:
        return ""
    return "  " + msgspec.json.encode(job.progress_detail, enc_hook=repr).decode()


def _logs_text(job: JobRecord) -> list[str]:
    """The ``logs`` section of the ``job`` view: time, attempt, level, message per line."""
    if not job.logs and not job.logs_dropped:
        return ["logs: none"]
    lines = [f"logs ({len(job.logs)})"]
    if job.logs_dropped:
        lines.append(f"  ({job.logs_dropped} earlier lines dropped)")
    width = max((len(x.level) for x in job.logs), default=0)
    for x in job.logs:
        head = f"  {utc(x.at)}  #{x.attempt}  {printable(x.level).ljust(width)}"
        lines.append(f"{head}  {printable(x.message)}")
    return lines


_STATES = list(JobState)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _limit_rate(state: LimitState) -> str:
    if state.rate is None:
        return "-"
    return f"{state.rate:g}/{state.per:g}s"


def limits_text(found: list[LimitState]) -> str:
    """The table: one counter a line."""
    if not found:
        return "no limits (declare them with app.limit(...))"
    rows = [
        [
            state.slot,
            state.queue or "*",
            "-" if state.concurrency is None else f"{state.running}/{state.concurrency}",
            str(state.held),
            _limit_rate(state),
            "-" if state.rate is None else f"{state.tokens:.1f}",
        ]
        for state in found
    ]
    headers = ["LIMIT", "QUEUE", "RUNNING", "HELD", "RATE", "TOKENS"]
    return table(headers, rows, right=[2, 3, 5])


def circuit_dict(state: CircuitState) -> dict[str, Any]:
    """One circuit for ``--json``."""
    return {
        "name": state.name,
        "queue": state.queue,
        "state": state.state,
        "opened_at": iso(state.opened_at),
        "failures": len(state.failures),
        "threshold": state.threshold,
        "within": state.within,
        "reset_after": state.reset_after,
        "probe": state.probe,
    }


def circuits_text(found: list[CircuitState]) -> str:
    """The circuits' table: one a line."""
    rows = [
        [
            state.name,
            state.queue or "*",
            state.state,
            "-" if state.opened_at is None else f"{utc(state.opened_at)} UTC",
            f"{len(state.failures)}/{state.threshold} in {state.within:g}s",
            f"{state.reset_after:g}s",
        ]
        for state in found
    ]
    headers = ["CIRCUIT", "QUEUE", "STATE", "OPENED AT", "FAILURES", "RESET AFTER"]
    return table(headers, rows)


def status_text(status: Status) -> str:
    """The ``status`` view: a table of queues, then the cron schedules."""
    lines = [f"{printable(status.backend)}  {utc(status.at)} UTC", ""]
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
    if status.limits:
        lines.append("")
        lines.append(limits_text(status.limits))
    if status.circuits:
        lines.append("")
        lines.append(circuits_text(status.circuits))
    return "\n".join(lines)


def status_dict(status: Status) -> dict[str, Any]:
    """The ``status`` view for ``--json``."""
    return {
        "at": iso(status.at),
        "backend": status.backend,
        "queues": [msgspec.to_builtins(q) for q in status.queues],
        "cron": [{**msgspec.to_builtins(c), "next_run": iso(c.next_run)} for c in status.cron],
        "limits": [msgspec.to_builtins(state) for state in status.limits],
        "circuits": [circuit_dict(state) for state in status.circuits],
    }
