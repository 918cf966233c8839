"""The PostgreSQL backend's worker registry: the ``workers`` table's statements.

One row per worker: its ``WorkerInfo`` as MessagePack, ``last_seen`` stamped
with the server's clock, and when the row goes (``expires_at``). A put deletes
the expired rows of the other workers in the same statement; a list deletes
them too, then reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._records import WorkerInfo
from .._workers import decode_worker, encode_worker
from .sql import NOW

if TYPE_CHECKING:
    from .transport import Transport

__all__ = ["WorkerStatements"]


class WorkerStatements:
    """The registry's statements for one schema."""

    def __init__(self, schema: str) -> None:
        table = f'"{schema}".workers'
        self.put = f"""
            WITH gone AS (DELETE FROM {table} WHERE expires_at < {NOW} AND id <> $1)
            INSERT INTO {table} (id, info, last_seen, expires_at)
            VALUES ($1, $2, {NOW}, {NOW} + $3)
            ON CONFLICT (id) DO UPDATE
            SET info = EXCLUDED.info, last_seen = EXCLUDED.last_seen,
                expires_at = EXCLUDED.expires_at
        """
        self.list = f"""
            WITH gone AS (DELETE FROM {table} WHERE expires_at < {NOW} RETURNING id)
            SELECT info, last_seen FROM {table}
            WHERE id NOT IN (SELECT id FROM gone) ORDER BY id
        """

    async def put_worker(self, transport: Transport, info: WorkerInfo) -> None:
        keep = info.expires_at() - info.last_seen
        await transport.fetch(self.put, info.id, encode_worker(info), keep)

    async def workers(self, transport: Transport) -> list[WorkerInfo]:
        rows = await transport.fetch(self.list)
        found = (decode_worker(bytes(row[0]), float(row[1])) for row in rows)
        return [info for info in found if info is not None]
