"""asyncq's ``scale`` scenario: drain-noop with 1, 2 or 4 worker processes.

The jobs are enqueued here (untimed), then K ``benchmarks.asyncq_worker``
processes start, connect and say ready; the timer starts at ``go`` and stops
at the last job's completion (see ``benchmarks/peers/_harness.py``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import anyio

from .asyncq_bench import DEFAULT_URLS, Noop, drop_all, make_app, make_backend
from .peers._harness import run_worker_processes

REPO = Path(__file__).resolve().parent.parent
BATCH = 1000


def new_namespace() -> str:
    return f"bench{uuid.uuid4().hex[:8]}"


async def prefill(url: str, namespace: str, n: int) -> None:
    backend = make_backend(url, namespace)
    app, noop, _ = make_app(backend)
    async with app:
        payloads = [Noop(i) for i in range(n)]
        for start in range(0, n, BATCH):
            await noop.enqueue_many(payloads[start : start + BATCH])


def cleanup(url: str, namespace: str) -> None:
    """Drop what the run left: a Redis namespace, a PostgreSQL schema, a SQLite file."""
    url = DEFAULT_URLS.get(url, url)
    if url.startswith("sqlite"):
        path = Path(tempfile.gettempdir()) / f"bench-{namespace}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        anyio.run(_drop, url, namespace)


async def _drop(url: str, namespace: str) -> None:
    backend = make_backend(url, namespace)
    try:
        await drop_all(backend)
    finally:
        await backend.close()


def worker_argv(
    url: str, namespace: str, concurrency: int, *extra: str, loop: str = "asyncio"
) -> list[str]:
    return [
        sys.executable, "-m", "benchmarks.asyncq_worker", "--loop", loop,
        "--backend", url, "--namespace", namespace, "--concurrency", str(concurrency), *extra,
    ]  # fmt: skip


def scenario_scale(url: str, n: int, processes: int, loop: str = "asyncio") -> dict[str, Any]:
    if DEFAULT_URLS.get(url, url).startswith("memory"):
        return {"na": "the memory backend lives in one process"}
    namespace = new_namespace()
    try:
        anyio.run(prefill, url, namespace, n)
        result = run_worker_processes(
            worker_argv(url, namespace, 100, loop=loop), processes, n, cwd=os.fspath(REPO)
        )
    finally:
        cleanup(url, namespace)
    return {**result, "n": n, "concurrency": 100}
