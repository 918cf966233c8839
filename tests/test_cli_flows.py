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


async def test_enqueue_after_stores_a_waiting_child_of_each_parent() -> None:
    first = await note.enqueue(Note("a"), delay=3600)
    second = await note.enqueue(Note("b"), delay=3600)
    made = await asyncq(
        "enqueue", APP, "note", '{"text": "c"}', "--after", first.id, "--after", second.id,
        "--after-failure", "run", "--json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    out = json.loads(made.stdout)
    assert out["state"] == "waiting"
    shown = json.loads((await asyncq("job", APP, out["id"], "--json")).stdout)
    assert sorted(p["id"] for p in shown["parents"]) == sorted([first.id, second.id])
    assert shown["after_failure"] == "run"


async def test_enqueue_after_an_unknown_parent_stores_nothing_and_says_which() -> None:
    made = await asyncq("enqueue", APP, "note", '{"text": "c"}', "--after", "no-such-job")
    assert made.exit_code == 1
    assert "no-such-job" in made.stderr
    listed = json.loads((await asyncq("jobs", APP, "--json")).stdout)
    assert listed == []


async def test_enqueue_after_failure_needs_after() -> None:
    made = await asyncq("enqueue", APP, "note", "--after-failure", "run")
    assert made.exit_code == 2
    assert "--after-failure goes with --after" in made.stderr
