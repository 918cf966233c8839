"""Operator commands: status, jobs, job, retry, purge, cancel, pause, resume.

Each is a thin layer over ``asyncq.admin.Admin``: parse, call, print (text or
``--json``), exit 0, 1 (failed, not found) or 2 (usage).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any

import anyio
import click

from .._events import JobEvent
from .._records import TERMINAL_STATES, JobRecord, JobState
from ..admin import Admin, Status
from ..exceptions import JobNotFound
from ._base import (
    EXIT_USAGE,
    CommandError,
    Progress,
    Verb,
    app_options,
    batch_option,
    call,
    duration_option,
    echo_json,
    fail,
    meta_option,
    open_app,
    say,
)
from ._events import event_dict, timeline
from ._render import job_dict, job_text, jobs_text, span, status_dict, status_text, utc

__all__ = ["cancel", "job", "jobs", "pause", "purge", "resume", "retry", "status"]

_FINISHED = sorted(s.value for s in TERMINAL_STATES)
_RATE_WINDOW = 60.0


async def check_queue(admin: Admin, queue: str | None) -> None:
    """Refuse a queue neither the app nor the store knows: most likely a typo."""
    if queue is None:
        return
    known = await admin.queues()
    if queue not in known:
        names = ", ".join(known) or "none yet"
        msg = f"unknown queue {queue!r}; known queues: {names}"
        raise CommandError(msg, EXIT_USAGE)


# -- status ------------------------------------------------------------------------------


@click.command(cls=Verb)
@app_options
@click.option("-q", "--queue", "queues", multiple=True, help="Only this queue (repeatable).")
@click.option(
    "-w", "--watch", is_flag=True, help="Refresh until Ctrl-C, with throughput per minute."
)
@duration_option(
    "--interval",
    default="2s",
    show_default=True,
    help="With --watch: time between refreshes (2, 5s, 1m).",
)
@click.option(
    "--count", type=click.IntRange(min=1), help="With --watch: stop after this many refreshes."
)
def status(
    app_path: str,
    backend: str | None,
    as_json: bool,
    queues: tuple[str, ...],
    watch: bool,
    interval: float,
    count: int | None,
) -> None:
    """Per queue: jobs in each state, the oldest ready job's wait, and the pause flag.

    With --watch the view refreshes in place and adds jobs completed and gone
    dead per minute (over the last minute, or since the watch began); with
    --json it prints one JSON document per refresh.
    """
    if interval <= 0:
        raise click.BadParameter("must be more than zero", param_hint="'--interval'")
    app = open_app(app_path, backend)
    live = watch and not as_json and sys.stdout.isatty()

    def show(snapshot: Status, first: bool) -> None:
        if as_json:
            echo_json(status_dict(snapshot))
        elif live:
            # Home, then each line cleared to its end, then the rest of the screen:
            # the view is redrawn in place without flicker.
            text = status_text(snapshot) + "\n\n(Ctrl-C to stop)"
            screen = "\x1b[2J" if first else ""
            body = "\n".join(line + "\x1b[K" for line in text.splitlines())
            click.echo(f"{screen}\x1b[H{body}\n\x1b[J", nl=False)
        else:
            click.echo(("" if first else "\n") + status_text(snapshot))

    async def body(admin: Admin) -> None:
        for queue in queues:
            await check_queue(admin, queue)
        # Rates are measured against the oldest snapshot of the last minute: over
        # one refresh interval they would mostly read zero.
        window: deque[Status] = deque()
        shown = 0
        while True:
            previous = window[0] if window else None
            snapshot = await admin.status(list(queues) or None, previous=previous)
            show(snapshot, shown == 0)
            shown += 1
            if not watch or (count is not None and shown >= count):
                return
            window.append(snapshot)
            while snapshot.at - window[0].at > _RATE_WINDOW:
                window.popleft()
            await anyio.sleep(interval)

    try:
        call(app, body)
    except KeyboardInterrupt:
        click.echo("")


# -- jobs, job ----------------------------------------------------------------------------


@click.command(cls=Verb)
@app_options
@click.option(
    "-s", "--state", type=click.Choice([s.value for s in JobState]), help="Only this state."
)
@click.option("-q", "--queue", help="Only this queue.")
@click.option("-n", "--name", help="Only jobs with this name.")
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="At most."
)
@click.option("--after", metavar="ID", help="Start after this job id (pages through).")
@click.option("--newest", is_flag=True, help="Newest first (--after then pages on to older jobs).")
@meta_option("Only jobs with this metadata (repeatable, all must match): --meta tenant=acme.")
def jobs(
    app_path: str,
    backend: str | None,
    as_json: bool,
    state: str | None,
    queue: str | None,
    name: str | None,
    limit: int,
    after: str | None,
    newest: bool,
    meta: dict[str, str] | None,
) -> None:
    """List jobs, oldest first: id, name, queue, state, tries, progress, times, last error.

    Dead letters are --state dead; --newest lists the latest first. --json adds
    each job's metadata and progress detail.
    """
    app = open_app(app_path, backend)

    async def body(admin: Admin) -> list[JobRecord]:
        await check_queue(admin, queue)
        return await admin.jobs(
            state=state,
            queue=queue,
            name=name,
            limit=limit,
            after=after,
            newest=newest,
            meta=meta,
        )

    found = call(app, body)
    if as_json:
        echo_json([job_dict(j) for j in found])
    elif found:
        click.echo(jobs_text(found))
    else:
        what = " ".join(filter(None, [state, "jobs"]))
        where = "".join(
            [
                f" in queue {queue!r}" if queue else "",
                f" named {name!r}" if name else "",
                f" with meta {', '.join(f'{k}={v}' for k, v in meta.items())}" if meta else "",
            ]
        )
        say(f"no {what}{where}{' after ' + after if after else ''}")
    if len(found) == limit and not as_json:
        more = " --newest" if newest else ""
        say(f"(first {limit} shown; next page:{more} --after {found[-1].id})", err=True)


@click.command(cls=Verb)
@app_options
@click.argument("job_id", metavar="ID")
def job(app_path: str, backend: str | None, as_json: bool, job_id: str) -> None:
    """Show one job in full: payload, result, every error with its traceback, its history."""
    app = open_app(app_path, backend)

    async def body(
        admin: Admin,
    ) -> tuple[JobRecord, dict[str, JobState | None], list[JobEvent]]:
        record = await admin.job(job_id)
        related = await admin.relatives(record) if record.parents or record.children else {}
        return record, related, await admin.history(job_id)

    record, related, history = call(app, body)
    if as_json:
        shown = {
            "parents": _related(record.parents, related),
            "children": _related(record.children, related),
        }
        echo_json(
            {**job_dict(record, full=True), **shown, "history": [event_dict(e) for e in history]}
        )
    else:
        click.echo(job_text(record, related))
        click.echo(timeline(history))


def _related(ids: tuple[str, ...], states: dict[str, JobState | None]) -> list[dict[str, Any]]:
    """Parents or children as ``job --json`` shows them: id and state (``null``: gone)."""
    return [
        {"id": i, "state": None if (state := states.get(i)) is None else state.value} for i in ids
    ]


# -- retry, cancel ---------------------------------------------------------------------------


async def _why_not_retried(admin: Admin, job_id: str) -> str:
    try:
        record = await admin.job(job_id)
    except JobNotFound as exc:
        return str(exc)
    if record.state is JobState.DEAD:
        return f"job {job_id} stays dead: another live job holds its key {record.key!r}"
    return f"job {job_id} is not dead (it is {record.state.value}): only dead jobs are retried"


@click.command(cls=Verb)
@app_options
@click.argument("job_ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "all_dead", is_flag=True, help="Every dead job (narrow with -q, -n).")
@click.option("-q", "--queue", help="With --all: only this queue.")
@click.option("-n", "--name", help="With --all: only jobs with this name.")
@batch_option(10_000, 500)
def retry(
    app_path: str,
    backend: str | None,
    as_json: bool,
    job_ids: tuple[str, ...],
    all_dead: bool,
    queue: str | None,
    name: str | None,
    batch: int,
) -> None:
    """Put dead jobs back in their queue with fresh attempts: by ID, or --all."""
    if all_dead == bool(job_ids):
        raise click.UsageError("give job IDs or --all (not both)")
    if (queue or name) and not all_dead:
        raise click.UsageError("--queue and --name go with --all")
    app = open_app(app_path, backend)
    if all_dead:
        progress = Progress("retried")

        async def retry_all(admin: Admin) -> int:
            await check_queue(admin, queue)
            return await admin.retry_all(queue=queue, name=name, batch=batch, progress=progress)

        total = call(app, retry_all)
        progress.done()
        if as_json:
            echo_json({"retried": total, "queue": queue, "name": name})
        else:
            where = "".join(
                [f" in queue {queue!r}" if queue else "", f" named {name!r}" if name else ""]
            )
            say(f"retried {total} dead job(s){where}" if total else f"no dead jobs{where}")
        return

    async def retry_ids(admin: Admin) -> tuple[list[str], list[str]]:
        done = await admin.retry(job_ids)
        retried = set(done)
        problems = [await _why_not_retried(admin, i) for i in job_ids if i not in retried]
        return done, problems

    done, problems = call(app, retry_ids)
    if as_json:
        echo_json({"retried": done, "errors": problems})
    else:
        for job_id in done:
            say(f"retried job {job_id}: queued with fresh attempts")
    if problems:
        fail(*problems)


@click.command(cls=Verb)
@app_options
@click.argument("job_ids", nargs=-1, required=True, metavar="ID...")
def cancel(app_path: str, backend: str | None, as_json: bool, job_ids: tuple[str, ...]) -> None:
    """Cancel jobs: a pending one never runs; a running one is stopped by its worker."""
    app = open_app(app_path, backend)

    async def body(admin: Admin) -> list[tuple[str, JobRecord | None]]:
        out: list[tuple[str, JobRecord | None]] = []
        for job_id in dict.fromkeys(job_ids):
            try:
                out.append((job_id, await admin.cancel(job_id, by="cli")))
            except JobNotFound:
                out.append((job_id, None))
        return out

    results = call(app, body)
    report: list[dict[str, Any]] = []
    problems: list[str] = []
    for job_id, record in results:
        if record is None:
            outcome = "not found"
            problems.append(f"no job with id {job_id!r}")
        elif record.state is JobState.CANCELLED:
            outcome = "cancelled"
        elif record.state is JobState.ACTIVE:
            outcome = "cancel requested"
        else:
            outcome = f"already {record.state.value}"
            problems.append(f"job {job_id} already ended {record.state.value}: nothing to cancel")
        report.append(
            {"id": job_id, "state": record.state.value if record else None, "outcome": outcome}
        )
        if as_json or record is None or outcome.startswith("already"):
            continue
        if outcome == "cancelled":
            say(f"cancelled job {job_id} ({record.name}, queue {record.queue!r})")
        else:
            say(
                f"cancel requested for job {job_id}: running on {record.worker}, "
                "which stops it at its next heartbeat"
            )
    if as_json:
        echo_json(report)
    if problems:
        fail(*problems)


# -- purge --------------------------------------------------------------------------------------


@click.command(cls=Verb)
@app_options
@click.option(
    "-s",
    "--state",
    "states",
    type=click.Choice(_FINISHED),
    multiple=True,
    required=True,
    help="Which finished jobs (repeatable).",
)
@duration_option(
    "--older-than",
    required=True,
    help="Finished longer ago than this: 30s, 15m, 12h, 7d, 2w.",
)
@click.option("-q", "--queue", help="Only this queue.")
@click.option("--yes", is_flag=True, help="Confirm: purged jobs are gone for good.")
@batch_option(100_000, 1000)
def purge(
    app_path: str,
    backend: str | None,
    as_json: bool,
    states: tuple[str, ...],
    older_than: float,
    queue: str | None,
    yes: bool,
    batch: int,
) -> None:
    """Delete finished jobs (dead, completed, cancelled) older than a given age."""
    app = open_app(app_path, backend)
    names = ", ".join(sorted(set(states)))
    cutoff = time.time() - older_than
    scope = f"{names} jobs that finished before {utc(cutoff)} UTC (older than {span(older_than)})"
    scope += f" in queue {queue!r}" if queue else ""
    if not yes:
        fail(f"refusing to purge without --yes: it would delete {scope}", code=EXIT_USAGE)
    progress = Progress("purged")

    async def body(admin: Admin) -> int:
        await check_queue(admin, queue)
        return await admin.purge(
            states=states, older_than=older_than, queue=queue, batch=batch, progress=progress
        )

    removed = call(app, body)
    progress.done()
    if as_json:
        echo_json({"purged": removed, "states": sorted(set(states)), "queue": queue})
    else:
        say(f"purged {removed} job(s): {scope}")


# -- pause, resume -------------------------------------------------------------------------------


def _set_paused(
    app_path: str, backend: str | None, as_json: bool, queue: str, paused: bool
) -> None:
    app = open_app(app_path, backend)

    async def body(admin: Admin) -> None:
        await check_queue(admin, queue)
        await (admin.pause(queue) if paused else admin.resume(queue))

    call(app, body)
    if as_json:
        echo_json({"queue": queue, "paused": paused})
    elif paused:
        say(
            f"paused queue {queue!r}: it accepts jobs, no worker claims from it "
            "until `asyncq resume`"
        )
    else:
        say(f"resumed queue {queue!r}")


@click.command(cls=Verb)
@app_options
@click.argument("queue")
def pause(app_path: str, backend: str | None, as_json: bool, queue: str) -> None:
    """Pause a queue: it keeps accepting jobs, but no worker claims from it."""
    _set_paused(app_path, backend, as_json, queue, True)


@click.command(cls=Verb)
@app_options
@click.argument("queue")
def resume(app_path: str, backend: str | None, as_json: bool, queue: str) -> None:
    """Resume a paused queue."""
    _set_paused(app_path, backend, as_json, queue, False)
