"""The dashboard in a real browser (headless Chromium), against a real worker on SQLite and Redis.

Each test serves the dashboard with uvicorn, runs ``asyncq run`` in a process
of its own, and waits on what the page shows (Playwright's ``expect``), never
on a sleep. With ``ASYNCQ_SCREENSHOTS=1`` the SQLite run saves the screenshots
of docs/dashboard.md into docs/images/dashboard/.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest

import dashboard_app
from _browser import SCREENSHOTS, browser_or_skip, serving, worker_process
from asyncq import JobState
from asyncq.backends import from_url
from asyncq.dashboard import dashboard

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(120)]

WAIT = 20_000  # ms: what the page must show within, on a loaded CI machine


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    manager, browser = browser_or_skip()
    try:
        yield browser
    finally:
        browser.close()
        manager.stop()  # the Playwright driver


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    url = f"{request.getfixturevalue('redis_url')}?namespace=t{uuid.uuid4().hex[:12]}"
    yield url

    async def drop() -> None:
        backend = from_url(url)
        await backend.open()
        await backend.drop()  # type: ignore[attr-defined]
        await backend.close()

    blocking(anyio.run, drop)


@pytest.fixture
def app(store_url: str) -> Iterator[Any]:
    app = dashboard_app.build(store_url)
    try:
        yield app
    finally:
        blocking(app.sync.close)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT)
    context = browser.new_context(viewport={"width": 1360, "height": 900}, color_scheme="light")
    page = context.new_page()
    page.set_default_timeout(WAIT)
    yield page
    context.close()


def blocking(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in another thread: Playwright's sync API runs an event loop in this one,
    and ``app.sync`` refuses to block a thread that runs one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result(timeout=60)


def shoot(page: Any, store_url: str, name: str, **options: Any) -> None:
    """Save a screenshot of the page for the docs (SQLite runs with ASYNCQ_SCREENSHOTS=1)."""
    if os.environ.get("ASYNCQ_SCREENSHOTS") and store_url.startswith("sqlite"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), **options)


def dead_job(app: Any, gate: Path) -> str:
    """Enqueue a ``flaky`` job whose gate is closed; return its id (it dies when run)."""
    return blocking(app.sync.enqueue, app.handlers["flaky"], dashboard_app.Gate(str(gate))).id


def test_the_overview_counts_change_while_the_jobs_run(app: Any, page: Any, store_url: str) -> None:
    from playwright.sync_api import expect

    blocking(
        app.sync.enqueue_many, app.handlers["step"], [dashboard_app.Step(n) for n in range(30)]
    )
    with serving(dashboard(app)) as base:
        page.goto(base + "/")
        row = page.locator("tr[data-queue='work']")
        expect(row.locator("[data-state='queued']")).to_have_text("30")
        expect(row.locator("[data-state='completed']")).to_have_text("0")
        page.evaluate("window.notReloaded = true")
        with worker_process(store_url):
            expect(row.locator("[data-state='completed']")).to_have_text("30")
            expect(row.locator("[data-state='queued']")).to_have_text("0")
            expect(page.locator("[data-total='workers']")).to_have_text("1")
            assert page.evaluate("window.notReloaded") is True  # updated live, not reloaded
            expect(page.locator("#live-status")).to_have_class("live-dot on")
            shoot(page, store_url, "overview", full_page=True)
            page.emulate_media(color_scheme="dark")
            shoot(page, store_url, "overview-dark", full_page=True)
            page.emulate_media(color_scheme="light")
            page.goto(base + "/workers")
            expect(page.locator("table.workers")).to_contain_text("running")
            shoot(page, store_url, "workers")
        page.goto(base + "/queues/work")
        expect(page.locator("table.jobs tbody tr")).to_have_count(30)
        shoot(page, store_url, "queue")
        page.locator("table.jobs tbody tr a").first.click()
        expect(page.locator("#live-job .big-badge")).to_have_text("completed")
        expect(page.locator("#live-job")).to_contain_text('"square"')
        expect(page.locator("#live-job .logs")).to_contain_text("ran")
        expect(page.locator("#live-job .timeline")).to_contain_text("completed")
        page.goto(base + "/cron")
        expect(page.locator("table.cron")).to_contain_text("nightly-report")
        shoot(page, store_url, "cron")


def test_a_dead_job_retried_from_its_page_completes(
    app: Any, page: Any, store_url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    gate = tmp_path / "gate"
    job_id = dead_job(app, gate)
    with serving(dashboard(app)) as base, worker_process(store_url):
        blocking(app.sync.call, _wait_state, app, job_id, JobState.DEAD)
        page.goto(base + "/dead")
        expect(page.locator("table.jobs")).to_contain_text(job_id)
        shoot(page, store_url, "dead-letters")
        page.get_by_role("link", name=job_id).click()
        expect(page.locator("#live-job .big-badge")).to_have_text("dead")
        expect(page.locator("#live-job .errors")).to_contain_text("RuntimeError: the gate")
        expect(page.locator("#live-job .errors details")).to_contain_text("Traceback")
        shoot(page, store_url, "job-dead", full_page=True)
        gate.touch()
        page.get_by_role("button", name="Retry").click()
        expect(page.locator(".notice")).to_contain_text("1 dead job(s) put back")
        expect(page.locator("#live-job .big-badge")).to_have_text("completed")
        expect(page.locator("#live-job .timeline")).to_contain_text("retried")
        expect(page.locator("#live-job .timeline")).to_contain_text("by operator")
        shoot(page, store_url, "job", full_page=True)
    assert blocking(state_of, app, job_id) is JobState.COMPLETED


def test_purging_asks_first_and_keeps_the_jobs_when_cancelled(
    app: Any, page: Any, store_url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    ids = [dead_job(app, tmp_path / "closed") for _ in range(3)]
    with serving(dashboard(app)) as base, worker_process(store_url):
        for job_id in ids:
            blocking(app.sync.call, _wait_state, app, job_id, JobState.DEAD)
        page.goto(base + "/dead")
        expect(page.locator("table.jobs tbody tr")).to_have_count(3)
        page.get_by_role("textbox", name="Age").fill("0s")
        page.get_by_role("button", name="Purge").click()
        dialog = page.locator("dialog#confirm")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("Delete for good")
        shoot(page, store_url, "purge-confirm")
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()
        expect(page.locator("table.jobs tbody tr")).to_have_count(3)
        page.get_by_role("button", name="Purge").click()
        page.keyboard.press("Enter")  # the confirm button has the focus
        expect(page.locator(".notice")).to_contain_text("3 dead job(s) deleted")
        expect(page.locator(".empty")).to_contain_text("No dead jobs")
    for job_id in ids:
        assert blocking(state_of, app, job_id) is None


def test_read_only_shows_no_action_and_refuses_a_forged_one(
    app: Any, page: Any, store_url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    job_id = dead_job(app, tmp_path / "closed")
    with worker_process(store_url):
        blocking(app.sync.call, _wait_state, app, job_id, JobState.DEAD)
    with serving(dashboard(app, read_only=True)) as base:
        page.goto(base + f"/jobs/{job_id}")
        expect(page.locator("#live-job .big-badge")).to_have_text("dead")
        expect(page.locator(".tools .pill")).to_have_text("read-only")
        expect(page.get_by_role("button", name="Retry")).to_have_count(0)
        page.goto(base + "/dead")
        expect(page.get_by_role("button", name="Purge")).to_have_count(0)
        answer = page.request.post(
            base + "/action/retry", form={"job": job_id}, headers={"Origin": base}
        )
        assert answer.status == 403
        assert "read-only" in answer.text()
    assert blocking(state_of, app, job_id) is JobState.DEAD


def test_the_token_is_asked_for_and_an_action_without_it_refused(
    app: Any, page: Any, store_url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    job_id = dead_job(app, tmp_path / "closed")
    with worker_process(store_url):
        blocking(app.sync.call, _wait_state, app, job_id, JobState.DEAD)
    with serving(dashboard(app, token="s3cret-token")) as base:
        answer = page.request.post(
            base + "/action/retry", form={"job": job_id}, headers={"Origin": base}
        )
        assert answer.status == 401
        page.goto(base + f"/jobs/{job_id}")
        expect(page).to_have_url(f"{base}/login?next=%2Fjobs%2F{job_id}")
        shoot(page, store_url, "login")
        page.get_by_label("Token").fill("wrong")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator(".notice.bad")).to_contain_text("not the dashboard's token")
        page.get_by_label("Token").fill("s3cret-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#live-job .big-badge")).to_have_text("dead")
        expect(page.get_by_role("button", name="Retry")).to_be_visible()
    assert blocking(state_of, app, job_id) is JobState.DEAD


def test_a_hostile_payload_renders_as_text(app: Any, page: Any, store_url: str) -> None:
    from playwright.sync_api import expect

    hostile = {
        "script": "<script>alert(1)</script>",
        "img": "<img src=x onerror=alert(1)>",
        "reject": "<img src=x onerror=alert(2)>",
    }
    job_id = blocking(app.sync.enqueue, app.handlers["echo"], hostile).id
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    with serving(dashboard(app)) as base, worker_process(store_url):
        page.goto(base + f"/jobs/{job_id}")
        expect(page.locator("#live-job .big-badge")).to_have_text("dead")
        payload = page.locator("[data-payload]")
        expect(payload).to_contain_text("<script>alert(1)</script>")
        expect(payload).to_contain_text("<img src=x onerror=alert(1)>")
        expect(page.locator("#live-job .errors")).to_contain_text("<img src=x onerror=alert(2)>")
        assert page.locator("#live-job img, #live-job script").count() == 0
        page.goto(base + "/queues/mail?state=dead")
        expect(page.locator("table.jobs")).to_contain_text("onerror=alert(2)")
        page.goto(base + "/dead")
        expect(page.locator("table.jobs")).to_contain_text("onerror=alert(2)")
        assert page.locator("main img").count() == 0
    assert dialogs == []


async def _wait_state(app: Any, job_id: str, state: JobState) -> None:
    """Until the job is in ``state`` (woken by its completion where the store pushes it)."""
    backend = await app.backend_opened()
    with anyio.fail_after(30):
        while (await app.admin.job(job_id)).state is not state:
            await backend.wait_finished(job_id)


def state_of(app: Any, job_id: str) -> JobState | None:
    """The job's state now, ``None`` when the store has no such job."""

    async def read() -> JobState | None:
        job = await (await app.backend_opened()).get(job_id)
        return None if job is None else job.state

    result: JobState | None = app.sync.call(read)
    return result
