"""``asyncq remove`` and ``asyncq jobs --newest`` on every backend, text and ``--json``.

Run in-process against ``tests/ops_app.py``, like ``test_cli_ops.py``.
"""

from __future__ import annotations

import json

import anyio
import pytest

import ops_app
from asyncq import JobState
from asyncq.backends.base import Backend
from ops_app import Note, app, asyncq, note

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("lent")]

APP = "ops_app:app"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


async def test_remove_deletes_pending_jobs_and_frees_their_key(lent: Backend) -> None:
    first = await note.enqueue(Note("a"), key="k1")
    later = await note.enqueue(Note("b"), delay=3600)
    result = await asyncq("remove", APP, first.id, later.id)
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"removed job {first.id} (it was queued)\nremoved job {later.id} (it was scheduled)\n"
    )
    assert await lent.get(first.id) is None
    assert await lent.get(later.id) is None
    again = await note.enqueue(Note("c"), key="k1")
    assert again.created
    assert again.id != first.id


async def test_remove_reports_unknown_ids_with_exit_1_and_json(lent: Backend) -> None:
    handle = await note.enqueue(Note())
    result = await asyncq("remove", APP, handle.id, "nope", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == [
        {"id": handle.id, "state": "queued", "outcome": "removed"},
        {"id": "nope", "state": None, "outcome": "not found"},
    ]
    assert error_lines(result.stderr) == ["Error: no job with id 'nope'"]
    assert await lent.get(handle.id) is None


async def test_remove_refuses_a_running_job_and_says_to_cancel_it_first(lent: Backend) -> None:
    async with app.worker(concurrency=1, heartbeat=0.05, poll_interval=0.2):
        handle = await note.enqueue(Note("hold"))
        with anyio.fail_after(20):
            await ops_app.holding.wait()
        result = await asyncq("remove", APP, handle.id)
        assert result.exit_code == 1
        assert result.stdout == ""
        assert error_lines(result.stderr) == [
            f"Error: job {handle.id} (note, queue 'default') is running, so it was not removed:"
            f" cancel it first (asyncq cancel {handle.id}), then remove it once it has stopped"
        ]
        as_json = await asyncq("remove", APP, handle.id, "--json")
        assert as_json.exit_code == 1
        assert json.loads(as_json.stdout) == [
            {"id": handle.id, "state": "active", "outcome": "running"}
        ]
        job = await lent.get(handle.id)
        assert job is not None
        assert job.state is JobState.ACTIVE
        assert (await asyncq("cancel", APP, handle.id)).exit_code == 0
        with anyio.fail_after(20):
            await lent.wait_finished(handle.id)
    removed = await asyncq("remove", APP, handle.id)
    assert removed.exit_code == 0, removed.output
    assert removed.stdout == f"removed job {handle.id} (it was cancelled)\n"


async def test_remove_needs_an_id() -> None:
    result = await asyncq("remove", APP)
    assert result.exit_code == 2


async def test_jobs_newest_lists_and_pages_newest_first() -> None:
    handles = [await note.enqueue(Note(str(i))) for i in range(3)]
    first = await asyncq("jobs", APP, "--newest", "--limit", "2", "--json")
    assert first.exit_code == 0, first.output
    assert [j["id"] for j in json.loads(first.stdout)] == [handles[2].id, handles[1].id]
    rest = await asyncq("jobs", APP, "--newest", "--after", handles[1].id, "--json")
    assert [j["id"] for j in json.loads(rest.stdout)] == [handles[0].id]
    text = await asyncq("jobs", APP, "--newest", "--limit", "2")
    assert f"next page: --newest --after {handles[1].id}" in text.stderr
    rows = text.stdout.splitlines()[1:]
    assert [row.split()[0] for row in rows] == [handles[2].id, handles[1].id]
