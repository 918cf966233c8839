"""Sync code and asyncq: a WSGI app (what Flask and Django serve) enqueueing through ``app.sync``.

No event loop in the web process: each request thread calls the blocking API,
which runs on a background loop the app owns. Serve it with any WSGI server::

    ASYNCQ_BACKEND=redis://127.0.0.1:6379/0 python examples/wsgi_sync.py   # wsgiref, port 8000
    asyncq run examples.wsgi_sync:jobs                                        # the worker
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from asyncq import App, JobNotFound

jobs = App("wsgi-shop", backend=os.environ.get("ASYNCQ_BACKEND"))


class Email(msgspec.Struct):
    to: str
    subject: str


@jobs.job(schema=Email, name="shop.send_email", queue="mail")
async def send_email(payload: Email) -> str:
    return f"sent {payload.subject!r} to {payload.to}"


StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """``POST /emails`` enqueues (202), ``POST /emails/wait`` waits, ``GET /jobs/<id>`` reads."""
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
    status, body = "404 Not Found", {"error": "not found"}
    if method == "POST" and path in ("/emails", "/emails/wait"):
        size = int(environ.get("CONTENT_LENGTH") or 0)
        email = msgspec.json.decode(environ["wsgi.input"].read(size), type=Email)
        if path == "/emails":
            handle = jobs.sync.enqueue(send_email, email)
            status, body = "202 Accepted", {"job": handle.id}
        else:
            result = jobs.sync.enqueue_and_wait(send_email, email, timeout=10)
            status, body = "200 OK", {"result": result}
    elif method == "GET" and path.startswith("/jobs/"):
        try:
            info = jobs.sync.get_job(path.removeprefix("/jobs/")).info()
            status, body = "200 OK", {"state": info.state.value}
        except JobNotFound:
            status, body = "404 Not Found", {"error": "no such job"}
    payload = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json")])
    return [payload]


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    with make_server("127.0.0.1", 8000, application) as server:
        server.serve_forever()
