"""Removing jobs through the Python API (``JobHandle.remove``, ``Admin.remove``), and
what waiters for a removed job see, on every backend."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from asyncq import App, JobActive, JobNotFound, JobState
from asyncq.backends.base import Backend
from backends._waits import all_blocked

pytestmark = pytest.mark.anyio

BOUND = 20.0


class Note(msgspec.Struct):
    text: str = ""


@pytest.fixture
def app(backend: Backend) -> App:
    return App("removal-test", backend=backend)


async def test_handle_remove_says_whether_there_was_a_job(app: App) -> None:
    @app.job(schema=Note, name="note")
    async def note(payload: Note) -> str:
        return payload.text

    with anyio.fail_after(BOUND):
        handle = await note.enqueue(Note("a"), id="note-1", key="k")
        assert await handle.remove() is True
        assert await handle.remove() is False
        with pytest.raises(JobNotFound, match="removed"):
            await handle.info()
        again = await note.enqueue(Note("b"), id="note-1", key="k")
        assert again.created
        assert (await again.info()).state is JobState.QUEUED


async def test_waiting_for_a_removed_job_ends_with_job_not_found(app: App) -> None:
    @app.job(schema=Note, name="note")
    async def note(payload: Note) -> str:
        return payload.text

    with anyio.fail_after(BOUND):
        handle = await note.enqueue(Note(), delay=3600)
        errors: list[BaseException] = []

        async def wait_result() -> None:
            try:
                await handle.result()
            except JobNotFound as exc:
                errors.append(exc)

        async def wait_request() -> None:
            try:
                await note.enqueue_and_wait(Note(), id="asked", delay=3600)
            except JobNotFound as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_result)
            tg.start_soon(wait_request)
            await all_blocked()
            while len(await app.admin.jobs()) < 2:  # the request's job is stored
                await all_blocked()
            removed = await app.admin.remove([handle.id, "asked", "nope"])
            assert removed == {
                handle.id: JobState.SCHEDULED,
                "asked": JobState.SCHEDULED,
                "nope": None,
            }
        assert {exc.job_id for exc in errors if isinstance(exc, JobNotFound)} == {
            "asked",
            handle.id,
        }


async def test_a_running_job_is_refused_with_what_to_do(app: App) -> None:
    started = anyio.Event()
    release = anyio.Event()

    @app.job(schema=Note, name="slow", queue="work")
    async def slow(payload: Note) -> str:
        started.set()
        await release.wait()
        return "done"

    with anyio.fail_after(BOUND):
        async with app.worker(concurrency=1, queues=["work"], heartbeat=0.05):
            handle = await slow.enqueue(Note())
            await started.wait()
            with pytest.raises(JobActive) as refused:
                await handle.remove()
            assert refused.value.job_id == handle.id
            message = str(refused.value)
            assert f"job {handle.id} (slow, queue 'work') is running" in message
            assert f"asyncq cancel {handle.id}" in message
            assert await app.admin.remove([handle.id]) == {handle.id: JobState.ACTIVE}
            release.set()
            assert await handle.result() == "done"
        assert await handle.remove() is True


async def test_admin_jobs_newest_first(app: App) -> None:
    @app.job(schema=Note, name="note")
    async def note(payload: Note) -> str:
        return payload.text

    with anyio.fail_after(BOUND):
        ids = [(await note.enqueue(Note(str(i)))).id for i in range(3)]
        newest = await app.admin.jobs(newest=True, limit=2)
        assert [j.id for j in newest] == [ids[2], ids[1]]
        older = await app.admin.jobs(newest=True, after=ids[1])
        assert [j.id for j in older] == [ids[0]]
        assert await app.admin.remove([]) == {}
