"""The dashboard's ASGI app, driven through httpx (no server, no browser) on memory and SQLite."""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from asyncq import App, ConfigurationError, JobState, Reject
from asyncq.backends.memory import MemoryBackend
from asyncq.backends.sqlite import SQLiteBackend
from asyncq.dashboard import dashboard
from asyncq.testing import run_until_idle

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ORIGIN = "http://testserver"
HOSTILE = {"a": "<script>alert(1)</script>", "b": "<img src=x onerror=alert(1)>"}


class Order(msgspec.Struct):
    id: str
    cents: int = 0


def make_app(backend: Any, name: str = "shop", queue: str = "orders") -> App:
    app = App(name, backend=backend, events=True)

    @app.job(schema=Order, name=f"{name}.charge", queue=queue, max_attempts=1)
    async def charge(payload: Order) -> dict[str, int]:
        if payload.cents < 0:
            raise Reject("<img src=x onerror=alert(2)> negative amount")
        return {"charged": payload.cents}

    @app.job(schema=dict, name=f"{name}.echo", queue=queue, max_attempts=1)
    async def echo(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    return app


@pytest.fixture(params=["memory", "sqlite"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[App]:
    backend = MemoryBackend() if request.param == "memory" else SQLiteBackend(tmp_path / "jobs.db")
    app = make_app(backend)
    async with app:
        yield app


def client(asgi: Any, base: str = ORIGIN) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url=base)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no form on the page"
    return found[1]


async def dead_job(app: App, cents: int = -1) -> str:
    handle = await app.handlers["shop.charge"].enqueue(Order("o-1", cents))
    await run_until_idle(app)
    return handle.id


async def test_every_page_answers(app: App) -> None:
    job_id = await dead_job(app)
    async with client(dashboard(app)) as http:
        for path in ["/", "/queues/orders", f"/jobs/{job_id}", "/workers", "/dead", "/cron"]:
            answer = await http.get(path)
            assert answer.status_code == 200, path
            assert "Content-Security-Policy" in answer.headers
        css = await http.get("/static/dashboard.css")
        assert css.status_code == 200
        assert "prefers-color-scheme: dark" in css.text
        assert (await http.get("/static/dashboard.js")).status_code == 200
        assert (await http.get("/static/icon.svg")).status_code == 200


async def test_the_overview_shows_counts_wait_and_pause(app: App) -> None:
    await app.handlers["shop.echo"].enqueue({"x": 1})
    await app.admin.pause("orders")
    async with client(dashboard(app)) as http:
        html = (await http.get("/")).text
    row = html[html.index('data-queue="orders"') :]
    assert '<span class="n" data-state="queued">1</span>' in row
    assert "paused" in row[:600]
    assert "none waiting" not in row[:3000]  # the oldest ready job's wait is shown
    assert "No worker is running" in html
    assert '<svg class="chart big"' in html


async def test_job_data_is_escaped(app: App) -> None:
    handle = await app.handlers["shop.echo"].enqueue(HOSTILE, meta={"who": "<b>x</b>"})
    job_id = await dead_job(app)
    async with client(dashboard(app)) as http:
        page = (await http.get(f"/jobs/{handle.id}")).text
        dead_page = (await http.get(f"/jobs/{job_id}")).text
        listing = (await http.get("/dead")).text
    for html in (page, dead_page, listing):
        assert "<script>alert" not in html
        assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in dead_page


async def test_mounted_under_a_prefix_every_link_keeps_it(app: App) -> None:
    fastapi = pytest.importorskip("fastapi")
    service = fastapi.FastAPI()
    service.mount("/queues", dashboard(app))
    job_id = await dead_job(app)
    async with client(service) as http:
        first = await http.get("/queues/")
        assert "Path=/queues/" in first.headers["set-cookie"]
        html = first.text
        assert 'href="/queues/static/dashboard.css"' in html
        assert 'href="/queues/queues/orders"' in html
        assert 'data-live="/queues/live?page=overview"' in html
        page = await http.get(f"/queues/jobs/{job_id}")
        assert page.status_code == 200
        assert 'action="/queues/action/retry"' in page.text
        answer = await http.post(
            "/queues/action/retry",
            data={"csrf": csrf_of(page.text), "job": job_id, "next": f"/jobs/{job_id}"},
            headers={"Origin": ORIGIN},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/queues/jobs/{job_id}?done=retried&n=1"
    assert (await app.admin.job(job_id)).state is JobState.QUEUED


async def test_an_action_needs_the_csrf_token_and_the_dashboards_origin(app: App) -> None:
    job_id = await dead_job(app)
    async with client(dashboard(app)) as http:
        csrf = csrf_of((await http.get(f"/jobs/{job_id}")).text)
        form = {"csrf": csrf, "job": job_id}
        no_token = await http.post(
            "/action/retry", data={"job": job_id}, headers={"Origin": ORIGIN}
        )
        assert no_token.status_code == 403
        assert "security token" in no_token.text
        # One character changed (to one the token does not start with).
        forged = ("y" if csrf.startswith("x") else "x") + csrf[1:]
        bad_token = await http.post("/action/retry", data={**form, "csrf": forged})
        assert bad_token.status_code == 403
        foreign = await http.post(
            "/action/retry", data=form, headers={"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        cross_site = await http.post(
            "/action/retry", data=form, headers={"Referer": "https://evil.example/page"}
        )
        assert cross_site.status_code == 403
        assert (await app.admin.job(job_id)).state is JobState.DEAD
        ok = await http.post("/action/retry", data=form, headers={"Origin": ORIGIN})
        assert ok.status_code == 303
    assert (await app.admin.job(job_id)).state is JobState.QUEUED
    kinds = [e.kind for e in await app.admin.history(job_id)]
    assert kinds[-1] == "retried"  # the operator's action is in the job's events


async def test_a_token_from_another_session_is_refused(app: App) -> None:
    job_id = await dead_job(app)
    asgi = dashboard(app)
    async with client(asgi) as first, client(asgi) as second:
        csrf = csrf_of((await first.get("/dead")).text)
        await second.get("/dead")
        answer = await second.post(
            "/action/retry", data={"csrf": csrf, "job": job_id}, headers={"Origin": ORIGIN}
        )
        assert answer.status_code == 403


async def test_read_only_shows_no_form_and_refuses_every_action(app: App) -> None:
    job_id = await dead_job(app)
    async with client(dashboard(app, read_only=True)) as http:
        html = (await http.get(f"/jobs/{job_id}")).text
        assert "read-only" in html
        assert "/action/" not in html
        assert "/action/" not in (await http.get("/dead")).text
        for verb in ["retry", "retry-all", "purge", "cancel", "pause", "resume", "run-cron"]:
            answer = await http.post(
                f"/action/{verb}", data={"job": job_id}, headers={"Origin": ORIGIN}
            )
            assert answer.status_code == 403, verb
    assert (await app.admin.job(job_id)).state is JobState.DEAD


async def test_authorize_refuses_whom_it_says(app: App) -> None:
    def sync_hook(request: Any) -> bool:
        return request.headers.get("x-admin") == "yes"

    async def async_hook(request: Any) -> bool:
        await anyio.lowlevel.checkpoint()
        return request.headers.get("x-admin") == "yes"

    for hook in (sync_hook, async_hook):
        async with client(dashboard(app, authorize=hook)) as http:
            assert (await http.get("/")).status_code == 403
            assert (await http.get("/", headers={"x-admin": "yes"})).status_code == 200
            assert (await http.post("/action/purge")).status_code == 403


async def test_the_token_signs_in_by_form_or_header(app: App) -> None:
    job_id = await dead_job(app)
    async with client(dashboard(app, token="t0ken")) as http:
        first = await http.get(f"/jobs/{job_id}")
        assert first.status_code == 303
        assert first.headers["location"] == f"/login?next=%2Fjobs%2F{job_id}"
        refused = await http.post("/action/retry", data={"job": job_id}, headers={"Origin": ORIGIN})
        assert refused.status_code == 401
        assert (await http.get("/live?page=overview&once=1")).status_code == 401
        login = await http.get(first.headers["location"])
        csrf = csrf_of(login.text)
        wrong = await http.post(
            "/login", data={"csrf": csrf, "token": "nope", "next": "/"}, headers={"Origin": ORIGIN}
        )
        assert wrong.status_code == 401
        right = await http.post(
            "/login",
            data={"csrf": csrf, "token": "t0ken", "next": f"/jobs/{job_id}"},
            headers={"Origin": ORIGIN},
        )
        assert right.status_code == 303
        assert right.headers["location"] == f"/jobs/{job_id}"
        assert (await http.get(f"/jobs/{job_id}")).status_code == 200
    async with client(dashboard(app, token="t0ken")) as http:
        bearer = await http.get("/", headers={"Authorization": "Bearer t0ken"})
        assert bearer.status_code == 200
        assert (await http.get("/", headers={"Authorization": "Bearer other"})).status_code == 303


async def test_signing_in_never_sends_the_browser_to_another_site(app: App) -> None:
    asgi = dashboard(app, token="t")
    for target in ["//evil.example/x", "https://evil.example", "/\\evil.example"]:
        async with client(asgi) as http:
            csrf = csrf_of((await http.get("/login")).text)
            answer = await http.post(
                "/login",
                data={"csrf": csrf, "token": "t", "next": target},
                headers={"Origin": ORIGIN},
            )
            assert answer.headers["location"] == "/"


async def test_no_action_touches_another_apps_queue(app: App) -> None:
    other = make_app(app.backend_spec, name="billing", queue="invoices")
    stranger = await other.handlers["billing.charge"].enqueue(Order("b-1", -5))
    await run_until_idle(other)
    assert (await other.admin.job(stranger.id)).state is JobState.DEAD
    async with client(dashboard(app)) as http:
        assert (await http.get(f"/jobs/{stranger.id}")).status_code == 404
        assert (await http.get("/queues/invoices")).status_code == 404
        assert stranger.id not in (await http.get("/dead")).text
        csrf = csrf_of((await http.get("/dead")).text)
        for verb, form in [
            ("retry", {"job": stranger.id}),
            ("cancel", {"job": stranger.id}),
            ("pause", {"queue": "invoices"}),
            ("retry-all", {"queue": "invoices", "confirm": "yes"}),
            ("purge", {"queue": "invoices", "older_than": "0s", "confirm": "yes"}),
        ]:
            answer = await http.post(
                f"/action/{verb}", data={"csrf": csrf, **form}, headers={"Origin": ORIGIN}
            )
            assert answer.status_code == 404, verb
        everything = await http.post(
            "/action/retry-all", data={"csrf": csrf, "confirm": "yes"}, headers={"Origin": ORIGIN}
        )
        assert everything.status_code == 303
    assert (await other.admin.job(stranger.id)).state is JobState.DEAD
    assert not (await other.admin.status(["invoices"])).queues[0].paused


async def test_retry_all_and_purge_ask_first(app: App) -> None:
    ids = [await dead_job(app) for _ in range(3)]
    async with client(dashboard(app)) as http:
        csrf = csrf_of((await http.get("/dead")).text)
        asked = await http.post(
            "/action/purge",
            data={"csrf": csrf, "queue": "orders", "older_than": "0s", "next": "/dead"},
            headers={"Origin": ORIGIN},
        )
        assert asked.status_code == 200
        assert 'name="confirm" value="yes"' in asked.text
        assert "Delete for good" in asked.text
        assert len(await app.admin.jobs(state="dead")) == 3
        asked = await http.post(
            "/action/retry-all", data={"csrf": csrf, "queue": "orders"}, headers={"Origin": ORIGIN}
        )
        assert "Put every dead job of queue orders back" in asked.text
        one = await http.post(
            "/action/retry",
            data={"csrf": csrf, "job": ids[0], "next": "/dead"},
            headers={"Origin": ORIGIN},
        )
        assert one.headers["location"] == "/dead?done=retried&n=1"
        purged = await http.post(
            "/action/purge",
            data={
                "csrf": csrf,
                "queue": "orders",
                "older_than": "0s",
                "confirm": "yes",
                "next": "/dead",
            },
            headers={"Origin": ORIGIN},
        )
        assert purged.headers["location"] == "/dead?done=purged&n=2"
        shown = (await http.get(purged.headers["location"])).text
        assert "2 dead job(s) deleted." in shown
        assert "No dead jobs." in shown
        bad_age = await http.post(
            "/action/purge",
            data={"csrf": csrf, "older_than": "soon", "confirm": "yes"},
            headers={"Origin": ORIGIN},
        )
        assert bad_age.status_code == 400


async def test_the_queue_page_pages_newest_first_by_cursor(app: App) -> None:
    echo = app.handlers["shop.echo"]
    handles = [
        await echo.enqueue({"i": i}, meta={"tenant": "acme" if i % 2 else "zeta"})
        for i in range(120)
    ]
    newest = [h.id for h in reversed(handles)]
    async with client(dashboard(app)) as http:
        first = (await http.get("/queues/orders")).text
        shown = re.findall(r'<a href="/jobs/([0-9a-f]+)">', first)
        assert shown == newest[:50]
        cursor = re.search(r'after=([0-9a-f]+)" rel="next"', first)
        assert cursor
        assert cursor[1] == newest[49]
        second = (await http.get(f"/queues/orders?after={cursor[1]}")).text
        assert re.findall(r'<a href="/jobs/([0-9a-f]+)">', second) == newest[50:100]
        acme = (
            await http.get("/queues/orders?meta=tenant%3Dacme&state=queued&name=shop.echo")
        ).text
        found = re.findall(r'<a href="/jobs/([0-9a-f]+)">', acme)
        assert found == [h.id for h in reversed(handles[1::2])][:50]
        empty = (await http.get("/queues/orders?state=dead")).text
        assert "No job matches these filters." in empty
        assert (await http.get("/queues/orders?state=bogus")).status_code == 400


async def test_the_live_stream_sends_the_pages_fragment(app: App) -> None:
    job_id = await dead_job(app)
    async with client(dashboard(app)) as http:
        answer = await http.get("/live?page=overview&once=1")
        assert answer.headers["content-type"].startswith("text/event-stream")
        data = answer.text.split("event: update\ndata: ", 1)[1].split("\n\n", 1)[0]
        fragment = msgspec.json.decode(data)["live-overview"]
        assert 'data-queue="orders"' in fragment
        job = await http.get(f"/live?page=job&job={job_id}&once=1")
        data = job.text.split("data: ", 1)[1].split("\n\n", 1)[0]
        html = msgspec.json.decode(data)["live-job"]
        assert "&lt;img src=x" in html
        assert f'name="next" value="/jobs/{job_id}"' in html  # its forms go back to the page
        assert '<span class="kind">dead</span>' in html  # the timeline comes with the stream
        assert (await http.get("/live?page=nope")).status_code == 404


async def test_cron_page_runs_a_schedule_now(tmp_path: Path) -> None:
    pytest.importorskip("croniter")
    app = make_app(MemoryBackend())

    @app.cron("0 3 * * *", name="nightly", payload=Order("nightly"))
    @app.job(schema=Order, name="report", queue="orders")
    async def report(payload: Order) -> None:
        return None

    async with app, client(dashboard(app)) as http:
        html = (await http.get("/cron")).text
        assert "nightly" in html
        assert "never" in html
        answer = await http.post(
            "/action/run-cron",
            data={"csrf": csrf_of(html), "schedule": "nightly"},
            headers={"Origin": ORIGIN},
        )
        assert answer.status_code == 303
        job_id = answer.headers["location"].split("/jobs/")[1].split("?")[0]
        assert (await app.admin.job(job_id)).name == "report"
        missing = await http.post(
            "/action/run-cron",
            data={"csrf": csrf_of(html), "schedule": "nope"},
            headers={"Origin": ORIGIN},
        )
        assert missing.status_code == 404


async def test_the_chart_counts_from_events_or_from_counters(tmp_path: Path) -> None:
    from asyncq.dashboard._monitor import Monitor

    for events in (True, False):
        app = make_app(SQLiteBackend(tmp_path / f"{events}.db"))
        app.writes_events = events
        app.use_backend(SQLiteBackend(tmp_path / f"{events}.db"))
        async with app:
            monitor = Monitor()
            backend = await app.backend_opened()
            await monitor.observe(backend, await app.admin.status())
            for cents in (1, 2, -1):
                await app.handlers["shop.charge"].enqueue(Order("x", cents))
            await run_until_idle(app)
            status = await app.admin.status()
            await monitor.observe(backend, status)
            series = monitor.per_minute(["orders"], status.at)
            assert monitor.source == ("events" if events else "counters")
            assert sum(c for c, _ in series) == 2
            assert sum(d for _, d in series) == 1


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jinja2", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'asyncq\[dashboard\]'"):
        dashboard(App("x"))


async def test_the_timeline_comes_after_the_page_or_in_it_when_asked(app: App) -> None:
    job_id = await dead_job(app)
    async with client(dashboard(app)) as http:
        page = (await http.get(f"/jobs/{job_id}")).text
        assert "data-timeline-pending" in page
        assert f'href="/jobs/{job_id}?timeline=1"' in page
        inline = (await http.get(f"/jobs/{job_id}?timeline=1")).text
    assert "data-timeline-pending" not in inline
    kinds = re.findall(r'<span class="kind">(\w+)</span>', inline)
    assert kinds == ["enqueued", "started", "dead"]


async def test_the_queue_page_streams_its_counts_and_jobs(app: App) -> None:
    handle = await app.handlers["shop.echo"].enqueue({"x": 1})
    async with client(dashboard(app)) as http:
        page = (await http.get("/queues/orders?state=queued")).text
        assert 'data-live="/live?page=queue&amp;queue=orders&amp;state=queued"' in page
        answer = await http.get("/live?page=queue&queue=orders&state=queued&once=1")
        html = msgspec.json.decode(answer.text.split("data: ", 1)[1].split("\n\n", 1)[0])
        fragment = html["live-queue"]
        assert handle.id in fragment
        assert 'name="next" value="/queues/orders?state=queued"' in fragment
        assert (await http.get("/live?page=queue&queue=invoices&once=1")).status_code == 404


async def test_pause_resume_and_cancel_from_the_pages(app: App) -> None:
    handle = await app.handlers["shop.echo"].enqueue({"x": 1})
    async with client(dashboard(app)) as http:
        page = (await http.get("/queues/orders")).text
        csrf = csrf_of(page)
        form = {"csrf": csrf, "queue": "orders", "next": "/queues/orders"}
        paused = await http.post("/action/pause", data=form, headers={"Origin": ORIGIN})
        assert paused.headers["location"] == "/queues/orders?done=paused"
        shown = (await http.get(paused.headers["location"])).text
        assert "Queue paused" in shown
        assert 'action="/action/resume"' in shown
        assert (await app.admin.status(["orders"])).queues[0].paused
        await http.post("/action/resume", data=form, headers={"Origin": ORIGIN})
        assert not (await app.admin.status(["orders"])).queues[0].paused
        job_page = (await http.get(f"/jobs/{handle.id}")).text
        assert "data-confirm=" in job_page  # the page's script asks before cancelling
        cancel = {"csrf": csrf, "job": handle.id, "next": f"/jobs/{handle.id}"}
        asked = await http.post("/action/cancel", data=cancel, headers={"Origin": ORIGIN})
        assert "Cancel job" in asked.text
        assert (await app.admin.job(handle.id)).state is JobState.QUEUED
        done = await http.post(
            "/action/cancel", data={**cancel, "confirm": "yes"}, headers={"Origin": ORIGIN}
        )
        assert done.headers["location"] == f"/jobs/{handle.id}?done=cancelled"
    assert (await app.admin.job(handle.id)).state is JobState.CANCELLED
    assert (await app.admin.history(handle.id))[-1].by == "dashboard"


async def test_an_unknown_page_and_a_removed_job_have_error_pages(app: App) -> None:
    async with client(dashboard(app)) as http:
        missing = await http.get("/nowhere")
        assert missing.status_code == 404
        assert "no such page" in missing.text
        assert 'href="/"' in missing.text
        job = await http.get("/jobs/0123456789abcdef")
        assert job.status_code == 404
        assert (
            "No job &#39;0123456789abcdef&#39; in the queues of the app &#39;shop&#39;" in job.text
        )
    async with client(dashboard(app, authorize=lambda request: False)) as http:
        assert (await http.get("/nowhere")).status_code == 403


async def test_signing_out_ends_the_session(app: App) -> None:
    async with client(dashboard(app, token="t", read_only=True)) as http:
        csrf = csrf_of((await http.get("/login")).text)
        signed = await http.post(
            "/login", data={"csrf": csrf, "token": "t"}, headers={"Origin": ORIGIN}
        )
        assert signed.status_code == 303
        page = (await http.get("/")).text
        assert "Sign out" in page
        out = await http.post("/logout", data={"csrf": csrf_of(page)}, headers={"Origin": ORIGIN})
        assert out.status_code == 303
        assert (await http.get("/")).status_code == 303  # back to the sign-in form


async def test_ids_and_queue_names_of_any_characters_link_back_to_themselves(
    tmp_path: Path,
) -> None:
    app = make_app(MemoryBackend(), queue="mail & more/eu?")
    async with app, client(dashboard(app)) as http:
        handle = await app.handlers["shop.echo"].enqueue({"x": 1}, id="order #1?/x")
        overview = (await http.get("/")).text
        link = re.search(r'href="(/queues/[^"]+)"', overview)
        assert link
        queue_page = await http.get(link[1].replace("&amp;", "&"))
        assert queue_page.status_code == 200
        job_link = re.search(r'<a href="(/jobs/[^"]+)">', queue_page.text)
        assert job_link
        assert job_link[1] == "/jobs/order%20%231%3F/x"
        job_page = await http.get(job_link[1])
        assert job_page.status_code == 200
        assert handle.id in job_page.text


async def test_limits_and_circuits_get_a_panel_when_the_store_has_them(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    status = app.admin.status

    async def with_flow_control(*args: Any, **kwargs: Any) -> Any:
        found = await status(*args, **kwargs)
        limit = SimpleNamespace(name="stripe", key="acct-1", running=2, concurrency=5, rate=10.0)
        circuit = SimpleNamespace(name="<b>smtp</b>", state="half_open", failures=(1.0, 2.0))
        return SimpleNamespace(
            at=found.at, backend=found.backend, queues=found.queues, limits=[limit],
            circuits=[circuit],
        )  # fmt: skip

    async with client(dashboard(app)) as http:
        plain = (await http.get("/")).text
        assert "Circuit breakers" not in plain
        monkeypatch.setattr(app.admin, "status", with_flow_control)
        html = (await http.get("/")).text
    assert "<h2>Limits</h2>" in html
    assert "2/5" in html
    assert "10 per 1 s" in html
    assert "&lt;b&gt;smtp&lt;/b&gt;" in html
    assert '<span class="badge circuit-half_open">half open</span>' in html


async def test_a_job_with_parents_and_children_links_to_them(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = await app.handlers["shop.echo"].enqueue({"x": 1})
    record = await app.admin.job(handle.id)

    class WithRelatives:  # a record of a store that keeps job dependencies
        parents = ("p-1", "p-2")
        children = ("c-1",)

        def __getattr__(self, name: str) -> Any:
            return getattr(record, name)

    async def job(job_id: str) -> Any:
        return WithRelatives()

    async with client(dashboard(app)) as http:
        assert "Dependencies" not in (await http.get(f"/jobs/{handle.id}")).text
        monkeypatch.setattr(app.admin, "job", job)
        html = (await http.get(f"/jobs/{handle.id}")).text
    assert "<h2>Dependencies</h2>" in html
    assert 'href="/jobs/p-2"' in html
    assert 'href="/jobs/c-1"' in html


async def test_a_held_job_says_what_holds_it(app: App) -> None:
    api = app.limit("api", rate=0.5)

    async def rated(payload: dict[str, Any]) -> None:
        return None

    handler = app.job(schema=dict, name="shop.rated", queue="orders", limits=[api])(rated)
    first, second = await handler.enqueue_many([{"n": 1}, {"n": 2}])
    backend = await app.backend_opened()
    (lease,) = await backend.claim(["orders"], 10, worker="w", lease_for=60)
    held = second.id if lease.job.id == first.id else first.id
    async with client(dashboard(app)) as http:
        html = (await http.get(f"/jobs/{held}")).text
        overview = (await http.get("/")).text
    assert '<span class="big-badge"><span class="badge state-queued">queued</span>' in html
    assert "<dt>Held</dt><dd data-held>rate limit api: it starts at the time it booked" in html
    assert "<dt>Due</dt>" in html
    row = overview[overview.index('data-queue="orders"') :]
    assert '<span class="n" data-state="queued">1</span>' in row
