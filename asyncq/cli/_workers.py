"""The ``workers`` command: the workers in the store's registry."""

from __future__ import annotations

import time
from typing import Any

import click

from .._records import WorkerInfo
from ..admin import Admin
from ._base import Verb, app_options, call, echo_json, open_app
from ._render import age, iso, table

__all__ = ["workers"]


def worker_dict(info: WorkerInfo, now: float) -> dict[str, Any]:
    """One worker for ``--json``: its record, its status, and times in ISO 8601."""
    return {
        "id": info.id,
        "status": info.status(now).value,
        "host": info.host,
        "pid": info.pid,
        "app": info.app,
        "queues": list(info.queues),
        "concurrency": info.concurrency,
        "running": list(info.running),
        "processed": info.processed,
        "failed": info.failed,
        "dead": info.dead,
        "started_at": iso(info.started_at),
        "last_seen": iso(info.last_seen),
        "stopped_at": iso(info.stopped_at),
        "lease_for": info.lease_for,
        "version": info.version,
    }


def workers_text(found: list[WorkerInfo], now: float) -> str:
    """The table: one worker a line."""
    if not found:
        return "no workers registered (none ran in the last 5 minutes)"
    rows = [
        [
            info.id,
            info.host,
            str(info.pid),
            info.status(now).value,
            ",".join(info.queues),
            f"{len(info.running)}/{info.concurrency}",
            f"{info.processed}/{info.failed}/{info.dead}",
            age((info.stopped_at or now) - info.started_at),
            age(now - info.last_seen),
        ]
        for info in found
    ]
    headers = [
        "ID",
        "HOST",
        "PID",
        "STATUS",
        "QUEUES",
        "RUNNING",
        "PROCESSED/FAILED/DEAD",
        "UPTIME",
        "LAST SEEN",
    ]
    return table(headers, rows, right=[2, 5, 6, 7, 8])


@click.command(cls=Verb)
@app_options
def workers(app_path: str, backend: str | None, as_json: bool) -> None:
    """List the workers: running ones, and those stopped or lost in the last 5 minutes."""
    app = open_app(app_path, backend)

    async def body(admin: Admin) -> list[WorkerInfo]:
        return await admin.workers()

    found = call(app, body)
    now = time.time()
    if as_json:
        echo_json([worker_dict(info, now) for info in found])
    else:
        click.echo(workers_text(found, now))
