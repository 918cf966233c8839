"""The worker registry's scripts (keys in the ``scripts`` layout docstring)."""

from __future__ import annotations

from typing import Any

from ..._records import WorkerInfo
from .._workers import decode_worker, encode_worker
from .scripts import Call, _Script

__all__ = ["ListWorkers", "PutWorker", "worker_keys"]


def worker_keys(namespace: str) -> list[str]:
    """The hash and the two sorted sets of the registry, in one slot."""
    tag = f"{{{namespace}}}:workers"
    return [tag, f"{tag}:seen", f"{tag}:expires"]


class PutWorker(_Script, name="put_worker"):
    """Register or renew a worker, stamped with ``TIME``; delete the expired entries."""

    @staticmethod
    def call(keys: list[str], info: WorkerInfo) -> Call:
        keep = info.expires_at() - info.last_seen
        return ("put_worker", keys, [info.id, encode_worker(info), repr(float(keep))])


class ListWorkers(_Script, name="list_workers"):
    """The entries not expired, by id; the expired ones are deleted."""

    @staticmethod
    def call(keys: list[str]) -> Call:
        return ("list_workers", keys, [])

    @staticmethod
    def reply(raw: Any) -> list[WorkerInfo]:
        found = []
        for i in range(0, len(raw), 3):
            info = decode_worker(raw[i + 1], float(raw[i + 2]))
            if info is not None:
                found.append(info)
        return sorted(found, key=lambda info: info.id)
