"""What the stores share for the worker registry and for cancel notices.

- ``CancelWatchers``: the ``watch_cancels`` callbacks of one backend
  instance, called when a cancel of an active job is pushed in this process
  (every store) or heard from another (Redis, PostgreSQL) or read (SQLite);
- ``WorkerTable``: the registry of the memory store, kept in a dict;
- ``encode_worker`` / ``decode_worker``: the one encoding the other stores
  keep a ``WorkerInfo`` in (MessagePack).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio
import msgspec
from msgspec.structs import replace

from .._records import WorkerInfo

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

__all__ = ["CancelWatchers", "WorkerTable", "decode_worker", "encode_worker"]

log = logging.getLogger("asyncq.backend")

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(WorkerInfo)


def encode_worker(info: WorkerInfo) -> bytes:
    """``info`` as stored."""
    return _ENCODER.encode(info)


def decode_worker(raw: bytes, last_seen: float | None = None) -> WorkerInfo | None:
    """A stored ``WorkerInfo`` (``last_seen`` as the store stamped it); ``None`` if unreadable."""
    try:
        info = _DECODER.decode(raw)
    except msgspec.DecodeError:
        return None
    return info if last_seen is None else replace(info, last_seen=last_seen)


class CancelWatchers:
    """The ``watch_cancels`` callbacks of one backend instance."""

    __slots__ = ("_callbacks",)

    def __init__(self) -> None:
        self._callbacks: set[Callable[[str], None]] = set()

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    @contextmanager
    def watching(self, callback: Callable[[str], None]) -> Iterator[None]:
        """``callback`` is called for every cancel notice while the block runs."""
        self._callbacks.add(callback)
        try:
            yield
        finally:
            self._callbacks.discard(callback)

    def notify(self, job_ids: Iterable[str]) -> None:
        """Tell every watcher that these active jobs were cancelled."""
        for job_id in job_ids:
            for callback in list(self._callbacks):
                try:
                    callback(job_id)
                except Exception:
                    # One watcher's bug must not undo the cancel that was stored.
                    log.exception("a cancel watcher failed on job %s", job_id)

    async def watch(self, callback: Callable[[str], None], task_status: TaskStatus[None]) -> None:
        """``watch_cancels`` for a store whose notices all come through ``notify``."""
        with self.watching(callback):
            task_status.started()
            await anyio.sleep_forever()


class WorkerTable:
    """The memory store's worker registry: ``put_worker`` and ``workers`` on a dict."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[str, WorkerInfo] = {}

    def put(self, info: WorkerInfo, now: float) -> None:
        """Register or renew ``info``, seen ``now``; forget the expired entries."""
        self._entries[info.id] = replace(info, last_seen=now)
        self._expire(now)

    def listed(self, now: float) -> list[WorkerInfo]:
        """The entries not expired at ``now``, by id."""
        self._expire(now)
        return [self._entries[key] for key in sorted(self._entries)]

    def clear(self) -> None:
        self._entries.clear()

    def _expire(self, now: float) -> None:
        for key in [k for k, info in self._entries.items() if info.expires_at() < now]:
            del self._entries[key]
