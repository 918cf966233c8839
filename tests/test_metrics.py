"""``asyncq run --health-port P --metrics``: ``/metrics`` from the OpenTelemetry metrics."""

from __future__ import annotations

import os
import re
import signal
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from _services import free_port
from asyncq import App
from asyncq.testing import in_memory
from test_health import probed, request

pytestmark = pytest.mark.anyio

pytest.importorskip("opentelemetry.exporter.prometheus")

APP_SOURCE = textwrap.dedent(
    """
    from asyncq import App

    app = App("metered")

    @app.job(schema=int, name="metered.double")
    async def double(n: int) -> int:
        return 2 * n
    """
)


async def scrape(port: int) -> tuple[int, dict[str, str], str]:
    status, headers, body = await request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    return status, headers, body.decode()


@pytest.mark.slow
async def test_asyncq_run_serves_metrics(tmp_path: Path) -> None:
    (tmp_path / "metered.py").write_text(APP_SOURCE)
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    sys.path.insert(0, str(tmp_path))
    try:
        import metered
    finally:
        sys.path.remove(str(tmp_path))
    producer: App = metered.app
    producer.use_backend(url)
    async with producer:
        for n in range(3):
            await producer.handlers["metered.double"].enqueue(n)
    port = free_port()
    env = {**os.environ, "ASYNCQ_BACKEND": url}
    args = [sys.executable, "-m", "asyncq", "run", "metered:app", "--metrics"]
    args += ["--health-port", str(port), "--health-host", "127.0.0.1"]
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        proc = await anyio.open_process(args, cwd=tmp_path, env=env, stderr=stderr)
    try:
        with anyio.fail_after(30):
            text = ""
            # Another process: poll until it listens and has run the three jobs.
            while not re.search(r"asyncq_jobs_completed_total\{[^}]*\} 3\.0", text):
                try:
                    status, headers, text = await scrape(port)
                except OSError:
                    assert proc.returncode is None, log.read_text()
                    await anyio.sleep(0.05)
                    continue
                assert status == 200
                assert headers["Content-Type"].startswith("text/plain; version=")
                await anyio.sleep(0.05)
            assert "# TYPE asyncq_jobs_completed_total counter" in text
            assert "asyncq_job_run_duration" in text
            assert 'messaging_destination_name="default"' in text
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.aclose()


async def test_metrics_need_the_health_port(tmp_path: Path) -> None:
    (tmp_path / "metered.py").write_text(APP_SOURCE)
    env = {**os.environ, "ASYNCQ_BACKEND": "memory://"}
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-m", "asyncq", "run", "metered:app", "--metrics"],
            cwd=tmp_path,
            env=env,
            check=False,
        )
    assert done.returncode == 2
    assert "--metrics is served on the health port: add --health-port P" in done.stderr.decode()


async def test_no_metrics_path_unless_asked() -> None:
    app = App("plain", telemetry=False)
    async with in_memory(app), probed(app) as (server, _):
        status, _, body = await scrape(server.port)
    assert status == 404
    assert "/metrics" not in body


async def test_dead_letter_log_lines_carry_the_exception(caplog: pytest.LogCaptureFixture) -> None:
    from asyncq import Reject
    from asyncq.testing import run_until_idle

    app = App("dead", telemetry=False)

    @app.job(schema=int, name="dead.boom", max_attempts=1)
    async def boom(n: int) -> None:
        raise KeyError(n)

    @app.job(schema=int, name="dead.rejected")
    async def rejected(n: int) -> None:
        raise Reject("not for us")

    with anyio.fail_after(10):
        async with in_memory(app):
            await boom.enqueue(7)
            await rejected.enqueue(8)
            with caplog.at_level("ERROR", logger="asyncq"):
                await run_until_idle(app)
    dead = {r.getMessage().split("'")[1]: r for r in caplog.records if "is dead" in r.getMessage()}
    assert dead["dead.boom"].exc_info is not None
    assert isinstance(dead["dead.boom"].exc_info[1], KeyError)
    assert "raise KeyError(n)" in caplog.text
    # A job that rejected itself chose its fate: no stack trace to report.
    assert dead["dead.rejected"].exc_info is None


def test_the_grafana_dashboard_uses_metrics_that_exist() -> None:
    import json

    root = Path(__file__).resolve().parent.parent
    dashboard = json.loads((root / "docs" / "grafana-asyncq.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(asyncq_[a-z_]+)\{", e)}
    exposed = {
        "asyncq_jobs_enqueued_total",
        "asyncq_jobs_completed_total",
        "asyncq_jobs_failed_total",
        "asyncq_jobs_retried_total",
        "asyncq_jobs_dead_total",
        "asyncq_job_run_duration_seconds_bucket",
        "asyncq_job_wait_duration_seconds_bucket",
        "asyncq_queue_depth",
    }
    assert used == exposed
    label = re.compile(r"\b(asyncq_job_[a-z]+|messaging_[a-z_]+)\b(?!\{)")
    labels = {m for e in exprs for m in label.findall(e)}
    assert labels <= {"asyncq_job_outcome", "asyncq_job_state", "messaging_destination_name"}
