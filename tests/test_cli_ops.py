"""The operator commands (status, jobs, job, retry, purge, cancel, enqueue, pause, resume,
migrate) on every backend, their ``--json`` output, and their exit codes.

Commands run in-process against ``tests/ops_app.py`` on the parametrized backend
(see that module). ``test_cli_ops_local.py`` has the parts that need no backend,
and ``python -m asyncq`` as a real process.
"""

from __future__ import annotations

import json

import anyio
import pytest

import ops_app
from asyncq import JobState
from asyncq.backends.base import Backend
from asyncq.testing import run_until_idle
from ops_app import Note, Resize, app, asyncq, note, resize

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("lent")]

APP = "ops_app:app"


async def dead_job(width: int = -1, image: str = "cat.png") -> str:
    handle = await resize.enqueue(Resize(image, width))
    await run_until_idle(app, queues=["images"])
    assert (await handle.info()).state is JobState.DEAD
    return handle.id


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


# -- jobs, job -----------------------------------------------------------------------------


async def test_jobs_lists_dead_letters_with_their_last_error_and_progress() -> None:
    job_id = await dead_job()
    await note.enqueue(Note("hello"))
    result = await asyncq("jobs", APP, "--state", "dead")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split()[:5] == ["ID", "NAME", "QUEUE", "STATE", "TRIES"]
    assert row.split()[:6] == [job_id, "resize", "images", "dead", "1/1", "50%"]
    assert row.endswith("ValueError: width must be > 0, got -1")

    listed = json.loads((await asyncq("jobs", APP, "--json")).stdout)
    assert [(j["name"], j["state"]) for j in listed] == [("resize", "dead"), ("note", "queued")]
    assert listed[0]["last_error"] == "ValueError: width must be > 0, got -1"
    assert listed[0]["progress"] == 0.5
    assert listed[0]["finished_at"].endswith("Z")


async def test_jobs_filters_and_pages() -> None:
    handles = [await note.enqueue(Note(str(i))) for i in range(3)]
    await resize.enqueue(Resize("a.png", 1))
    first = await asyncq("jobs", APP, "--queue", "default", "--limit", "2", "--json")
    assert [j["id"] for j in json.loads(first.stdout)] == [h.id for h in handles[:2]]
    rest = await asyncq("jobs", APP, "-q", "default", "--after", handles[1].id, "--json")
    assert [j["id"] for j in json.loads(rest.stdout)] == [handles[2].id]
    text = await asyncq("jobs", APP, "--name", "note", "--limit", "2")
    assert f"next page: --after {handles[1].id}" in text.stderr
    none = await asyncq("jobs", APP, "--state", "dead", "--name", "note")
    assert none.exit_code == 0
    assert none.stdout.strip() == "no dead jobs named 'note'"


async def test_jobs_refuses_an_unknown_queue() -> None:
    result = await asyncq("jobs", APP, "--queue", "imagez")
    assert result.exit_code == 2
    assert error_lines(result.stderr) == [
        "Error: unknown queue 'imagez'; known queues: default, images"
    ]


async def test_job_shows_payload_errors_with_tracebacks_and_result() -> None:
    job_id = await dead_job()
    result = await asyncq("job", APP, job_id)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"job {job_id}\n")
    assert '"width": -1' in out
    assert "attempt 1 at " in out
    assert "Traceback (most recent call last):" in out
    assert 'raise ValueError(f"width must be > 0, got {payload.width}")' in out

    full = json.loads((await asyncq("job", APP, job_id, "--json")).stdout)
    assert full["payload"] == {"image": "cat.png", "width": -1}
    assert full["result"] is None
    [error] = full["errors"]
    assert error["kind"] == "error"
    assert error["type"] == "ValueError"
    assert "Traceback" in error["traceback"]

    handle = await resize.enqueue(Resize("ok.png", 4))
    await run_until_idle(app, queues=["images"])
    done = json.loads((await asyncq("job", APP, handle.id, "--json")).stdout)
    assert done["state"] == "completed"
    assert done["result"] == {"image": "ok.png", "size": 8}
    assert done["progress"] == 0.5


async def test_job_with_an_unknown_id_exits_1() -> None:
    result = await asyncq("job", APP, "nope")
    assert result.exit_code == 1
    assert error_lines(result.stderr) == [
        "Error: no job with id 'nope' (never enqueued, removed, or purged after its TTL)"
    ]
    assert result.stdout == ""


# -- enqueue -------------------------------------------------------------------------------


async def test_enqueue_validates_the_json_and_stores_the_job(lent: Backend) -> None:
    result = await asyncq("enqueue", APP, "resize", '{"image": "a.png", "width": 3}')
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("enqueued job ")
    [stored] = await lent.list_jobs()
    assert (stored.name, stored.queue, stored.state) == ("resize", "images", JobState.QUEUED)
    assert result.stdout.split()[2] == stored.id


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('{"image": "a.png", "width": "wide"}', "Expected `int`, got `str` - at `$.width`"),
        ('{"image": "a.png"}', "Object missing required field `width`"),
        ('{"image": "a.png",', "not valid JSON"),
        ("[1, 2]", "Expected `object`, got `array`"),
    ],
    ids=["field-type", "missing-field", "malformed", "wrong-shape"],
)
async def test_enqueue_refuses_a_bad_payload_and_stores_nothing(
    lent: Backend, document: str, message: str
) -> None:
    result = await asyncq("enqueue", APP, "resize", document)
    assert result.exit_code == 2
    [line] = error_lines(result.stderr)
    assert line.startswith("Error: invalid payload for job 'resize': ")
    assert message in line
    assert await lent.list_jobs() == []


async def test_enqueue_of_an_unknown_job_lists_the_known_ones(lent: Backend) -> None:
    result = await asyncq("enqueue", APP, "resise", "{}")
    assert result.exit_code == 2
    assert error_lines(result.stderr) == [
        "Error: app 'ops' has no job named 'resise'; its jobs: note, resize"
    ]
    assert await lent.list_jobs() == []


async def test_enqueue_options_and_the_json_view(lent: Backend) -> None:
    args = ["enqueue", APP, "note", '{"text": "hi"}', "--key", "k1", "--json"]
    first = json.loads((await asyncq(*args, "--priority", "7", "--delay", "1h")).stdout)
    assert first["created"] is True
    assert first["state"] == "scheduled"
    again = await asyncq(*args)
    assert json.loads(again.stdout) == {**first, "created": False}
    text = await asyncq("enqueue", APP, "note", '{"text": "hi"}', "--key", "k1")
    assert "already exists with this id or key" in text.stdout
    stored = await lent.get(first["id"])
    assert stored is not None
    assert (stored.priority, stored.key) == (7, "k1")
    assert stored.scheduled_at - stored.enqueued_at == pytest.approx(3600, abs=1)

    other = await asyncq("enqueue", APP, "note", "-", "--queue", "elsewhere", "--json", stdin="{}")
    assert json.loads(other.stdout)["queue"] == "elsewhere"


async def test_enqueue_under_a_chosen_id(lent: Backend) -> None:
    args = ["enqueue", APP, "note", '{"text": "hi"}', "--id", "order-42", "--json"]
    first = json.loads((await asyncq(*args)).stdout)
    assert (first["id"], first["created"]) == ("order-42", True)
    again = json.loads((await asyncq(*args)).stdout)
    assert (again["id"], again["created"]) == ("order-42", False)
    assert [job.id for job in await lent.list_jobs()] == ["order-42"]
    bad = await asyncq("enqueue", APP, "note", "{}", "--id", "a\x1bb")
    assert bad.exit_code == 2
    assert "control character" in bad.stderr


async def test_enqueue_wait_prints_the_result_as_json() -> None:
    async with app.worker(concurrency=2, poll_interval=0.2):
        result = await asyncq(
            "enqueue", APP, "resize", '{"image": "a.png", "width": 5}', "--wait", "--timeout", "20"
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"image": "a.png", "size": 10}
        assert result.stderr.startswith("enqueued job ")

        dead = await asyncq(
            "enqueue", APP, "resize", '{"image": "a.png", "width": 0}', "--wait", "--json"
        )
    assert dead.exit_code == 1
    [line] = error_lines(dead.stderr)
    assert "ended dead: ValueError: width must be > 0, got 0" in line


async def test_enqueue_wait_times_out_with_exit_1() -> None:
    result = await asyncq("enqueue", APP, "note", "{}", "--wait", "--timeout", "0.2s")
    assert result.exit_code == 1
    [line] = error_lines(result.stderr)
    assert line.startswith("Error: no result within 0.2s; job ")
    assert "may still run" in line


async def test_enqueue_timeout_without_wait_is_a_usage_error() -> None:
    result = await asyncq("enqueue", APP, "note", "{}", "--timeout", "1")
    assert result.exit_code == 2
    assert "--timeout goes with --wait" in result.stderr


async def test_enqueue_job_options_and_the_two_timeouts(lent: Backend) -> None:
    args = ["enqueue", APP, "note", "{}", "--json", "--job-timeout", "90s", "--max-attempts", "2"]
    stored = json.loads((await asyncq(*args, "--at", "2030-01-01T09:00:00+01:00")).stdout)
    job = await lent.get(stored["id"])
    assert job is not None
    assert (job.timeout, job.max_attempts, job.state) == (90.0, 2, JobState.SCHEDULED)
    assert job.scheduled_at == 1893484800.0  # 08:00 UTC

    async with app.worker(concurrency=2, poll_interval=0.2):
        waited = await asyncq(
            "enqueue", APP, "resize", '{"image": "a.png", "width": 2}', "--wait",
            "--wait-timeout", "20", "--job-timeout", "10",
        )  # fmt: skip
    assert waited.exit_code == 0, waited.output
    assert json.loads(waited.stdout) == {"image": "a.png", "size": 4}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--wait-timeout", "1"], "--wait-timeout goes with --wait"),
        (["--wait", "--wait-timeout", "1", "--timeout", "1"], "not both"),
        (["--at", "2030-01-01T09:00"], "has no UTC offset"),
        (["--at", "tomorrow"], "not an ISO 8601 date and time"),
        (["--max-attempts", "0"], "job 'note': max_attempts must be at least 1, got 0"),
        (["--delay", "1m", "--at", "2030-01-01T09:00Z"], "give delay= or at=, not both"),
    ],
)
async def test_enqueue_refuses_bad_options_and_stores_nothing(
    lent: Backend, extra: list[str], message: str
) -> None:
    result = await asyncq("enqueue", APP, "note", "{}", *extra)
    assert result.exit_code == 2
    assert message in result.stderr
    assert await lent.list_jobs() == []


# -- retry ---------------------------------------------------------------------------------


async def test_retry_puts_a_dead_job_back_with_fresh_attempts(lent: Backend) -> None:
    job_id = await dead_job()
    result = await asyncq("retry", APP, job_id)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"retried job {job_id}: queued with fresh attempts\n"
    job = await lent.get(job_id)
    assert job is not None
    assert (job.state, job.attempts, job.finished_at) == (JobState.QUEUED, 0, None)
    assert len(job.errors) == 1  # the history stays


async def test_retry_reports_unknown_and_live_jobs_with_exit_1() -> None:
    dead = await dead_job()
    live = await note.enqueue(Note())
    result = await asyncq("retry", APP, dead, "nope", live.id, "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["retried"] == [dead]
    assert error_lines(result.stderr) == [
        "Error: no job with id 'nope' (never enqueued, removed, or purged after its TTL)",
        f"Error: job {live.id} is not dead (it is queued): only dead jobs are retried",
    ]


async def test_retry_all_walks_every_dead_job_in_batches(lent: Backend) -> None:
    ids = [(await resize.enqueue(Resize(f"{i}.png", -i))).id for i in range(5)]
    ids.append(await dead_job(image="other.png"))  # runs the five above too
    result = await asyncq("retry", APP, "--all", "--queue", "images", "--batch", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout == "retried 6 dead job(s) in queue 'images'\n"
    assert "\r" not in result.stderr  # no progress line when stderr is not a terminal
    for job_id in ids:
        job = await lent.get(job_id)
        assert job is not None
        assert job.state is JobState.QUEUED
    again = await asyncq("retry", APP, "--all", "--json")
    assert json.loads(again.stdout) == {"retried": 0, "queue": None, "name": None}
    none = await asyncq("retry", APP, "--all", "--name", "note")
    assert none.stdout == "no dead jobs named 'note'\n"


@pytest.mark.parametrize(
    "args",
    [[], ["someid", "--all"], ["someid", "--queue", "images"]],
    ids=["nothing", "ids-and-all", "queue-without-all"],
)
async def test_retry_usage_errors(args: list[str]) -> None:
    result = await asyncq("retry", APP, *args)
    assert result.exit_code == 2
    assert len(error_lines(result.stderr)) == 1


# -- purge ---------------------------------------------------------------------------------


async def test_purge_refuses_without_yes_and_deletes_nothing(lent: Backend) -> None:
    job_id = await dead_job()
    result = await asyncq("purge", APP, "--state", "dead", "--older-than", "0s")
    assert result.exit_code == 2
    [line] = error_lines(result.stderr)
    assert line.startswith("Error: refusing to purge without --yes: it would delete dead jobs")
    assert await lent.get(job_id) is not None


async def test_purge_deletes_old_finished_jobs_and_says_how_many(lent: Backend) -> None:
    dead = await dead_job()
    done = await resize.enqueue(Resize("ok.png", 1))
    pending = await note.enqueue(Note())
    await run_until_idle(app, queues=["images"])
    recent = await asyncq("purge", APP, "--state", "dead", "--older-than", "7d", "--yes")
    assert recent.exit_code == 0, recent.output
    assert recent.stdout.startswith("purged 0 job(s): dead jobs that finished before ")
    result = await asyncq(
        "purge", APP, "-s", "dead", "-s", "completed", "--older-than", "0", "--yes", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "purged": 2,
        "states": ["completed", "dead"],
        "queue": None,
    }
    assert await lent.get(dead) is None
    assert await lent.get(done.id) is None
    assert await lent.get(pending.id) is not None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--state", "queued", "--older-than", "1d"], "'queued' is not one of"),
        (["--state", "dead", "--older-than", "soon"], "'soon' is not a duration"),
        (["--state", "dead"], "Missing option '--older-than'"),
        (["--older-than", "1d"], "Missing option '-s' / '--state'"),
        (["--state", "dead", "--older-than", "1d", "--queue", "nope", "--yes"], "unknown queue"),
    ],
    ids=["live-state", "bad-duration", "no-age", "no-state", "unknown-queue"],
)
async def test_purge_usage_errors(args: list[str], fragment: str) -> None:
    result = await asyncq("purge", APP, *args)
    assert result.exit_code == 2
    assert fragment in result.stderr


# -- cancel --------------------------------------------------------------------------------


async def test_cancel_pending_jobs_and_refuse_finished_or_unknown_ones(lent: Backend) -> None:
    pending = await note.enqueue(Note(), delay=3600)
    ok = await asyncq("cancel", APP, pending.id)
    assert ok.exit_code == 0, ok.output
    assert ok.stdout == f"cancelled job {pending.id} (note, queue 'default')\n"
    job = await lent.get(pending.id)
    assert job is not None
    assert job.state is JobState.CANCELLED

    dead = await dead_job()
    result = await asyncq("cancel", APP, dead, "nope", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == [
        {"id": dead, "state": "dead", "outcome": "already dead"},
        {"id": "nope", "state": None, "outcome": "not found"},
    ]
    assert error_lines(result.stderr) == [
        f"Error: job {dead} already ended dead: nothing to cancel",
        "Error: no job with id 'nope'",
    ]


async def test_cancel_a_running_job_asks_its_worker_to_stop_it(lent: Backend) -> None:
    async with app.worker(concurrency=1, heartbeat=0.05, poll_interval=0.2):
        handle = await note.enqueue(Note("hold"))
        with anyio.fail_after(20):
            await ops_app.holding.wait()
        result = await asyncq("cancel", APP, handle.id)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"cancel requested for job {handle.id}: running on ")
        with anyio.fail_after(20):
            job = await lent.wait_finished(handle.id)
    assert job is not None
    assert job.state is JobState.CANCELLED


# -- pause, resume, status -----------------------------------------------------------------


async def test_a_paused_queue_takes_jobs_but_no_worker_claims_them(lent: Backend) -> None:
    paused = await asyncq("pause", APP, "images")
    assert paused.exit_code == 0, paused.output
    assert paused.stdout.startswith("paused queue 'images': it accepts jobs")
    handle = await resize.enqueue(Resize("a.png", 2))
    worker = await run_until_idle(app, queues=["images"])
    assert worker.processed == 0
    assert (await handle.info()).state is JobState.QUEUED

    status = json.loads((await asyncq("status", APP, "--queue", "images", "--json")).stdout)
    [images] = status["queues"]
    assert images["paused"] is True
    assert images["counts"]["queued"] == 1
    assert images["oldest_ready_age"] >= 0

    resumed = await asyncq("resume", APP, "images", "--json")
    assert json.loads(resumed.stdout) == {"queue": "images", "paused": False}
    worker = await run_until_idle(app, queues=["images"])
    assert worker.processed == 1
    assert (await handle.info()).state is JobState.COMPLETED


async def test_pause_refuses_an_unknown_queue(lent: Backend) -> None:
    result = await asyncq("pause", APP, "imagez")
    assert result.exit_code == 2
    assert error_lines(result.stderr) == [
        "Error: unknown queue 'imagez'; known queues: default, images"
    ]
    assert [s.queue for s in await lent.stats() if s.paused] == []


async def test_status_shows_counts_ages_and_every_app_queue() -> None:
    await dead_job()
    await note.enqueue(Note())
    result = await asyncq("status", APP)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1] == ""
    assert lines[2].split()[:9] == [
        "QUEUE",
        "WAITING",
        "SCHEDULED",
        "QUEUED",
        "ACTIVE",
        "FAILED",
        "COMPLETED",
        "DEAD",
        "CANCELLED",
    ]
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    assert rows["default"][1:9] == ["0", "0", "1", "0", "0", "0", "0", "0"]
    assert rows["images"][1:9] == ["0", "0", "0", "0", "0", "0", "1", "0"]
    assert rows["default"][-1] == "no"


async def test_status_watch_adds_throughput_between_refreshes() -> None:
    result = await asyncq("status", APP, "--watch", "--count", "2", "--interval", "0.05", "--json")
    assert result.exit_code == 0, result.output
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert all(q["completed_per_minute"] is None for q in first["queues"])
    assert all(q["completed_per_minute"] == 0 for q in second["queues"])
    plain = await asyncq("status", APP, "-w", "--count", "2", "--interval", "0.05")
    assert plain.stdout.count("\nQUEUE ") == 2
    assert "\x1b[" not in plain.stdout  # not a terminal: no in-place redraw


async def test_status_refuses_an_unknown_queue_and_a_zero_interval() -> None:
    assert (await asyncq("status", APP, "-q", "nope")).exit_code == 2
    assert (await asyncq("status", APP, "-w", "--interval", "0")).exit_code == 2


# -- migrate -------------------------------------------------------------------------------


async def test_migrate_applies_what_the_backend_has_or_says_there_is_nothing(
    lent: Backend,
) -> None:
    result = await asyncq("migrate", APP, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["backend"] == lent.url
    if hasattr(lent, "migrate"):
        assert out["applied"] == []  # the fixture's schema is migrated already
        text = await asyncq("migrate", APP)
        assert text.stdout == f"{lent.url} is up to date: no migration applied\n"
    else:
        assert out["applied"] is None
        text = await asyncq("migrate", APP)
        assert text.stdout.startswith(f"nothing to migrate for {lent.url}")
