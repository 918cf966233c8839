"""The integration examples run: FastAPI (httpx.ASGITransport) and a WSGI app on ``app.sync``."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import anyio
import pytest

pytestmark = pytest.mark.anyio


async def test_fastapi_service() -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("pydantic")
    httpx = pytest.importorskip("httpx")
    from examples import fastapi_service as service

    transport = httpx.ASGITransport(app=service.api)
    with anyio.fail_after(20):
        # ASGITransport sends no lifespan events: enter the app's lifespan as a server would.
        async with (
            service.lifespan(service.api),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            first = await client.post("/orders/o-1/charge", params={"cents": 500})
            assert first.status_code == 202
            again = await client.post("/orders/o-1/charge", params={"cents": 500})
            assert again.json() == {"job": first.json()["job"], "created": False}
            job_id = first.json()["job"]
            receipt = await service.charge.get_job(job_id).result(timeout=10)
            assert receipt == service.Receipt(order_id="o-1", charged=500)
            status = await client.get(f"/jobs/{job_id}")
            assert status.json()["state"] == "completed"
            assert (await client.get("/jobs/nope")).status_code == 404
            quote = await client.post("/quotes", json={"items": [1, 2, 3]})
            assert quote.json() == {"total": 6}
            refused = await client.post("/orders/o-2/charge", params={"cents": 0})
            assert refused.status_code == 422


async def test_starlette_service() -> None:
    pytest.importorskip("starlette")
    httpx = pytest.importorskip("httpx")
    from examples import starlette_service as service

    transport = httpx.ASGITransport(app=service.web)
    with anyio.fail_after(20):
        async with (
            service.lifespan(service.web),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            accepted = await client.post("/thumbnails", json={"image": "cat.png", "width": 64})
            assert accepted.status_code == 202
            job_id = accepted.json()["job"]
            made = await service.make_thumbnail.get_job(job_id).result(timeout=10)
            assert made == service.Made(path="/thumbs/64/cat.png", width=64)
            status = await client.get(f"/jobs/{job_id}")
            assert status.json() == {"state": "completed", "attempts": 1}
            assert (await client.get("/jobs/nope")).status_code == 404
            now = await client.post("/thumbnails/now", json={"image": "dog.png", "width": 32})
            assert now.json() == {"path": "/thumbs/32/dog.png", "width": 32}
            refused = await client.post("/thumbnails", json={"image": "cat.png", "width": "x"})
            assert refused.status_code == 422
            assert "width" in refused.json()["error"]


def call(app: Any, method: str, path: str, body: Any = None) -> tuple[str, Any]:
    """One WSGI request, as a server thread would make it."""
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path}
    setup_testing_defaults(environ)
    data = b"" if body is None else json.dumps(body).encode()
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(data), str(len(data))
    answer: list[str] = []
    chunks = app(environ, lambda status, headers: answer.append(status))
    return answer[0], json.loads(b"".join(chunks))


@pytest.fixture
def wsgi_jobs(tmp_path: Path) -> Iterator[Any]:
    from examples import wsgi_sync

    wsgi_sync.jobs.use_backend(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield wsgi_sync
    wsgi_sync.jobs.sync.close()
    wsgi_sync.jobs.use_backend(None)


def test_wsgi_app_on_app_sync_from_many_threads(wsgi_jobs: Any) -> None:
    app = wsgi_jobs.application
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda n: call(app, "POST", "/emails", {"to": f"u{n}@x", "subject": "hi"}),
                range(24),
            )
        )
    assert {status for status, _ in answers} == {"202 Accepted"}
    ids = {body["job"] for _, body in answers}
    assert len(ids) == 24
    assert call(app, "GET", f"/jobs/{ids.pop()}") == ("200 OK", {"state": "queued"})
    assert call(app, "GET", "/jobs/nope")[0] == "404 Not Found"

    # A worker in a thread of its own (its own loop) answers the waiting requests.
    started, stop = threading.Event(), threading.Event()

    async def work() -> None:
        async with wsgi_jobs.jobs.worker(concurrency=4):
            started.set()
            await anyio.to_thread.run_sync(stop.wait)

    worker = threading.Thread(target=asyncio.run, args=(work(),))
    worker.start()
    try:
        assert started.wait(20)
        with ThreadPoolExecutor(4) as pool:
            waited = list(
                pool.map(
                    lambda n: call(app, "POST", "/emails/wait", {"to": f"w{n}@x", "subject": "s"}),
                    range(8),
                )
            )
        assert waited[3] == ("200 OK", {"result": "sent 's' to w3@x"})
    finally:
        stop.set()
        worker.join(20)
