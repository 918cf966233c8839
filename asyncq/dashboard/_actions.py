"""What the dashboard can change: every action a POST behind ``Dashboard.form``'s checks.

Each checks that the jobs or queues it touches are the app's own, asks for a
confirmation where it changes many jobs or stops one (the form is shown again
with a confirm button when ``confirm=yes`` is missing, which the page's script
otherwise asks for in a dialog), then redirects back with a notice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.responses import RedirectResponse, Response

from .._records import JobState
from ..cli._base import parse_duration
from ._app import Dashboard, Refused
from ._paths import safe_next, under

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["actions"]

Fields = dict[str, list[str]]


def _one(fields: Fields, name: str) -> str:
    return (fields.get(name) or [""])[0]


def _back(request: Request, fields: Fields, done: str, n: int | None = None) -> Response:
    target = safe_next(_one(fields, "next"))
    sep = "&" if "?" in target else "?"
    extra = f"done={done}" + (f"&n={n}" if n is not None else "")
    return RedirectResponse(under(request, f"{target}{sep}{extra}"), status_code=303)


def _confirm(
    dashboard: Dashboard, request: Request, fields: Fields, title: str, message: str
) -> Response | None:
    """``None`` when the form says ``confirm=yes``; else the page that asks."""
    if _one(fields, "confirm") == "yes":
        return None
    hidden = [
        (k, v) for k, values in fields.items() if k not in ("csrf", "confirm") for v in values
    ]
    return dashboard.render(
        request,
        "confirm.html",
        title=title,
        message=message,
        hidden=hidden,
        action=request.url.path,
    )


async def retry(dashboard: Dashboard, request: Request) -> Response:
    """Retry the dead jobs ``job`` (one or more, as selected)."""
    fields = await dashboard.form(request)
    ids = [i for i in fields.get("job", []) if i]
    if not ids:
        raise Refused(400, "select at least one dead job to retry")
    for job_id in ids:
        await dashboard.own_job(job_id)
    if len(ids) > 1 and (
        asked := _confirm(
            dashboard,
            request,
            fields,
            "Retry selected jobs",
            f"Put {len(ids)} dead jobs back in their queues?",
        )
    ):
        return asked
    retried = await dashboard.admin.retry(ids)
    return _back(request, fields, "retried", len(retried))


async def retry_all(dashboard: Dashboard, request: Request) -> Response:
    """Retry every dead job of ``queue`` (or of every queue of the app)."""
    fields = await dashboard.form(request)
    queue = _one(fields, "queue")
    queues = [await dashboard.check_queue(queue)] if queue else await dashboard.own_queues()
    where = f"queue {queue}" if queue else "every queue of this app"
    if asked := _confirm(
        dashboard,
        request,
        fields,
        "Retry all dead jobs",
        f"Put every dead job of {where} back in its queue?",
    ):
        return asked
    total = 0
    for name in queues:
        total += await dashboard.admin.retry_all(queue=name)
    return _back(request, fields, "retried", total)


async def purge(dashboard: Dashboard, request: Request) -> Response:
    """Delete the dead jobs of ``queue`` (or every queue) that died more than ``older_than`` ago."""
    fields = await dashboard.form(request)
    queue = _one(fields, "queue")
    queues = [await dashboard.check_queue(queue)] if queue else await dashboard.own_queues()
    text = _one(fields, "older_than") or "7d"
    try:
        age = parse_duration(text)
    except ValueError as exc:
        raise Refused(400, str(exc)) from None
    where = f"queue {queue}" if queue else "every queue of this app"
    if asked := _confirm(
        dashboard,
        request,
        fields,
        "Purge dead jobs",
        f"Delete for good the dead jobs of {where} that died more than {text} ago?",
    ):
        return asked
    total = 0
    for name in queues:
        total += await dashboard.admin.purge(states=[JobState.DEAD], older_than=age, queue=name)
    return _back(request, fields, "purged", total)


async def cancel(dashboard: Dashboard, request: Request) -> Response:
    """Cancel the job ``job``."""
    fields = await dashboard.form(request)
    job = await dashboard.own_job(_one(fields, "job"))
    if asked := _confirm(
        dashboard, request, fields, "Cancel job", f"Cancel job {job.id} ({job.name})?"
    ):
        return asked
    await dashboard.admin.cancel(job.id, by="dashboard")
    return _back(request, fields, "cancelled")


async def pause(dashboard: Dashboard, request: Request) -> Response:
    """Pause the queue ``queue``."""
    fields = await dashboard.form(request)
    queue = await dashboard.check_queue(_one(fields, "queue"))
    await dashboard.admin.pause(queue)
    return _back(request, fields, "paused")


async def resume(dashboard: Dashboard, request: Request) -> Response:
    """Resume the queue ``queue``."""
    fields = await dashboard.form(request)
    queue = await dashboard.check_queue(_one(fields, "queue"))
    await dashboard.admin.resume(queue)
    return _back(request, fields, "resumed")


async def run_cron(dashboard: Dashboard, request: Request) -> Response:
    """Enqueue the job of the cron schedule ``schedule`` now, with the schedule's payload."""
    fields = await dashboard.form(request)
    schedule = dashboard.app.cron_schedules.get(_one(fields, "schedule"))
    if schedule is None:
        raise Refused(
            404, f"the app {dashboard.app.name!r} has no cron schedule {_one(fields, 'schedule')!r}"
        )
    handle = await schedule.handler.enqueue(schedule.payload, queue=schedule.queue)
    target = dashboard.url(request, "job", {"done": "enqueued"}, job_id=handle.id)
    return RedirectResponse(target, status_code=303)


actions: dict[str, Callable[[Dashboard, Request], Awaitable[Response]]] = {
    "retry": retry,
    "retry-all": retry_all,
    "purge": purge,
    "cancel": cancel,
    "pause": pause,
    "resume": resume,
    "run-cron": run_cron,
}
