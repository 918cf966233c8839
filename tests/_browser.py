"""What the dashboard's browser tests share: Chromium, a served dashboard, a worker process.

Playwright drives Debian's ``chromium`` (``/usr/bin/chromium``, or
``ASYNCQ_TEST_CHROMIUM``); it never downloads a browser. Without it the tests
skip and say why, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import IN_CI

__all__ = ["CHROMIUM", "SCREENSHOTS", "browser_or_skip", "serving", "worker_process"]

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CHROMIUM = os.environ.get("ASYNCQ_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: Where the screenshots of the pages go: the docs' images with ASYNCQ_SCREENSHOTS=1.
SCREENSHOTS = ROOT / "docs" / "images" / "dashboard"


def browser_or_skip() -> Any:
    """Launch headless Chromium through Playwright; skip (fail under CI) when either is missing."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -r requirements-dev.txt)"
    else:
        if not Path(CHROMIUM).exists():
            reason = (
                f"no Chromium at {CHROMIUM} (apt-get install chromium, or set ASYNCQ_TEST_CHROMIUM)"
            )
    if reason is not None:
        if IN_CI:
            pytest.fail(f"{reason}; CI=true: the browser tests must run")
        pytest.skip(reason)
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    return playwright, browser


@contextlib.contextmanager
def serving(asgi: Any) -> Iterator[str]:
    """Serve ``asgi`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    import uvicorn

    from _services import free_port

    port = free_port()
    config = uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:  # uvicorn says when it listens; nothing to await from here
        if not thread.is_alive() or time.monotonic() > deadline:
            msg = "the dashboard's server did not start"
            raise RuntimeError(msg)
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


@contextlib.contextmanager
def worker_process(store_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """``asyncq run dashboard_app:app`` against ``store_url``, stopped (SIGTERM) at the end."""
    env = {
        **os.environ,
        "ASYNCQ_BACKEND": store_url,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]),
    }
    command = [
        sys.executable,
        "-m",
        "asyncq",
        "run",
        "dashboard_app:app",
        "--concurrency",
        "4",
        "--lease",
        "5",
    ]
    process = subprocess.Popen(command, cwd=TESTS, env=env, stdout=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
