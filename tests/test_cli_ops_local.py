"""The operator commands' parts that need no backend, and ``python -m asyncq`` as a process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import pytest

from asyncq.cli._base import Progress, parse_duration

APP = "ops_app:app"
TESTS = Path(__file__).parent


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("12h", 43_200),
        ("7d", 604_800),
        ("2w", 1_209_600),
        ("1h30m", 5400),
        ("90", 90),
        ("0.5", 0.5),
        ("1.5h", 5400),
        (" 7D ", 604_800),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "7x", "d7", "-1", "1h 30m", "inf", "h"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_on_a_terminal_only() -> None:
    tty = Terminal()
    progress = Progress("retried", tty)
    progress(500)
    progress(1000)
    progress.done()
    assert tty.getvalue() == "\rretried 500...\rretried 1000...\r\x1b[2K"
    pipe = io.StringIO()
    quiet = Progress("retried", pipe)
    quiet(500)
    quiet.done()
    assert pipe.getvalue() == ""


# -- as a real process, on a SQLite file -------------------------------------------------------


#: The tests' modules, then this checkout's asyncq (ahead of any installed one).
_PATH = os.pathsep.join([str(TESTS), str(TESTS.parent)])


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncq", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": _PATH, **(env or {})},
    )


@pytest.mark.slow
def test_the_commands_as_a_process_with_a_backend_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    bad = run_cli("enqueue", APP, "resize", '{"width": "x"}', "--backend", url, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.startswith("Error: invalid payload for job 'resize'")
    payload = '{"image": "a", "width": 1}'
    ok = run_cli("enqueue", APP, "resize", payload, "--backend", url, "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    job_id = json.loads(ok.stdout)["id"]
    listed = run_cli("jobs", APP, "--json", cwd=tmp_path, env={"ASYNCQ_BACKEND": url})
    assert [j["id"] for j in json.loads(listed.stdout)] == [job_id]
    missing = run_cli("job", APP, "nope", "--backend", url, cwd=tmp_path)
    assert missing.returncode == 1
    assert (
        missing.stderr
        == "Error: no job with id 'nope' (never enqueued, removed, or purged after its TTL)\n"
    )
    bad_url = run_cli("status", APP, "--backend", "nosuch://x", cwd=tmp_path)
    assert bad_url.returncode == 2
    assert "unknown backend URL" in bad_url.stderr


@pytest.mark.slow
@pytest.mark.postgres
def test_migrate_a_fresh_postgresql_schema(tmp_path: Path, postgres_dsn: str) -> None:
    schema = f"t{uuid.uuid4().hex[:12]}"
    url = f"{postgres_dsn}?schema={schema}"
    try:
        before = run_cli("status", APP, "--backend", url, cwd=tmp_path)
        assert before.returncode != 0
        assert "asyncq migrate" in before.stderr
        first = run_cli("migrate", APP, "--backend", url, "--json", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        applied = json.loads(first.stdout)["applied"]
        assert applied
        assert applied == sorted(applied)
        again = run_cli("migrate", APP, "--backend", url, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert again.stdout.endswith("is up to date: no migration applied\n")
        after = run_cli("status", APP, "--backend", url, "--json", cwd=tmp_path)
        assert after.returncode == 0, after.stderr
        assert [q["queue"] for q in json.loads(after.stdout)["queues"]] == ["default", "images"]
    finally:
        from asyncq.backends.postgres import PostgresBackend

        anyio.run(PostgresBackend.from_url(url).drop)


@pytest.mark.slow
def test_a_command_with_no_backend_anywhere_says_which_store_it_uses(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ASYNCQ_BACKEND"}
    result = subprocess.run(
        [sys.executable, "-m", "asyncq", "jobs", "ops_default:app"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": _PATH},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "note: no backend given (--backend, ASYNCQ_BACKEND or App(backend=...)); "
        f"using sqlite:///asyncq.db in {tmp_path}\n"
    )
    assert (tmp_path / "asyncq.db").exists()
