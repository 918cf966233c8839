"""``asyncq limits`` and ``asyncq circuit open|close``: flow control for operators.

Commands run in-process against ``tests/ops_app.py`` on the parametrized
backend, as in ``test_cli_ops.py``; the limits and circuits are the store's.
"""

from __future__ import annotations

import json
import time

import anyio
import pytest
from msgspec.structs import replace

from asyncq._records import Breaker, Gate, JobRecord, new_job_id
from asyncq.backends.base import Backend
from ops_app import asyncq

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("lent")]

APP = "ops_app:app"
BOUND = 20.0
QUEUE = "default"


def job() -> JobRecord:
    """A ``note`` job asked for now, as a producer submits it."""
    now = time.time()
    return JobRecord(
        id=new_job_id(),
        name="note",
        queue=QUEUE,
        payload=b"\x80",
        enqueued_at=now,
        scheduled_at=now,
    )


async def test_no_limits_yet() -> None:
    result = await asyncq("limits", APP)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("no limits")
    listed = await asyncq("limits", APP, "--json")
    assert json.loads(listed.stdout) == {"limits": [], "circuits": []}


async def test_limits_show_running_and_held_jobs(lent: Backend) -> None:
    with anyio.fail_after(BOUND):
        gate = Gate(name="tenant", key="acme", concurrency=1)
        await lent.enqueue([replace(job(), limits=(gate,)) for _ in range(3)])
        assert len(await lent.claim([QUEUE], 5, worker="w", lease_for=60)) == 1
        table = await asyncq("limits", APP)
        listed = await asyncq("limits", APP, "--json")
        status = await asyncq("status", APP, "--json")
    assert table.exit_code == 0, table.output
    header, row = table.stdout.splitlines()[:2]
    assert header.split() == ["LIMIT", "QUEUE", "RUNNING", "HELD", "RATE", "TOKENS"]
    assert row.split()[0] == "tenant[acme]"
    assert row.split()[2:4] == ["1/1", "2"]
    (found,) = json.loads(listed.stdout)["limits"]
    assert (found["slot"], found["key"], found["running"], found["held"]) == (
        "tenant[acme]",
        "acme",
        1,
        2,
    )
    assert json.loads(status.stdout)["limits"][0]["held"] == 2


async def test_an_operator_opens_and_closes_a_circuit(lent: Backend) -> None:
    with anyio.fail_after(BOUND):
        await lent.enqueue([replace(job(), circuit=Breaker(name="payments-api"))])
        assert len(await lent.claim([QUEUE], 5, worker="w", lease_for=60)) == 1
        opened = await asyncq("circuit", "open", APP, "payments-api")
        assert opened.exit_code == 0, opened.output
        assert "opened circuit 'payments-api'" in opened.stdout
        listed = json.loads((await asyncq("limits", APP, "--json")).stdout)
        shown = await asyncq("limits", APP)
        closed = await asyncq("circuit", "close", APP, "payments-api", "--json")
    assert {c["state"] for c in listed["circuits"]} == {"open"}
    assert all(c["opened_at"] for c in listed["circuits"])
    assert "CIRCUIT" in shown.stdout
    assert "open" in shown.stdout
    assert closed.exit_code == 0, closed.output
    assert {c["state"] for c in json.loads(closed.stdout)} == {"closed"}


async def test_held_jobs_are_queued_and_say_why(lent: Backend) -> None:
    with anyio.fail_after(BOUND):
        rated = [replace(job(), limits=(Gate(name="api", rate=0.5, per=1.0),)) for _ in range(2)]
        keyed = [
            replace(job(), limits=(Gate(name="tenant", key="acme", concurrency=1),))
            for _ in range(2)
        ]
        await lent.enqueue([*rated, *keyed])
        started = {
            lease.job.id for lease in await lent.claim([QUEUE], 10, worker="w", lease_for=60)
        }
        assert len(started) == 2
        (by_rate,) = [j.id for j in rated if j.id not in started]
        (by_limit,) = [j.id for j in keyed if j.id not in started]
        shown = await asyncq("job", APP, by_rate)
        shown_json = await asyncq("job", APP, by_rate, "--json")
        aside = await asyncq("job", APP, by_limit)
        queued = await asyncq("jobs", APP, "--state", "queued", "--json")
        scheduled = await asyncq("jobs", APP, "--state", "scheduled", "--json")
        status = await asyncq("status", APP, "--json")
    assert shown.exit_code == 0, shown.output
    head = shown.stdout.split("\npayload\n")[0].splitlines()[1:]
    fields = dict(line.strip().split(None, 1) for line in head)
    assert fields["state"] == "queued"
    assert fields["held"].startswith("rate limit api: it starts at the time it booked (held until")
    found = json.loads(shown_json.stdout)
    assert (found["state"], found["hold"], found["held_by"]) == ("queued", "rate:api", None)
    assert found["held_until"] == found["scheduled_at"]
    assert "  held       limit tenant[acme] is full: it starts when one" in aside.stdout
    assert {by_rate, by_limit} <= {j["id"] for j in json.loads(queued.stdout)}
    assert json.loads(scheduled.stdout) == []
    (counts,) = [q["counts"] for q in json.loads(status.stdout)["queues"] if q["queue"] == QUEUE]
    assert (counts["queued"], counts["scheduled"], counts["active"]) == (2, 0, 2)
