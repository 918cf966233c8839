"""``asyncq workers``: the store's worker registry as a table and as JSON, on every backend.

Commands run in-process against ``tests/ops_app.py`` on the parametrized
backend, as in ``test_cli_ops.py``.
"""

from __future__ import annotations

import json
import os
import socket

import anyio
import pytest

from ops_app import Note, app, asyncq, note

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("lent")]

APP = "ops_app:app"


async def test_no_workers_yet() -> None:
    result = await asyncq("workers", APP)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("no workers registered")
    listed = await asyncq("workers", APP, "--json")
    assert json.loads(listed.stdout) == []


async def test_a_running_then_stopped_worker() -> None:
    with anyio.fail_after(20):
        async with app.worker(concurrency=3, heartbeat=0.05, lease=5, name="w-1") as worker:
            assert await note.enqueue_and_wait(Note("hi"), timeout=10) == "hi"
            result = await asyncq("workers", APP)
            listed = json.loads((await asyncq("workers", APP, "--json")).stdout)
        stopped = json.loads((await asyncq("workers", APP, "--json")).stdout)
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == [
        "ID",
        "HOST",
        "PID",
        "STATUS",
        "QUEUES",
        "RUNNING",
        "PROCESSED/FAILED/DEAD",
        "UPTIME",
        "LAST",
        "SEEN",
    ]
    cells = row.split()
    assert cells[:4] == ["w-1", socket.gethostname(), str(os.getpid()), "running"]
    assert cells[5] == "0/3"
    [entry] = listed
    assert entry["id"] == worker.name == "w-1"
    assert entry["status"] == "running"
    assert entry["queues"] == worker.queues
    assert entry["stopped_at"] is None
    [after] = stopped
    assert after["status"] == "stopped"
    assert after["processed"] == 1
    assert after["stopped_at"] is not None
