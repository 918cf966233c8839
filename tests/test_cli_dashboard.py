"""``asyncq dashboard``: the real command serves the dashboard, behind its token."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from _cli import WriteModule, invoke
from _services import free_port

APP_SOURCE = """
    from asyncq import App

    app = App("served")

    @app.job(schema=dict, name="noop", queue="chores")
    async def noop(payload: dict) -> None:
        return None
"""


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_the_command_serves_the_dashboard_behind_its_token(tmp_path: Path) -> None:
    (tmp_path / "servedapp.py").write_text(APP_SOURCE.replace("\n    ", "\n"))
    port = free_port()
    env = {
        **os.environ,
        "ASYNCQ_BACKEND": f"sqlite:///{tmp_path / 'jobs.db'}",
        "ASYNCQ_DASHBOARD_TOKEN": "from-env",
    }
    command = [sys.executable, "-m", "asyncq", "dashboard", "servedapp:app", "--port", str(port)]
    process = await anyio.open_process(command, cwd=tmp_path, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            with anyio.fail_after(30):
                while True:  # nothing tells when the server listens but the server itself
                    try:
                        first = await http.get("/")
                        break
                    except httpx.ConnectError:
                        assert process.returncode is None, "the command exited"
                        await anyio.sleep(0.1)
            assert first.status_code == 303
            assert first.headers["location"] == "/login?next=%2F"
            signed = await http.get("/", headers={"Authorization": "Bearer from-env"})
            assert signed.status_code == 200
            assert "chores" in signed.text
            assert (await http.get("/static/dashboard.css")).status_code == 200
    finally:
        process.terminate()
        await process.wait()
        await process.aclose()


def test_help_names_every_option(cli_isolated: None) -> None:
    result = invoke("dashboard", "--help")
    assert result.exit_code == 0
    for option in ("--host", "--port", "--read-only", "--token", "ASYNCQ_DASHBOARD_TOKEN"):
        assert option in result.stdout


def test_without_the_extra_the_command_names_it(
    write_module: WriteModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = write_module(APP_SOURCE)
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = invoke("dashboard", f"{module}:app")
    assert result.exit_code == 2
    assert "pip install 'asyncq[dashboard]'" in result.stderr


def test_a_public_address_without_a_token_is_warned_of(
    write_module: WriteModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    module = write_module(APP_SOURCE)
    served: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append(options))
    result = invoke("dashboard", f"{module}:app", "--host", "0.0.0.0", "--backend", "memory://")
    assert result.exit_code == 0, result.output
    assert "warning: the dashboard listens on 0.0.0.0 with no --token" in result.stderr
    assert served == [{"host": "0.0.0.0", "port": 8181, "log_level": "warning", "lifespan": "off"}]
    quiet = invoke("dashboard", f"{module}:app", "--read-only", "--backend", "memory://")
    assert "warning" not in quiet.stderr
