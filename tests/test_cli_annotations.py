"""Job annotations through the command on every backend: ``job`` shows logs, metadata
and progress detail, ``jobs --meta`` filters, ``enqueue --meta`` stores metadata.

Commands run in-process against ``tests/ops_app.py`` (see ``test_cli_ops.py``).
Lines and progress detail are written through the store's own verbs on a
claimed job, as a worker would write them.
"""

from __future__ import annotations

import json
import time

import anyio
import pytest

from asyncq._annotations import MAX_LOG_LINES, log_line
from asyncq.backends.base import Backend
from ops_app import Note, asyncq, note

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("lent")]

APP = "ops_app:app"
BOUND = 60.0


async def test_job_shows_logs_progress_detail_and_meta(lent: Backend) -> None:
    with anyio.fail_after(BOUND):
        handle = await note.enqueue(Note("x"), meta={"tenant": "acme", "n": 3})
        [lease] = await lent.claim(["default"], 1, worker="w1", lease_for=60)
        lines = [
            log_line(time.time(), 1, "warning" if i == MAX_LOG_LINES + 1 else "info", f"step {i}")
            for i in range(MAX_LOG_LINES + 2)
        ]
        assert await lent.log(lease, lines)
        assert await lent.progress(lease, 0.4, b'{"step":"upload","bytes":1024}')

        result = await asyncq("job", APP, handle.id)
        assert result.exit_code == 0, result.output
        out = result.stdout.splitlines()
        [progress] = [line for line in out if line.split()[:1] == ["progress"]]
        assert progress.split()[1] == "40%"
        assert json.loads(progress.split(maxsplit=2)[2]) == {"step": "upload", "bytes": 1024}
        assert any(line.split() == ["meta", "n=3,", "tenant=acme"] for line in out)
        start = out.index(f"logs ({MAX_LOG_LINES})")
        assert out[start + 1].strip() == "(2 earlier lines dropped)"
        assert out[start + 2].split()[2:] == ["#1", "info", "step", "2"]
        # The logs end where the job's history (its events) begins.
        last = out[out.index("history:") - 1]
        assert last.split()[2:] == ["#1", "warning", "step", str(MAX_LOG_LINES + 1)]

        full = json.loads((await asyncq("job", APP, handle.id, "--json")).stdout)
        assert full["meta"] == {"tenant": "acme", "n": 3}
        assert full["progress"] == 0.4
        assert full["progress_detail"] == {"step": "upload", "bytes": 1024}
        assert full["logs_dropped"] == 2
        assert len(full["logs"]) == MAX_LOG_LINES
        assert full["logs"][-1]["level"] == "warning"
        assert full["logs"][0]["attempt"] == 1
        assert full["logs"][0]["message"] == "step 2"
        assert full["logs"][0]["at"].endswith("Z")

        listed = json.loads((await asyncq("jobs", APP, "--json")).stdout)
        assert listed[0]["progress_detail"] == {"step": "upload", "bytes": 1024}
        assert listed[0]["meta"] == {"tenant": "acme", "n": 3}


async def test_job_without_logs_says_so() -> None:
    handle = await note.enqueue(Note("x"))
    result = await asyncq("job", APP, handle.id)
    assert result.exit_code == 0, result.output
    assert "logs: none" in result.stdout.splitlines()
    assert not any(line.split()[:1] == ["meta"] for line in result.stdout.splitlines())


async def test_jobs_meta_filters_on_every_pair_and_pages() -> None:
    acme = [await note.enqueue(Note(str(i)), meta={"tenant": "acme", "i": i}) for i in range(3)]
    await note.enqueue(Note("other"), meta={"tenant": "other"})
    await note.enqueue(Note("none"))

    result = await asyncq("jobs", APP, "--meta", "tenant=acme", "--json")
    assert result.exit_code == 0, result.output
    assert [j["id"] for j in json.loads(result.stdout)] == [h.id for h in acme]

    both = await asyncq("jobs", APP, "--meta", "tenant=acme", "--meta", "i=1", "--json")
    assert [j["id"] for j in json.loads(both.stdout)] == [acme[1].id]

    paged = await asyncq("jobs", APP, "--meta", "tenant=acme", "--limit", "2")
    assert f"next page: --after {acme[1].id}" in paged.stderr
    rest = await asyncq("jobs", APP, "--meta", "tenant=acme", "--after", acme[1].id, "--json")
    assert [j["id"] for j in json.loads(rest.stdout)] == [acme[2].id]

    none = await asyncq("jobs", APP, "--meta", "tenant=nobody")
    assert none.exit_code == 0
    assert none.stdout.strip() == "no jobs with meta tenant=nobody"

    bad = await asyncq("jobs", APP, "--meta", "tenant")
    assert bad.exit_code == 2
    assert "is not KEY=VALUE" in bad.stderr


async def test_enqueue_meta_is_stored_as_strings(lent: Backend) -> None:
    result = await asyncq(
        "enqueue", APP, "note", '{"text": "hi"}', "--meta", "tenant=acme", "--meta", "ref=a=b"
    )
    assert result.exit_code == 0, result.output
    [job] = await lent.list_jobs(meta={"tenant": "acme"})
    assert job.meta == {"tenant": "acme", "ref": "a=b"}

    twice = await asyncq("enqueue", APP, "note", "--meta", "k=1", "--meta", "k=2")
    assert twice.exit_code == 2
    assert "key 'k' is given twice" in twice.stderr
