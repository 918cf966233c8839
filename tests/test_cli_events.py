"""``asyncq events`` and the timeline of ``asyncq job ID``, through the real command.

In-process against ``tests/ops_app.py`` on every store (as ``test_cli_ops``);
then three processes sharing a store: a subscriber (``asyncq events --follow``)
prints what a worker (``asyncq run``) does with a job this test enqueues.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import anyio
import msgspec
import pytest

from _services import store_url
from asyncq import App
from asyncq.backends.base import EVENTS, Backend
from ops_app import Note, asyncq, note
from test_cli_ops import dead_job

pytestmark = pytest.mark.anyio
__all__ = ["store_url"]  # the fixture from ``_services``, where pytest looks for it

APP = "ops_app:app"


async def test_events_prints_what_happened_to_the_jobs_kept(lent: Backend) -> None:
    job_id = await dead_job()
    result = await asyncq("events", APP, "--json")
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    mine = [(e["kind"], e.get("attempt")) for e in printed if e["job_id"] == job_id]
    assert mine == [("enqueued", None), ("started", 1), ("progress", 1), ("dead", 1)]
    assert printed[-1]["error"]["message"] == "width must be > 0, got -1"
    assert printed[-1]["at_iso"].endswith("Z")

    text = await asyncq("events", APP, "--kind", "dead")
    [line] = text.stdout.splitlines()
    assert " dead " in line
    assert job_id in line
    assert line.endswith("ValueError: width must be > 0, got -1")


async def test_job_shows_its_timeline(lent: Backend) -> None:
    job_id = await dead_job()
    result = await asyncq("job", APP, job_id)
    assert result.exit_code == 0, result.output
    history = result.stdout.split("history:\n", 1)[1].splitlines()
    # "  <date> <time>  <kind>  <details>"
    assert [line.split()[2] for line in history] == ["enqueued", "started", "progress", "dead"]
    assert "attempt 1, on " in history[1]
    assert "50%" in history[2]
    as_json = json.loads((await asyncq("job", APP, job_id, "--json")).stdout)
    assert [e["kind"] for e in as_json["history"]] == ["enqueued", "started", "progress", "dead"]


async def test_events_follow_from_an_id_stops_after_count(lent: Backend) -> None:
    store = EVENTS.of(lent)
    assert store is not None
    since = await store.latest_event_id(None)
    first = await note.enqueue(Note("one"))
    second = await note.enqueue(Note("two"))
    result = await asyncq("events", APP, "--follow", "--since", since, "--count", "2", "--json")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["job_id"] for line in result.stdout.splitlines()] == [
        first.id,
        second.id,
    ]


async def test_events_refuses_an_id_of_another_store(lent: Backend) -> None:
    result = await asyncq("events", APP, "--since", "not-an-id")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ")
    assert "not an event id" in result.stderr


# -- three processes -------------------------------------------------------------------------

APP_SOURCE = textwrap.dedent(
    """
    import msgspec

    from asyncq import App

    app = App("evapp", events=True)


    class Greet(msgspec.Struct):
        who: str


    @app.job(schema=Greet, name="greet")
    async def greet(payload: Greet) -> str:
        return f"hello {payload.who}"
    """
)


class Greet(msgspec.Struct):
    who: str


@pytest.mark.slow
async def test_a_subscriber_process_sees_a_worker_process_run_a_job(
    tmp_path: Path, store_url: str
) -> None:
    (tmp_path / "evapp.py").write_text(APP_SOURCE)
    env = {**os.environ, "ASYNCQ_BACKEND": store_url}
    producer = App("producer", backend=store_url, events=True)
    with anyio.fail_after(60):
        async with producer:
            store = EVENTS.of(await producer.backend_opened())
            assert store is not None
            since = await store.latest_event_id(None)
            follow = [sys.executable, "-m", "asyncq", "events", "evapp:app", "--follow"]
            follow += ["--since", since, "--count", "3", "--json", "-n", "greet"]
            run = [sys.executable, "-m", "asyncq", "run", "evapp:app", "--lease", "5"]
            subscriber = await anyio.open_process(follow, cwd=tmp_path, env=env)
            worker = await anyio.open_process(run, cwd=tmp_path, env=env)
            try:
                greet = producer.handle("greet", schema=Greet, result=str)
                handle = await greet.enqueue(Greet("ops"))
                assert await handle.result() == "hello ops"
                assert subscriber.stdout is not None
                out = b""
                async for chunk in subscriber.stdout:
                    out += chunk
                assert await subscriber.wait() == 0
            finally:
                for proc in (subscriber, worker):
                    if proc.returncode is None:
                        proc.kill()
                    await proc.aclose()
    printed = [json.loads(line) for line in out.decode().splitlines()]
    assert [(e["kind"], e["job_id"]) for e in printed] == [
        ("enqueued", handle.id),
        ("started", handle.id),
        ("completed", handle.id),
    ]
    assert printed[1]["worker"]


async def test_ctrl_c_ends_a_follow_with_exit_0(tmp_path: Path) -> None:
    # like `status --watch`, and like tail -f: no "Aborted!", no exit 1
    (tmp_path / "evapp.py").write_text(APP_SOURCE)
    url = f"sqlite:///{tmp_path / 'events.db'}"
    env = {**os.environ, "ASYNCQ_BACKEND": url}
    follow = [sys.executable, "-m", "asyncq", "events", "evapp:app", "--follow", "--since", "1h"]
    with anyio.fail_after(60):
        async with App("producer", backend=url, events=True) as producer:
            greet = producer.handle("greet", schema=Greet, result=str)
            handle = await greet.enqueue(Greet("ops"))
            subscriber = await anyio.open_process(follow, cwd=tmp_path, env=env)
            async with subscriber:
                assert subscriber.stdout is not None
                assert subscriber.stderr is not None
                first = await subscriber.stdout.receive()  # the enqueued event, replayed
                subscriber.send_signal(signal.SIGINT)
                assert await subscriber.wait() == 0
                errors = b"".join([chunk async for chunk in subscriber.stderr])
    assert handle.id in first.decode()
    assert b"Aborted" not in errors


async def test_a_cancel_from_the_command_line_says_so(lent: Backend) -> None:
    handle = await note.enqueue(Note("later"), delay=3600)
    assert (await asyncq("cancel", APP, handle.id)).exit_code == 0
    as_json = json.loads((await asyncq("job", APP, handle.id, "--json")).stdout)
    assert [(e["kind"], e.get("by")) for e in as_json["history"]] == [
        ("enqueued", None),
        ("cancelled", "cli"),
    ]
