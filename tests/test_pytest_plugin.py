"""asyncq's pytest plugin, run as a user would: under pytest-asyncio (strict, auto) and anyio."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "plugin_samples" / "sample_jobs.py"

pytest.importorskip("pytest_asyncio")

INI = "[pytest]\nfilterwarnings = error\n"
LOOP_SCOPE = ("-o", "asyncio_default_fixture_loop_scope=function")


def run_sample(tmp_path: Path, mark: str, *options: str) -> subprocess.CompletedProcess[str]:
    """Run the sample module in a project of its own, with only the plugins named."""
    shutil.copy(SAMPLE, tmp_path / "test_sample.py")
    (tmp_path / "pytest.ini").write_text(INI)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "SAMPLE_MARK": mark,
    }
    env.pop("ASYNCQ_BACKEND", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "asyncq.pytest_plugin", *options]
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("mark", "options"),
    [
        pytest.param(
            "asyncio",
            ("-p", "pytest_asyncio.plugin", "-o", "asyncio_mode=strict", *LOOP_SCOPE),
            id="asyncio-strict",
        ),
        pytest.param(
            "auto",
            ("-p", "pytest_asyncio.plugin", "-o", "asyncio_mode=auto", *LOOP_SCOPE),
            id="asyncio-auto",
        ),
        pytest.param("anyio", ("-p", "anyio.pytest_plugin"), id="anyio"),
    ],
)
def test_the_plugin_under_each_async_plugin(
    tmp_path: Path, mark: str, options: tuple[str, ...]
) -> None:
    result = run_sample(tmp_path, mark, *options)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b6 passed\b", result.stdout), result.stdout
    assert not (tmp_path / "asyncq.db").exists()


def test_a_sample_failure_fails(tmp_path: Path) -> None:
    # The runner would notice a broken plugin: without it the fixtures are missing.
    shutil.copy(SAMPLE, tmp_path / "test_sample.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env["SAMPLE_MARK"] = "anyio"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "anyio.pytest_plugin"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "fixture 'jobs' not found" in result.stdout


def test_registered_as_a_pytest11_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["pytest11"] == {"asyncq": "asyncq.pytest_plugin"}


def test_the_fastapi_page_test_passes(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    shutil.copy(ROOT / "tests" / "plugin_samples" / "sample_fastapi.py", tmp_path / "test_api.py")
    (tmp_path / "pytest.ini").write_text(INI)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env["ASYNCQ_INLINE_WORKER"] = "0"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "asyncq.pytest_plugin"]
    command += ["-p", "pytest_asyncio.plugin", "-o", "asyncio_mode=auto", *LOOP_SCOPE]
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b1 passed\b", result.stdout), result.stdout


def test_sync_tests_under_plain_pytest(tmp_path: Path) -> None:
    shutil.copy(
        ROOT / "tests" / "plugin_samples" / "sample_sync.py", tmp_path / "test_sync_view.py"
    )
    (tmp_path / "pytest.ini").write_text(INI)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("ASYNCQ_BACKEND", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "asyncq.pytest_plugin"]
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b2 passed\b", result.stdout), result.stdout
