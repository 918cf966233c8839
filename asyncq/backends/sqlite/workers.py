"""The SQLite backend's worker registry, and the cancels it reads for other processes.

``asyncq_workers`` holds one row per worker: its ``WorkerInfo`` as
MessagePack, when it was last seen and when its row goes (``expires_at``).
Every put and list deletes the rows whose time has passed.

SQLite cannot notify another process: ``cancel_requests`` is what a worker's
``watch_cancels`` reads every ``poll_interval`` seconds, and only when
another connection committed since its last look (``PRAGMA data_version``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._records import WorkerInfo
from .._workers import decode_worker, encode_worker
from .sql import data_version

if TYPE_CHECKING:
    import sqlite3

__all__ = ["cancel_requests", "list_workers", "put_worker"]


def put_worker(conn: sqlite3.Connection, now: float, info: WorkerInfo) -> None:
    """Register or renew ``info``, seen ``now``; delete the expired rows."""
    keep = info.expires_at() - info.last_seen
    conn.execute(
        "INSERT OR REPLACE INTO asyncq_workers (id, info, last_seen, expires_at)"
        " VALUES (?, ?, ?, ?)",
        (info.id, encode_worker(info), now, now + keep),
    )
    conn.execute("DELETE FROM asyncq_workers WHERE expires_at < ?", (now,))


def list_workers(conn: sqlite3.Connection, now: float) -> list[WorkerInfo]:
    """The rows not expired, by id (expired ones are deleted)."""
    conn.execute("DELETE FROM asyncq_workers WHERE expires_at < ?", (now,))
    rows = conn.execute("SELECT info, last_seen FROM asyncq_workers ORDER BY id").fetchall()
    found = (decode_worker(bytes(info), float(seen)) for info, seen in rows)
    return [info for info in found if info is not None]


def cancel_requests(
    conn: sqlite3.Connection, now: float, since: int | None
) -> tuple[int, list[str]] | None:
    """The data version and the active jobs whose cancel was requested;
    ``None`` if no other connection committed since ``since``."""
    version = data_version(conn)
    if version == since:
        return None
    rows = conn.execute(
        "SELECT id FROM asyncq_jobs WHERE state = 'active' AND cancel_requested = 1"
    ).fetchall()
    return version, [row[0] for row in rows]
