"""The live updates: server-sent events carrying a page's fragment each time it changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from markupsafe import escape
from starlette.responses import Response, StreamingResponse

from ._app import FILTERS, Dashboard, Refused
from ._monitor import wait_for_change
from ._paths import here_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request

__all__ = ["live"]


async def live(dashboard: Dashboard, request: Request) -> Response:
    """Server-sent events: the page's live fragment, each time it changes.

    Woken by the store's job events where it keeps them, else polled every
    few seconds; at most one update a second. ``?once=1`` sends one and ends.
    """
    kind = request.query_params.get("page", "")
    builders: dict[str, tuple[Callable[[Request], Awaitable[dict[str, Any]]], str]] = {
        "overview": (dashboard.overview_values, "_overview.html"),
        "workers": (dashboard.workers_values, "_workers.html"),
        "job": (dashboard.job_values, "_job.html"),
        "queue": (dashboard.queue_values, "_queue.html"),
    }
    if kind not in builders:
        raise Refused(404, f"no live page {kind!r}")
    build, template = builders[kind]
    # The fragment's forms go back to the page it is part of, not to this stream.
    here = {"overview": "/", "workers": "/workers"}.get(kind, "")
    if kind == "job":
        job_id = request.query_params.get("job", "")
        request.path_params["job_id"] = job_id
        await dashboard.own_job(job_id)
        here = here_of(request, dashboard.url(request, "job", job_id=job_id))
    elif kind == "queue":
        queue = request.query_params.get("queue", "")
        request.path_params["queue"] = await dashboard.check_queue(queue)
        kept = {k: v for k, v in request.query_params.items() if k in FILTERS}
        here = here_of(request, dashboard.url(request, "queue", kept, queue=queue))
    once = request.query_params.get("once") == "1"
    backend = await dashboard.app.backend_opened()
    queues = await dashboard.own_queues()

    async def stream() -> AsyncIterator[bytes]:
        last = ""
        yield b"retry: 3000\n\n"
        while True:
            try:
                html = dashboard.fragment(request, template, {**await build(request), "here": here})
            except Refused as refused:  # the job was removed meanwhile
                html = f"<p class='empty'>{escape(refused.message)}</p>"
            if html != last:
                last = html
                data = msgspec.json.encode({f"live-{kind}": html}).decode()
                yield f"event: update\ndata: {data}\n\n".encode()
            else:
                yield b": still here\n\n"
            if once:
                return
            await wait_for_change(backend, queues, dashboard.monitor.cursor)
            if kind != "overview":  # the overview moves the cursor; the others follow it
                await dashboard.monitor.observe(backend, await dashboard.admin.status(queues))
            await anyio.sleep(1.0)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
