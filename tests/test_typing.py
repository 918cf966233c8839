"""The typing checks in ``tests/typing`` pass mypy, so a typing regression fails the suite."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import asyncq

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ROOT / "tests" / "typing" / "check_public_api.py"


def mypy(*paths: Path) -> subprocess.CompletedProcess[str]:
    """Run mypy with the repository's configuration (strict), ignores that must be used."""
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        # strict = true implies it; say it here too, since the checks rely on it
        "--warn-unused-ignores",
        "--no-error-summary",
        *map(str, paths),
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_public_api_type_checks() -> None:
    result = mypy(CHECKS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_run_fails_on_wrong_types_and_stale_ignores(tmp_path: Path) -> None:
    # Proves the run above would catch a regression: a wrong assert_type and
    # an ignore that is no longer needed both fail.
    probe = tmp_path / "probe_typing.py"
    probe.write_text(
        textwrap.dedent(
            """
            from typing import assert_type

            import msgspec

            from asyncq import App, Handler


            class P(msgspec.Struct):
                x: int


            async def check(app: App) -> None:
                @app.job(schema=P)
                async def f(p: P) -> int:
                    return p.x

                assert_type(f, Handler[P, str])
                await f.enqueue(P(1))  # type: ignore[arg-type]
            """
        )
    )
    result = mypy(probe)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any("[assert-type]" in line for line in lines), result.stdout
    assert any('Unused "type: ignore" comment' in line for line in lines), result.stdout


def test_checks_import_without_running_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("check_public_api", CHECKS)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    checks = [v for k, v in vars(module).items() if k.startswith("check_")]
    assert checks
    assert all(inspect.iscoroutinefunction(c) for c in checks)
    assert not [v for v in vars(module).values() if isinstance(v, asyncq.App)]
