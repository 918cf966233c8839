"""SQLite's ``list_jobs`` reads a window of ids first, then the filters' index: same answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncq import App
from asyncq.backends.sqlite import SQLiteBackend
from asyncq.backends.sqlite.admin_sql import LIST_WINDOW

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def test_dense_and_sparse_filters_page_alike(tmp_path: Path) -> None:
    app = App("listing", backend=SQLiteBackend(tmp_path / "jobs.db"))

    @app.job(schema=dict, name="big", queue="big")
    async def big(payload: dict[str, int]) -> None: ...

    @app.job(schema=dict, name="small", queue="small")
    async def small(payload: dict[str, int]) -> None: ...

    async with app:
        rare = [h.id for h in await small.enqueue_many([{"i": i} for i in range(3)])]
        many = [h.id for h in await big.enqueue_many([{"i": i} for i in range(LIST_WINDOW + 300)])]
        last = [h.id for h in await small.enqueue_many([{"i": i} for i in range(2)])]
        admin = app.admin
        assert [j.id for j in await admin.jobs(queue="small", newest=True)] == (rare + last)[::-1]
        assert [j.id for j in await admin.jobs(queue="small")] == rare + last
        for newest in (True, False):
            seen: list[str] = []
            after = None
            while page := await admin.jobs(queue="big", limit=700, after=after, newest=newest):
                seen += [j.id for j in page]
                after = page[-1].id
            assert seen == (many[::-1] if newest else many)
        tail = await admin.jobs(queue="small", newest=True, after=last[0])
        assert [j.id for j in tail] == rare[::-1]
