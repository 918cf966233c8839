"""The dashboard's pages: an ASGI app (Starlette) over ``app.admin``.

Every page reads the store through the ``Admin`` verbs, so it works on each
store the same way; the pages and their live fragments share one context
builder each, so what a page shows first and what it streams later agree.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.applications import Starlette
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._records import JobState, WorkerStatus
from ..exceptions import JobNotFound
from ._monitor import Monitor
from ._paths import here, safe_next, under
from ._security import Guard, Session
from ._views import circuit_row, environment, limit_row, parse_meta, serves

if TYPE_CHECKING:
    from starlette.requests import Request

    from .._app import App

__all__ = ["FILTERS", "Dashboard", "Refused"]

STATIC = Path(__file__).parent / "static"
#: Rows on one page of a job list.
PAGE_SIZE = 50
#: The largest form body an action reads.
MAX_FORM = 256 * 1024
#: The query parameters of the queue page's filters and cursor (its live stream keeps them).
FILTERS = ("state", "name", "meta", "after")
#: How many characters of a filter the pages take.
MAX_FILTER = 400

_NOTICES = {
    "retried": "{n} dead job(s) put back in their queue.",
    "purged": "{n} dead job(s) deleted.",
    "cancelled": "Cancel requested.",
    "paused": "Queue paused: workers skip it until it is resumed.",
    "resumed": "Queue resumed.",
    "enqueued": "Job enqueued.",
    "signed-out": "Signed out.",
}


class Refused(Exception):
    """A request the dashboard answers with an error page: its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Page = Callable[["Request"], Awaitable[Response]]


class Dashboard:
    """The pages of one app's dashboard, and the checks every request passes."""

    def __init__(self, app: App, *, read_only: bool, guard: Guard) -> None:
        self.app = app
        self.admin = app.admin
        self.read_only = read_only
        self.guard = guard
        self.monitor = Monitor()
        self.env = environment()

    # -- the queues this dashboard may show and act on -----------------------------

    async def own_queues(self) -> list[str]:
        """The app's queues (its jobs' and schedules'); an app declaring none owns its store's."""
        own = self.admin.app_queues()
        return own or await self.admin.queues()

    async def check_queue(self, queue: str) -> str:
        """``queue`` if it is one of the app's, else a 404 naming the app."""
        if queue not in await self.own_queues():
            msg = f"the app {self.app.name!r} has no queue {queue!r}"
            raise Refused(404, msg)
        return queue

    async def own_job(self, job_id: str) -> Any:
        """The job ``job_id`` if it exists and is in one of the app's queues, else a 404."""
        try:
            job = await self.admin.job(job_id)
        except JobNotFound:
            job = None
        if job is None or job.queue not in await self.own_queues():
            msg = f"no job {job_id!r} in the queues of the app {self.app.name!r}"
            raise Refused(404, msg)
        return job

    # -- rendering -------------------------------------------------------------------

    def url(
        self, request: Request, name: str, query: Mapping[str, Any] | None = None, **params: Any
    ) -> str:
        """The path of route ``name`` under the dashboard's mount, with a query string."""
        # Job ids and queue names are the caller's: any character, encoded in the path.
        quoted = {key: quote(str(value), safe="/") for key, value in params.items()}
        path = str(request.url_for(name, **quoted).path)
        pairs = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        return f"{path}?{urlencode(pairs, doseq=True)}" if pairs else path

    def context(self, request: Request, **values: Any) -> dict[str, Any]:
        session: Session = request.state.session
        done = request.query_params.get("done", "")
        notice = _NOTICES.get(done, "").format(n=_int(request.query_params.get("n"), 0))
        return {
            "request": request,
            "app_name": self.app.name,
            "read_only": self.read_only,
            "has_token": self.guard.token is not None,
            "signed_in": session.signed_in,
            "csrf": self.guard.csrf_token(session),
            "url": lambda name, query=None, **params: self.url(request, name, query, **params),
            "static": lambda path: self.url(request, "static", path=path),
            "here": here(request),
            "notice": notice,
            "now": time.time(),
            "has_cron": bool(self.app.cron_schedules),
            **values,
        }

    def render(
        self, request: Request, template: str, code: int = 200, **values: Any
    ) -> HTMLResponse:
        html = self.env.get_template(template).render(self.context(request, **values))
        return HTMLResponse(html, status_code=code, headers=_HEADERS)

    def fragment(self, request: Request, template: str, values: dict[str, Any]) -> str:
        return self.env.get_template(template).render(self.context(request, **values))

    # -- the gate every request passes --------------------------------------------------

    def page(self, fn: Callable[[Request], Awaitable[Response]]) -> Page:
        """``fn`` behind the checks: ``authorize``, then the token (the login form if needed)."""

        async def endpoint(request: Request) -> Response:
            session = self.guard.session(request)
            request.state.session = session
            try:
                if not await self.guard.authorized(request):
                    raise Refused(403, "you are not allowed to see this dashboard")
                if not self.guard.signed_in(request, session):
                    if request.method == "GET" and not request.url.path.rstrip("/").endswith(
                        "/live"
                    ):
                        target = self.url(request, "login", {"next": here(request)})
                        response: Response = RedirectResponse(target, status_code=303)
                    else:
                        raise Refused(401, "sign in with the dashboard's token first")
                else:
                    response = await fn(request)
            except Refused as refused:
                response = self.render(
                    request, "error.html", code=refused.status, message=refused.message
                )
            if session.fresh:
                self.guard.set_cookie(response, request, session)
            return response

        return endpoint

    async def form(self, request: Request, *, acting: bool = True) -> dict[str, list[str]]:
        """The posted form (``application/x-www-form-urlencoded``), after the CSRF checks.

        ``acting``: the form changes the store (refused in read-only mode).
        """
        if acting and self.read_only:
            raise Refused(
                403, "this dashboard is read-only: it shows the queues but changes nothing"
            )
        if not self.guard.same_origin(request):
            raise Refused(403, "refused: the form was not posted from this dashboard")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise Refused(413, "the form is too large")
        fields: dict[str, list[str]] = {}
        for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            fields.setdefault(key, []).append(value)
        given = (fields.get("csrf") or [""])[0]
        if not self.guard.csrf_ok(request.state.session, given):
            raise Refused(
                403,
                "refused: the form's security token is missing or stale; "
                "reload the page and try again",
            )
        return fields

    # -- pages -------------------------------------------------------------------------

    async def overview_values(self, request: Request) -> dict[str, Any]:
        queues = await self.own_queues()
        status = await self.admin.status(queues)
        backend = await self.app.backend_opened()
        await self.monitor.observe(backend, status)
        now = status.at
        workers = [w for w in await self.admin.workers() if serves(w, self.app.name, queues)]
        running = [w for w in workers if w.status(now) is WorkerStatus.RUNNING]
        totals = {state: sum(q.counts.get(state, 0) for q in status.queues) for state in JobState}
        return {
            "status": status,
            "queues": status.queues,
            "totals": totals,
            "charts": {
                q.queue: self.monitor.chart([q.queue], now, width=180, height=36)
                for q in status.queues
            },
            "chart": self.monitor.chart(queues, now, width=720, height=140),
            "source": self.monitor.source,
            "workers": running,
            "busy": sum(len(w.running) for w in running),
            "capacity": sum(w.concurrency for w in running),
            "backend_url": status.backend,
            # Flow control, once the store keeps it (limits and circuit breakers).
            "limits": [limit_row(item) for item in getattr(status, "limits", ())],
            "circuits": [circuit_row(item) for item in getattr(status, "circuits", ())],
        }

    async def overview(self, request: Request) -> Response:
        return self.render(request, "overview.html", **await self.overview_values(request))

    async def queue_values(self, request: Request) -> dict[str, Any]:
        """The queue page's values: its counts and one page of its jobs, as the filters say."""
        queue = await self.check_queue(request.path_params["queue"])
        params = request.query_params
        state = params.get("state") or None
        if state is not None and state not in JobState.__members__.values():
            raise Refused(400, f"{state!r} is not a state: use one of {', '.join(JobState)}")
        name = (params.get("name") or "")[:MAX_FILTER] or None
        meta_text = (params.get("meta") or "")[:MAX_FILTER]
        meta = parse_meta(meta_text)
        after = params.get("after") or None
        rows = await self.admin.jobs(
            state=state,
            queue=queue,
            name=name,
            meta=meta,
            limit=PAGE_SIZE + 1,
            after=after,
            newest=True,
        )
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        (status,) = (await self.admin.status([queue])).queues
        filters = {"state": state, "name": name, "meta": meta_text or None}
        return {
            "queue": status,
            "jobs": rows,
            "filters": filters,
            "after": after,
            "next_after": rows[-1].id if more and rows else None,
            "names": sorted(h.name for h in self.app.handlers.values() if h.options.queue == queue),
        }

    async def queue(self, request: Request) -> Response:
        return self.render(request, "queue.html", **await self.queue_values(request))

    async def job_values(self, request: Request, *, history: bool = True) -> dict[str, Any]:
        """The job page's values; its timeline only with ``history`` (see ``job``)."""
        job = await self.own_job(request.path_params["job_id"])
        return {
            "job": job,
            "history": await self._history(request, job) if history else None,
            # Sections that appear when the store keeps them (job dependencies).
            "parents": list(getattr(job, "parents", ()) or ()),
            "children": list(getattr(job, "children", ()) or ()),
        }

    async def _history(self, request: Request, job: Any) -> list[Any]:
        """The job's events, read again only when its record changed since the last read
        for this request (a live stream asks once a second)."""
        seen = (job.state, job.attempts, job.progress, job.finished_at, len(job.logs))
        cached = getattr(request.state, "history", None)
        if cached is not None and cached[0] == seen:
            return cached[1]  # type: ignore[no-any-return]
        events = await self.admin.history(job.id)
        request.state.history = (seen, events)
        return events

    async def job(self, request: Request) -> Response:
        """The job page. Its timeline comes with the live stream's first update, after
        the page: a store may read a job's events from its queue's whole stream since
        the job was made (Redis), which the page need not wait for. ``?timeline=1``
        puts it in the page (without scripts)."""
        inline = request.query_params.get("timeline") == "1"
        return self.render(request, "job.html", **await self.job_values(request, history=inline))

    async def workers_values(self, request: Request) -> dict[str, Any]:
        queues = await self.own_queues()
        workers = [w for w in await self.admin.workers() if serves(w, self.app.name, queues)]
        now = time.time()
        order = {WorkerStatus.RUNNING: 0, WorkerStatus.STOPPED: 1, WorkerStatus.LOST: 2}
        rows = sorted(
            ((w, w.status(now)) for w in workers), key=lambda r: (order[r[1]], -r[0].started_at)
        )
        return {"workers": rows}

    async def workers(self, request: Request) -> Response:
        return self.render(request, "workers.html", **await self.workers_values(request))

    async def dead(self, request: Request) -> Response:
        own = await self.own_queues()
        queue = request.query_params.get("queue") or None
        if queue is not None:
            await self.check_queue(queue)
        after = request.query_params.get("after") or None
        rows = await self.admin.jobs(
            state=JobState.DEAD, queue=queue, limit=PAGE_SIZE + 1, after=after, newest=True
        )
        more = len(rows) > PAGE_SIZE
        page = rows[:PAGE_SIZE]
        status = await self.admin.status(own)
        return self.render(
            request,
            "dead.html",
            jobs=[job for job in page if job.queue in own],
            queue=queue,
            queues=own,
            counts={q.queue: q.counts.get(JobState.DEAD, 0) for q in status.queues},
            after=after,
            next_after=page[-1].id if more and page else None,
        )

    async def cron(self, request: Request) -> Response:
        status = await self.admin.status(await self.own_queues())
        schedules = []
        for item in status.cron:
            last = await self.admin.jobs(name=item.job, queue=item.queue, newest=True, limit=1)
            schedules.append((item, last[0] if last else None))
        return self.render(request, "cron.html", schedules=schedules)

    # -- live updates ---------------------------------------------------------------------

    # -- signing in --------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        session: Session = request.state.session
        next_path = safe_next(request.query_params.get("next"))
        error = None
        status = 200
        if request.method == "POST":
            if not self.guard.same_origin(request):
                raise Refused(403, "refused: the form was not posted from this dashboard")
            body = (await request.body())[:MAX_FORM].decode("utf-8", "replace")
            fields = dict(parse_qsl(body, keep_blank_values=True))
            next_path = safe_next(fields.get("next"))
            if not self.guard.csrf_ok(session, fields.get("csrf", "")):
                error, status = "The form expired: try again.", 403
            elif self.guard.token_ok(fields.get("token", "")):
                fresh = Session(Guard.new_id(), signed_in=True, fresh=True)
                response = RedirectResponse(under(request, next_path), status_code=303)
                self.guard.set_cookie(response, request, fresh)
                return response
            else:
                error, status = "That is not the dashboard's token.", 401
        return self.render(request, "login.html", code=status, error=error, next=next_path)

    async def logout(self, request: Request) -> Response:
        await self.form(request, acting=False)
        response = RedirectResponse(
            self.url(request, "login", {"done": "signed-out"}), status_code=303
        )
        self.guard.set_cookie(
            response, request, Session(Guard.new_id(), signed_in=False, fresh=True)
        )
        return response

    # -- the ASGI app ---------------------------------------------------------------------

    def asgi(self) -> Starlette:
        from ._actions import actions
        from ._live import live

        pages = [
            Route("/", self.page(self.overview), name="overview"),
            Route("/queues/{queue:path}", self.page(self.queue), name="queue"),
            Route("/jobs/{job_id:path}", self.page(self.job), name="job"),
            Route("/workers", self.page(self.workers), name="workers"),
            Route("/dead", self.page(self.dead), name="dead"),
            Route("/cron", self.page(self.cron), name="cron"),
            Route("/live", self.page(_bound(self, live)), name="live"),
            Route("/login", self._open(self.login), name="login", methods=["GET", "POST"]),
            Route("/logout", self.page(self.logout), name="logout", methods=["POST"]),
            *[
                Route(
                    f"/action/{verb}",
                    self.page(_bound(self, fn)),
                    name=f"action-{verb}",
                    methods=["POST"],
                )
                for verb, fn in actions.items()
            ],
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        return Starlette(routes=pages, exception_handlers={404: self._not_found})

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        """An unknown path: the dashboard's own error page, to those who may see it."""
        request.state.session = self.guard.session(request)
        if not await self.guard.authorized(request):
            return Response("Forbidden", status_code=403)
        message = "there is no such page in this dashboard"
        return self.render(request, "error.html", code=404, message=message)

    def _open(self, fn: Page) -> Page:
        """``fn`` with a session but without the token check (the login form itself)."""

        async def endpoint(request: Request) -> Response:
            session = self.guard.session(request)
            request.state.session = session
            try:
                if not await self.guard.authorized(request):
                    raise Refused(403, "you are not allowed to see this dashboard")
                response = await fn(request)
            except Refused as refused:
                response = self.render(
                    request, "error.html", code=refused.status, message=refused.message
                )
            if session.fresh:
                self.guard.set_cookie(response, request, session)
            return response

        return endpoint


# Pages are never cached, framed by other sites or sniffed into another type;
# scripts and styles come only from the dashboard itself.
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}


def _bound(dashboard: Dashboard, fn: Callable[[Dashboard, Request], Awaitable[Response]]) -> Page:
    async def endpoint(request: Request) -> Response:
        return await fn(dashboard, request)

    return endpoint


def _int(text: str | None, default: int) -> int:
    try:
        return int(text or default)
    except ValueError:
        return default
