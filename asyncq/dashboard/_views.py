"""What the templates show: times, durations, decoded payloads, and the Jinja environment.

Every value the store holds reaches a page through Jinja with autoescaping on,
so job data is text, never markup; the filters here only format it.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import msgspec
from markupsafe import Markup, escape

from .._codec import decode_any
from .._events import JobEvent
from .._limits import why_held
from .._records import JobState, WorkerInfo

#: What a page shows for no value.
DASH = "\u2013"

__all__ = [
    "DASH",
    "STATES",
    "circuit_row",
    "environment",
    "limit_row",
    "parse_meta",
    "pretty",
    "pretty_bytes",
    "relative",
    "serves",
]

#: The states in the order every page lists them.
STATES: tuple[JobState, ...] = tuple(JobState)

_TEMPLATES = Path(__file__).parent / "templates"
_json = msgspec.json.Encoder(enc_hook=repr, order="sorted")


def absolute(ts: float | None) -> str:
    """``2026-12-06 15:04:05 UTC``."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ts: float | None) -> str:
    """ISO 8601 in UTC, for ``<time datetime=...>``."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def span(seconds: float | None) -> str:
    """``850 ms``, ``12 s``, ``4 min 3 s``, ``2 h 5 min``, ``3 d 4 h``."""
    if seconds is None or not math.isfinite(seconds):
        return DASH
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec} s" if sec and minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def relative(ts: float | None, now: float | None = None) -> str:
    """``3 min ago`` or ``in 5 s`` (``just now`` within a second)."""
    if ts is None:
        return DASH
    delta = (time.time() if now is None else now) - ts
    if abs(delta) < 1:
        return "just now"
    return f"{span(delta)} ago" if delta > 0 else f"in {span(delta)}"


def when(ts: float | None) -> Markup:
    """A ``<time>`` element: relative text, the absolute time on hover (the page's script
    keeps the text current)."""
    if ts is None:
        return Markup('<span class="muted">{}</span>').format(DASH)
    return Markup('<time datetime="{}" title="{}" data-ts="{}">{}</time>').format(
        iso(ts), absolute(ts), f"{ts:.3f}", relative(ts)
    )


def pretty(value: Any) -> str:
    """``value`` as indented JSON (what JSON cannot hold shows as its repr)."""
    try:
        return msgspec.json.format(_json.encode(value), indent=2).decode()
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def pretty_bytes(data: bytes | None) -> str | None:
    """A stored payload or result (MessagePack) as indented JSON; ``None`` for none."""
    if data is None:
        return None
    try:
        return pretty(decode_any(data))
    except (msgspec.DecodeError, RecursionError):
        return f"(not MessagePack this asyncq can read: {len(data)} bytes)\n{data[:256].hex()}"


def percent(value: float | None) -> str:
    """``42 %``."""
    return DASH if value is None else f"{value * 100:.0f} %"


def number(value: float | int | None) -> str:
    """``12,345`` or ``3.4``."""
    if value is None:
        return DASH
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def state_badge(state: JobState | str) -> Markup:
    """The coloured badge every page shows a state with."""
    name = str(state)
    return Markup('<span class="badge state-{0}">{0}</span>').format(escape(name))


def event_parts(event: JobEvent) -> list[str]:
    """What a timeline entry says besides its kind and error: ``attempt 2``, ``by operator``..."""
    parts = []
    if event.attempt:
        parts.append(f"attempt {event.attempt}")
    if event.worker:
        parts.append(f"on {event.worker}")
    if event.by:
        parts.append(f"by {event.by}")
    if event.progress is not None:
        parts.append(percent(event.progress))
    if event.duration is not None:
        parts.append(f"took {span(event.duration)}")
    if event.due is not None:
        parts.append(f"due {relative(event.due)}")
    return parts


def environment() -> jinja2.Environment:
    """The templates of the package, autoescaped, with the filters above."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,  # every template is HTML: job data is always escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        absolute=absolute,
        iso=iso,
        span=span,
        relative=relative,
        when=when,
        pretty=pretty,
        pretty_bytes=pretty_bytes,
        percent=percent,
        number=number,
        badge=state_badge,
    )
    env.globals["STATES"] = STATES
    env.globals["event_parts"] = event_parts
    env.globals["why_held"] = why_held
    return env


def parse_meta(text: str) -> dict[str, str] | None:
    """``tenant=acme, region=eu`` as a dict; pieces without ``=`` are ignored."""
    pairs = {}
    for piece in text.split(","):
        key, sep, value = piece.strip().partition("=")
        if sep and key.strip():
            pairs[key.strip()] = value.strip()
    return pairs or None


def limit_row(limit: Any) -> dict[str, Any]:
    """What the overview shows of one limit counter (read by name: any field may be missing)."""
    concurrency = getattr(limit, "concurrency", None)
    rate = getattr(limit, "rate", None)
    return {
        "name": getattr(limit, "name", "?"),
        "key": getattr(limit, "key", None),
        "queue": getattr(limit, "queue", None),
        "running": getattr(limit, "running", 0),
        "concurrency": concurrency,
        "rate": None if rate is None else f"{rate:g} per {getattr(limit, 'per', 1.0):g} s",
        "held": getattr(limit, "held", 0),
    }


def circuit_row(circuit: Any) -> dict[str, Any]:
    """What the overview shows of one circuit breaker (read by name, like ``limit_row``)."""
    return {
        "name": getattr(circuit, "name", "?"),
        "state": str(getattr(circuit, "state", "closed")),
        "queue": getattr(circuit, "queue", None),
        "failures": len(getattr(circuit, "failures", ()) or ()),
        "threshold": getattr(circuit, "threshold", None),
        "opened_at": getattr(circuit, "opened_at", None),
    }


def serves(worker: WorkerInfo, app_name: str, queues: list[str]) -> bool:
    return worker.app == app_name or bool(set(worker.queues) & set(queues))
