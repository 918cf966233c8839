"""``asyncq enqueue`` (a job from the shell, checked against its schema) and ``asyncq migrate``."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any, Unpack

import anyio
import click

from .._codec import decode_any
from .._options import EnqueueArgs
from ..admin import Admin
from ..exceptions import JobFailed
from ._base import (
    EXIT_USAGE,
    CommandError,
    Verb,
    app_options,
    call,
    duration_option,
    echo_json,
    meta_option,
    open_app,
    say,
)

__all__ = ["enqueue", "migrate"]


def _aware_datetime(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> datetime | None:
    """A click callback: ISO 8601 text with a UTC offset (or Z) as an aware datetime."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        msg = f"not an ISO 8601 date and time: {value!r}"
        raise click.BadParameter(msg, ctx, param) from None
    if at.tzinfo is None:
        msg = f"{value!r} has no UTC offset: add one (+01:00, Z) so the time is unambiguous"
        raise click.BadParameter(msg, ctx, param)
    return at


@click.command(cls=Verb)
@app_options
@click.argument("name")
@click.argument("payload", metavar="['JSON']", default="{}")
# The job's options are named as in ``EnqueueArgs`` (``--job-timeout`` is ``timeout``),
# so click hands them over as ``**options``: an unset one is None, the job's own.
@duration_option("--delay", help="Run no sooner than this from now (30s, 5m).")
@click.option(
    "--at",
    metavar="DATETIME",
    callback=_aware_datetime,
    help="Run no sooner than this ISO 8601 time with its offset (2030-01-01T09:00+01:00).",
)
@click.option("--id", help="The job's id: an existing job with it is returned instead.")
@click.option("--key", help="Idempotency key: an existing job with it is returned instead.")
@duration_option(
    "--key-ttl",
    "key_ttl",
    help="With --key: keep the key this long after the job finished (one run per period).",
)
@duration_option(
    "--debounce",
    help="With --key: replace the pending job with this key, run this long from now.",
)
@click.option(
    "--priority",
    type=click.IntRange(-(2**31), 2**31 - 1),  # what every store holds (PostgreSQL: 32 bits)
    help="Larger runs first (default: the job's).",
)
@click.option("-q", "--queue", help="Override the job's queue.")
@duration_option(
    "--job-timeout", "timeout", help="Override the job's deadline: how long one attempt may run."
)
@click.option(
    "--max-attempts",
    # No lower bound here: the app's own check names the job in its message.
    type=click.IntRange(max=2**31 - 1),
    help="Override the attempts before the job is dead.",
)
@meta_option("Metadata for the job, its value a string (repeatable): --meta tenant=acme.")
@click.option(
    "--after",
    metavar="ID",
    multiple=True,
    callback=lambda _ctx, _param, ids: list(ids) or None,
    help="Run once this job (of the same queue) completed (repeatable: once all have).",
)
@click.option(
    "--after-failure",
    "after_failure",
    type=click.Choice(["dead", "run"]),
    help="With --after: when a parent ends dead or cancelled, end dead too (default) or run.",
)
@click.option("--wait", is_flag=True, help="Wait for the result and print it as JSON.")
@duration_option(
    "--wait-timeout", help="With --wait: give up waiting after this long (the job may still run)."
)
@duration_option("--timeout", "wait_timeout_alias", help="The same as --wait-timeout.")
def enqueue(
    app_path: str,
    backend: str | None,
    as_json: bool,
    name: str,
    payload: str,
    wait: bool,
    wait_timeout: float | None,
    wait_timeout_alias: float | None,
    **options: Unpack[EnqueueArgs],
) -> None:
    """Enqueue job NAME with a JSON payload ('-' reads it from stdin; default {}).

    The payload is checked against the job's schema first: nothing is stored
    if it does not match (exit 2, naming the field). --job-timeout is the
    job's deadline; --wait-timeout (or --timeout) is how long this command
    waits for the result.
    """
    for flag, value in (("--wait-timeout", wait_timeout), ("--timeout", wait_timeout_alias)):
        if value is not None and not wait:
            raise click.UsageError(f"{flag} goes with --wait")
    if options.get("after_failure") is not None and not options.get("after"):
        raise click.UsageError("--after-failure goes with --after")
    if wait_timeout is not None and wait_timeout_alias is not None:
        raise click.UsageError("give --wait-timeout or --timeout, not both")
    patience = wait_timeout_alias if wait_timeout is None else wait_timeout
    document = _stdin_payload() if payload == "-" else payload
    app = open_app(app_path, backend)

    async def body(admin: Admin) -> dict[str, Any]:
        handle = await admin.enqueue_json(name, document, **options)
        record = await handle.info()
        out: dict[str, Any] = {
            "id": handle.id,
            "created": handle.created,
            "name": record.name,
            "queue": record.queue,
            "state": record.state.value,
        }
        if not wait:
            return out
        if not as_json:
            say(_enqueued_line(out), err=True)
        try:
            with anyio.fail_after(patience):
                await handle.result()
        except TimeoutError:
            msg = (
                f"no result within {patience:g}s; job {handle.id} may still run "
                f"(see: asyncq job {app_path} {handle.id})"
            )
            raise CommandError(msg) from None
        except JobFailed as exc:
            raise CommandError(str(exc)) from None
        finished = await handle.info()
        out["state"] = finished.state.value
        out["result"] = None if finished.result is None else decode_any(finished.result)
        return out

    out = call(app, body)
    if as_json:
        echo_json(out)
    elif wait:
        echo_json(out.get("result"))
    else:
        say(_enqueued_line(out))


def _stdin_payload() -> str:
    """The payload document on stdin; bytes that are not UTF-8 are a usage error."""
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"the payload on stdin is not valid UTF-8: {exc}"
        raise CommandError(msg, EXIT_USAGE) from None


def _enqueued_line(out: dict[str, Any]) -> str:
    if out["created"]:
        return f"enqueued job {out['id']} ({out['name']}, queue {out['queue']!r}, {out['state']})"
    return (
        f"job {out['id']} already exists with this id or key ({out['state']}): "
        "returned it instead of enqueueing again"
    )


@click.command(cls=Verb)
@app_options
def migrate(app_path: str, backend: str | None, as_json: bool) -> None:
    """Create or upgrade the backend's schema (PostgreSQL); other stores need nothing."""
    app = open_app(app_path, backend)

    async def body(admin: Admin) -> tuple[str, list[int] | None]:
        applied = await admin.migrate()
        return app.backend.url, applied

    url, applied = call(app, body)
    if as_json:
        echo_json({"backend": url, "applied": applied})
    elif applied is None:
        say(f"nothing to migrate for {url}: this backend has no separate migrations")
    elif applied:
        say(f"applied migration(s) {', '.join(map(str, applied))} to {url}")
    else:
        say(f"{url} is up to date: no migration applied")
