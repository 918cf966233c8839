"""Logging: structured fields on job lines, trace ids, and the set-up for ``asyncq run``.

asyncq logs through the standard library under the ``asyncq`` logger tree
(``asyncq``, ``asyncq.worker``, ``asyncq.job`` for ``ctx.logger``,
``asyncq.cron``, ``asyncq.health``, ``asyncq.telemetry``). Every line about
one job carries the fields of ``job_fields`` as ``extra=`` attributes, and
``TraceContextFilter`` adds the current span's ``trace_id`` and ``span_id``,
so the lines of one job can be found from its trace and back.
``JSONFormatter`` writes all of them out.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec
from opentelemetry import trace

from ._records import JobRecord

__all__ = [
    "JSONFormatter",
    "TextFormatter",
    "TraceContextFilter",
    "configure_logging",
    "job_fields",
]

# Attributes every LogRecord has; anything else was passed in ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def job_fields(job: JobRecord, state: str | None = None) -> dict[str, Any]:
    """The ``extra=`` fields of a log line about ``job``, entering ``state`` (default: its own)."""
    return {
        "job_id": job.id,
        "job_name": job.name,
        "queue": job.queue,
        "attempt": job.attempts,
        "job_state": str(job.state if state is None else state),
    }


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (lower-case hex) of the current span to each record.

    Install it on a handler (``configure_logging`` does): filters run where
    the record is made, so the span is the one current in the logging code,
    even when a ``QueueHandler`` formats the line later in another thread.
    Records outside any valid span are left alone.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "trace_id"):
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                record.trace_id = format(context.trace_id, "032x")
                record.span_id = format(context.span_id, "016x")
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and every ``extra`` field."""

    _encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool) else repr(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return self._encoder.encode(entry).decode()


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``; a handler's own lines (``ctx.logger``) name their job.

    The worker's lines about a job name it in their message already; the
    lines a handler logs through ``ctx.logger`` (logger ``asyncq.job``) get
    ``[job NAME ID]`` before the message, so the text format ties them to
    their job too.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        job_id = getattr(record, "job_id", None)
        if job_id is None or not record.name.startswith("asyncq.job"):
            return line
        head = f"{record.name}: "
        tag = f"{record.name} [job {getattr(record, 'job_name', '?')} {job_id}]: "
        return line.replace(head, tag, 1)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Send asyncq's logs (and the root logger's) to stderr, as text or JSON lines.

    Either way the handler stamps trace ids (``TraceContextFilter``); the JSON
    lines show them, with the job fields.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TraceContextFilter())
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
