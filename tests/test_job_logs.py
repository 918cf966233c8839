"""Log lines: ``asyncq run --log-jobs`` and ``ctx.logger`` lines that name their job in text."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from asyncq import App

pytestmark = pytest.mark.anyio

APP_SOURCE = textwrap.dedent(
    """
    from asyncq import App, JobContext

    app = App("logged", telemetry=False)

    @app.job(schema=int, name="logged.work", max_attempts=1)
    async def work(n: int, ctx: JobContext) -> int:
        ctx.logger.info("working on %d", n)
        if n < 0:
            raise ValueError("negative")
        return n
    """
)


async def run_worker(tmp_path: Path, *options: str) -> list[str]:
    """Enqueue two jobs (one fails), run ``asyncq run --burst`` on them; its stderr lines."""
    (tmp_path / "logged.py").write_text(APP_SOURCE)
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    producer = App("producer", backend=url, telemetry=False)
    work = producer.handle("logged.work", schema=int, result=int, max_attempts=1)
    async with producer:
        ok = await work.enqueue(5)
        bad = await work.enqueue(-1)
    env = {**os.environ, "ASYNCQ_BACKEND": url}
    args = [sys.executable, "-m", "asyncq", "run", "logged:app", "--burst", *options]
    with anyio.fail_after(60):
        done = await anyio.run_process(args, cwd=tmp_path, env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stderr.decode().splitlines()
    return [line.replace(ok.id, "<ok>").replace(bad.id, "<bad>") for line in lines]


async def test_log_jobs_writes_a_line_per_finished_attempt(tmp_path: Path) -> None:
    lines = await run_worker(tmp_path, "--log-jobs")
    finished = [line for line in lines if " in " in line and "attempt 1)" in line]
    assert any(
        "job 'logged.work' (id <ok>, queue 'default', attempt 1) completed in " in x
        for x in finished
    ), lines
    assert any("(id <bad>, queue 'default', attempt 1) dead in " in x for x in finished), lines
    # The handler's own lines name their job in the text format.
    assert any("asyncq.job [job logged.work <ok>]: working on 5" in x for x in lines), lines


async def test_without_log_jobs_no_such_line(tmp_path: Path) -> None:
    lines = await run_worker(tmp_path)
    assert not any(") completed in " in line for line in lines), lines


async def test_log_jobs_json_lines_carry_the_duration(tmp_path: Path) -> None:
    lines = await run_worker(tmp_path, "--log-jobs", "--log-format", "json")
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    (done,) = [
        e for e in entries if e["message"].endswith("s") and " completed in " in e["message"]
    ]
    assert done["job_id"] == "<ok>" or done["job_name"] == "logged.work"
    assert done["job_state"] == "completed"
    assert isinstance(done["duration"], float)
    assert done["duration"] >= 0
