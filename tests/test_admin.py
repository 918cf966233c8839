"""``app.admin``: the operator verbs in Python, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import msgspec
import pytest

from asyncq import (
    Admin,
    App,
    ConfigurationError,
    EnqueueArgs,
    JobContext,
    JobNotFound,
    JobState,
    ValidationError,
)
from asyncq.backends.base import Backend
from asyncq.testing import run_until_idle

pytestmark = pytest.mark.anyio


class Resize(msgspec.Struct):
    image: str
    width: int


class Note(msgspec.Struct):
    text: str = ""


@pytest.fixture
def app(backend: Backend) -> App:
    app = App("admin-test", backend=backend)

    @app.job(schema=Resize, name="resize", queue="images", max_attempts=1)
    async def resize(payload: Resize, ctx: JobContext) -> int:
        await ctx.progress(0.25)
        if payload.width <= 0:
            raise ValueError(f"width must be > 0, got {payload.width}")
        return payload.width

    @app.job(schema=Note, name="note")
    async def note(payload: Note) -> str:
        return payload.text

    return app


async def kill(app: App, *widths: int) -> list[str]:
    """Enqueue resize jobs that fail and run them to the dead letters; their ids."""
    ids = [(await app.admin.enqueue("resize", {"image": "x", "width": w})).id for w in widths]
    with anyio.fail_after(20):
        await run_until_idle(app, queues=["images"])
    return ids


def test_admin_is_one_per_app() -> None:
    app = App("admin-test", backend="memory://")
    assert isinstance(app.admin, Admin)
    assert app.admin is app.admin
    assert repr(app.admin) == "Admin('admin-test')"


async def test_status_counts_every_queue_of_the_app_and_the_store(app: App) -> None:
    admin = app.admin
    empty = await admin.status()
    assert [q.queue for q in empty.queues] == ["default", "images"]
    assert all(set(q.counts.values()) == {0} for q in empty.queues)
    assert empty.cron == []
    assert empty.backend == app.backend.url

    await kill(app, -1)
    await admin.enqueue("note", {}, queue="elsewhere")
    status = await admin.status()
    queues = {q.queue: q for q in status.queues}
    assert list(queues) == ["default", "elsewhere", "images"]
    assert queues["images"].counts[JobState.DEAD] == 1
    assert queues["elsewhere"].counts[JobState.QUEUED] == 1
    age = queues["elsewhere"].oldest_ready_age
    assert age is not None
    assert 0 <= age < 30
    assert queues["images"].oldest_ready_age is None
    assert queues["images"].completed_per_minute is None

    only = await admin.status(["images"])
    assert [q.queue for q in only.queues] == ["images"]


async def test_status_throughput_from_two_snapshots(app: App) -> None:
    admin = app.admin
    before = await admin.status()
    await admin.enqueue("resize", {"image": "x", "width": 3})
    await kill(app, 0)
    after = await admin.status(previous=before)
    images = next(q for q in after.queues if q.queue == "images")
    elapsed_minutes = (after.at - before.at) / 60
    assert images.completed_per_minute == pytest.approx(1 / elapsed_minutes)
    assert images.dead_per_minute == pytest.approx(1 / elapsed_minutes)


async def test_jobs_and_job(app: App) -> None:
    admin = app.admin
    [dead] = await kill(app, -5)
    note = await admin.enqueue("note", {"text": "hi"})
    assert [j.id for j in await admin.jobs()] == [dead, note.id]
    [job] = await admin.jobs(state="dead")
    assert job.id == dead
    assert job.progress == 0.25
    assert job.last_error is not None
    assert job.last_error.one_line() == "ValueError: width must be > 0, got -5"
    assert [j.id for j in await admin.jobs(queue="default")] == [note.id]
    assert [j.id for j in await admin.jobs(name="resize")] == [dead]
    assert [j.id for j in await admin.jobs(after=dead)] == [note.id]
    assert [j.id for j in await admin.jobs(limit=1)] == [dead]
    full = await admin.job(dead)
    assert full.errors[0].traceback is not None
    assert "Traceback" in full.errors[0].traceback
    with pytest.raises(JobNotFound):
        await admin.job("nope")


async def test_retry_by_id_gives_fresh_attempts_and_skips_the_rest(app: App) -> None:
    admin = app.admin
    dead, other = await kill(app, -1, -2)
    live = await admin.enqueue("note", {})
    assert await admin.retry([dead, dead, "nope", live.id]) == [dead]
    job = await admin.job(dead)
    assert (job.state, job.attempts, job.finished_at) == (JobState.QUEUED, 0, None)
    assert (await admin.job(other)).state is JobState.DEAD
    assert await admin.retry([]) == []


async def test_retry_all_in_batches_reports_progress(app: App) -> None:
    admin = app.admin
    ids = await kill(app, -1, -2, -3, -4, -5)
    seen: list[int] = []
    assert await admin.retry_all(queue="images", batch=2, progress=seen.append) == 5
    assert seen == [2, 4, 5]
    assert {(await admin.job(i)).state for i in ids} == {JobState.QUEUED}
    assert await admin.retry_all() == 0
    await kill(app)  # the retried jobs run and die again
    assert await admin.retry_all(name="note") == 0
    assert await admin.retry_all(name="resize") == 5


async def test_retry_all_ends_while_workers_keep_failing_the_jobs(app: App) -> None:
    admin = app.admin
    await kill(app, -1, -2, -3)
    with anyio.fail_after(20):
        async with app.worker(concurrency=4, poll_interval=0.05):
            # Each batch is retried and dies again at once; the walk still ends.
            total = await admin.retry_all(batch=1)
    assert total >= 3


async def test_purge_deletes_old_finished_jobs_in_batches(app: App) -> None:
    admin = app.admin
    dead = await kill(app, -1, -2, -3)
    done = await admin.enqueue("resize", {"image": "ok", "width": 2})
    pending = await admin.enqueue("note", {})
    await run_until_idle(app, queues=["images"])
    assert await admin.purge(states=["dead"], older_than=timedelta(days=7)) == 0
    seen: list[int] = []
    removed = await admin.purge(
        states=[JobState.DEAD, "completed"], older_than=0, batch=2, progress=seen.append
    )
    assert removed == 4
    assert seen == [2, 4]
    for job_id in [*dead, done.id]:
        with pytest.raises(JobNotFound):
            await admin.job(job_id)
    assert (await admin.job(pending.id)).state is JobState.QUEUED


async def test_purge_by_queue_and_refusals(app: App) -> None:
    admin = app.admin
    [dead] = await kill(app, -1)
    assert await admin.purge(states=["dead"], older_than=0, queue="default") == 0
    assert await admin.purge(states=["dead"], older_than=0, queue="images") == 1
    with pytest.raises(JobNotFound):
        await admin.job(dead)
    with pytest.raises(ValueError, match="not queued"):
        await admin.purge(states=["dead", "queued"], older_than=0)
    with pytest.raises(ValueError, match="at least one state"):
        await admin.purge(states=[], older_than=0)
    with pytest.raises(ValueError, match="'sleeping' is not a valid JobState"):
        await admin.purge(states=["sleeping"], older_than=0)


async def test_cancel(app: App) -> None:
    admin = app.admin
    later = await admin.enqueue("note", {}, delay=3600)
    assert (await admin.cancel(later.id)).state is JobState.CANCELLED
    [dead] = await kill(app, -1)
    assert (await admin.cancel(dead)).state is JobState.DEAD
    with pytest.raises(JobNotFound):
        await admin.cancel("nope")


async def test_pause_and_resume(app: App) -> None:
    admin = app.admin
    await admin.pause("images")
    handle = await admin.enqueue("resize", {"image": "x", "width": 1})
    assert (await run_until_idle(app, queues=["images"])).processed == 0
    [images] = (await admin.status(["images"])).queues
    assert images.paused
    assert images.counts[JobState.QUEUED] == 1
    await admin.resume("images")
    assert (await run_until_idle(app, queues=["images"])).processed == 1
    assert (await admin.job(handle.id)).state is JobState.COMPLETED
    assert "images" in await admin.queues()


async def test_a_queue_paused_before_its_first_job_is_known(app: App) -> None:
    await app.admin.pause("later")
    assert "later" in await app.admin.queues()
    [later] = (await app.admin.status(["later"])).queues
    assert later.paused


async def test_enqueue_validates_builtins_and_json(app: App, backend: Backend) -> None:
    admin = app.admin
    handle = await admin.enqueue("resize", {"image": "x", "width": 2}, priority=3, key="k")
    again = await admin.enqueue("resize", {"image": "x", "width": 2}, key="k")
    assert again.id == handle.id
    assert again.created is False
    job = await admin.job(handle.id)
    assert (job.priority, job.key, job.queue) == (3, "k", "images")
    with pytest.raises(ValidationError, match=r"Expected `int`, got `str` - at `\$.width`"):
        await admin.enqueue("resize", {"image": "x", "width": "2"})
    with pytest.raises(ValidationError, match="not valid JSON"):
        await admin.enqueue_json("resize", b"{")
    with pytest.raises(ValidationError, match=r"missing required field `image`"):
        await admin.enqueue_json("resize", '{"width": 1}')
    with pytest.raises(ConfigurationError, match="no job named 'resise'; its jobs: note, resize"):
        await admin.enqueue_json("resise", "{}")
    assert len(await backend.list_jobs()) == 1
    later = await admin.enqueue_json("note", '{"text": "t"}', delay=timedelta(hours=1))
    assert (await admin.job(later.id)).state is JobState.SCHEDULED


async def test_enqueue_takes_every_option_of_handler_enqueue(app: App) -> None:
    admin = app.admin
    at = datetime(2030, 1, 1, tzinfo=UTC)
    built = await admin.enqueue(
        "resize", {"image": "x", "width": 2}, at=at, timeout=9, max_attempts=4, queue="q"
    )
    job = await admin.job(built.id)
    assert (job.scheduled_at, job.timeout, job.max_attempts, job.queue) == (
        at.timestamp(),
        9.0,
        4,
        "q",
    )
    decoded = await admin.job(
        (await admin.enqueue_json("note", "{}", timeout=0.5, max_attempts=1)).id
    )
    assert (decoded.timeout, decoded.max_attempts) == (0.5, 1)
    with pytest.raises(ConfigurationError, match="job 'note': give delay= or at=, not both"):
        await admin.enqueue_json("note", "{}", delay=1, at=at)


async def test_enqueue_passes_named_options_through(app: App) -> None:
    admin = app.admin
    options: EnqueueArgs = {"priority": 5, "key": "k", "queue": "q", "timeout": 3.0}
    built = await admin.enqueue("note", {"text": "a"}, **options)
    decoded = await admin.enqueue_json("note", '{"text": "b"}', **options)
    assert decoded.id == built.id
    assert not decoded.created
    job = await admin.job(built.id)
    assert (job.priority, job.key, job.queue, job.timeout) == (5, "k", "q", 3.0)


async def test_migrate(app: App, backend: Backend) -> None:
    applied = await app.admin.migrate()
    if hasattr(backend, "migrate"):
        assert applied == []  # the fixture migrated the schema already
    else:
        assert applied is None
