"""The ``events`` command, and the timeline ``job ID`` shows: the job event stream."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Any

import click
import msgspec

from .._events import EventKind, EventsLost, JobEvent
from .._subscribe import EventSubscription
from ..admin import Admin
from ._base import (
    EXIT_USAGE,
    CommandError,
    Verb,
    app_options,
    call,
    echo_json,
    open_app,
    parse_duration,
)
from ._render import iso, printable, span, utc

__all__ = ["event_dict", "event_line", "events", "timeline"]

_KINDS = [kind.value for kind in EventKind]


def _details(event: JobEvent) -> str:
    """What the event's kind carries, as words."""
    parts: list[str] = []
    if event.attempt is not None and event.kind is not EventKind.LOG:
        parts.append(f"attempt {event.attempt}")
    if event.worker and event.kind in (EventKind.STARTED, EventKind.RECOVERED):
        parts.append(f"on {event.worker}")
    if event.progress is not None:
        parts.append(f"{event.progress:.0%}")
    if event.detail is not None:
        parts.append(msgspec.json.encode(event.detail).decode())
    if event.duration is not None:
        parts.append(f"in {span(event.duration)}")
    if event.due is not None:
        parts.append(f"due {utc(event.due)}")
    if event.by:
        parts.append(f"by {event.by}")
    if event.error is not None:
        parts.append(event.error.one_line())
    if event.message is not None:
        parts.append(f"{event.level or 'info'}: {event.message}")
    return printable(", ".join(parts))


def event_line(event: JobEvent) -> str:
    """One event as a line of ``asyncq events``."""
    head = f"{utc(event.at)}  {event.kind.value:<9}  {printable(event.queue)}"
    return f"{head}  {printable(event.name)}  {event.job_id}  {_details(event)}".rstrip()


def event_dict(event: JobEvent) -> dict[str, Any]:
    """One event for ``--json``: its fields, times also in ISO 8601."""
    out: dict[str, Any] = msgspec.to_builtins(event)
    out["at_iso"] = iso(event.at)
    return out


def timeline(history: list[JobEvent]) -> str:
    """A job's events as the ``history`` section of ``asyncq job ID``."""
    if not history:
        return "history: (no events kept)"
    lines = ["history:"]
    lines += (f"  {utc(e.at)}  {e.kind.value:<9}  {_details(e)}".rstrip() for e in history)
    return "\n".join(lines)


def _since(text: str | None) -> str | float | None:
    """``--since``: a duration ago (``10m``), a time (ISO 8601), or an event id."""
    if text is None:
        return None
    if text.isdigit():
        return text  # a bare number is an event id (a duration takes a unit)
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return text


def _show(item: JobEvent | EventsLost, as_json: bool) -> None:
    if isinstance(item, EventsLost):
        if as_json:
            echo_json({"lost": item.count, "after": item.after})
        else:
            click.echo(f"... {item.count} events lost (pruned before they were read)", err=True)
    elif as_json:
        echo_json(event_dict(item))
    else:
        click.echo(event_line(item))
    sys.stdout.flush()


@click.command(cls=Verb)
@app_options
@click.option("-f", "--follow", is_flag=True, help="Keep printing events as they happen.")
@click.option("-q", "--queue", "queues", multiple=True, help="Only this queue (repeatable).")
@click.option("-n", "--name", "names", multiple=True, help="Only jobs of this name (repeatable).")
@click.option(
    "-k", "--kind", "kinds", multiple=True, type=click.Choice(_KINDS), help="Only this kind."
)
@click.option(
    "--since",
    metavar="ID|TIME",
    help="After this event id, or from a time: 10m, 2h (ago) or ISO 8601."
    " Default: every event kept, or with --follow from now.",
)
@click.option(
    "--count", type=click.IntRange(min=1), help="Stop after this many events (with --follow)."
)
def events(
    app_path: str,
    backend: str | None,
    as_json: bool,
    follow: bool,
    queues: tuple[str, ...],
    names: tuple[str, ...],
    kinds: tuple[str, ...],
    since: str | None,
    count: int | None,
) -> None:
    """Print job events: those kept, or with --follow those to come (like tail -f)."""
    app = open_app(app_path, backend)
    start = _since(since)
    if start is None and not follow:
        start = 0.0  # every event kept

    async def body(admin: Admin) -> None:
        subscription = EventSubscription(
            admin.app,
            queues=list(queues) or None,
            names=names or None,
            kinds=kinds or None,
            since=start,
        )
        shown = 0
        try:
            async with subscription as stream:
                if not follow:
                    for item in await stream.available():
                        _show(item, as_json)
                    return
                async for item in stream:
                    _show(item, as_json)
                    shown += isinstance(item, JobEvent)
                    if count is not None and shown >= count:
                        return
        except ValueError as exc:  # an id that is none of this store's
            raise CommandError(str(exc), EXIT_USAGE) from None

    try:
        call(app, body)
    except KeyboardInterrupt:  # Ctrl-C ends a follow, as it ends `status --watch`: exit 0
        click.echo("", err=True)
