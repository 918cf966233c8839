"""Then: docs/fastapi.md's Starlette endpoint enqueues (202) and refuses a bad body (422)."""

import httpx
from examples.starlette_service import jobs as thumbnails
from starlette.applications import Starlette
from starlette.routing import Route

from asyncq.testing import in_memory


async def _posted() -> None:
    routes = [Route("/thumbnails", request_thumbnail, methods=["POST"])]  # noqa: F821 - the sample's
    transport = httpx.ASGITransport(app=Starlette(routes=routes))
    async with (
        in_memory(thumbnails),
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
    ):
        made = await c.post("/thumbnails", json={"image": "cat.png", "width": 64})
        assert made.status_code == 202, made.text
        [job] = await thumbnails.admin.jobs()
        assert (job.id, job.name) == (made.json()["job"], "thumbnails.make")
        refused = await c.post("/thumbnails", json={"image": "cat.png"})
        assert refused.status_code == 422, refused.text
        assert "width" in refused.json()["error"], refused.text


# test_docs.py runs this with an await allowed at the top level
await _posted()  # noqa: F704
