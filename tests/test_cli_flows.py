"""``asyncq job`` shows parents and children, ``jobs --state waiting`` lists waiting jobs,
and ``status`` counts them, on every backend, text and ``--json``."""

from __future__ import annotations

import json

import pytest

from ops_app import Note, asyncq, note

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("lent")]

APP = "ops_app:app"


async def test_job_shows_parents_and_children_with_their_states() -> None:
    parent = await note.enqueue(Note("a"), delay=3600)
    child = await note.enqueue(Note("b"), after=[parent])
    shown = await asyncq("job", APP, child.id)
    assert shown.exit_code == 0, shown.output
    assert f"parents (1)\n  {parent.id}  scheduled" in shown.stdout
    shown = await asyncq("job", APP, parent.id)
    assert f"children (1)\n  {child.id}  waiting" in shown.stdout
    as_json = json.loads((await asyncq("job", APP, child.id, "--json")).stdout)
    assert as_json["state"] == "waiting"
    assert as_json["parents"] == [{"id": parent.id, "state": "scheduled"}]
    assert as_json["children"] == []
    assert as_json["after_failure"] == "dead"


async def test_jobs_lists_waiting_jobs_and_status_counts_them() -> None:
    parent = await note.enqueue(Note("a"), delay=3600)
    child = await note.enqueue(Note("b"), after=[parent], after_failure="run")
    listed = json.loads((await asyncq("jobs", APP, "--state", "waiting", "--json")).stdout)
    assert [job["id"] for job in listed] == [child.id]
    status = json.loads((await asyncq("status", APP, "--json")).stdout)
    (default,) = (q for q in status["queues"] if q["queue"] == "default")
    assert default["counts"]["waiting"] == 1
