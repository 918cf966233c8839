"""A worker's entry in the store's registry, and the cancel notices it listens to.

- ``Registration`` builds the worker's ``WorkerInfo``; the worker puts it
  as it starts, ``keep_registered`` again every heartbeat interval (one
  ``put_worker`` call per tick, beside the heartbeat's own), and
  ``Registration.goodbye`` puts it once more, stopped, when the worker ends.
  A put that fails is logged and tried again at the next tick: the registry
  is for operators, and never stops a worker;
- ``hear_cancels`` passes the cancel notices of a store that pushes them
  (``PUSHES_CANCEL``) to the worker at once, the way the heartbeat's cancel
  list reaches it; a notice lost on the way is still caught by that list.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from ._execution import StopReason
from ._records import WorkerInfo
from .exceptions import BackendError

if TYPE_CHECKING:
    from ._worker import Worker
    from .backends.base import Backend, PushesCancel

__all__ = ["Registration", "hear_cancels", "keep_registered"]

log = logging.getLogger("asyncq.worker")

#: Seconds the goodbye of a stopping worker may take at most.
GOODBYE_TIMEOUT = 2.0


class Registration:
    """What a worker tells the registry about itself."""

    def __init__(self, worker: Worker) -> None:
        from . import __version__

        self._worker = worker
        self._version = __version__
        self._host = socket.gethostname()
        self._pid = os.getpid()
        self._started_at = time.time()

    def info(self, *, stopped: bool = False) -> WorkerInfo:
        """The worker as it is now (``stopped``: saying goodbye)."""
        worker = self._worker
        now = time.time()
        return WorkerInfo(
            id=worker.name,
            host=self._host,
            pid=self._pid,
            app=worker.app.name,
            queues=tuple(worker.queues),
            concurrency=worker.concurrency,
            started_at=self._started_at,
            last_seen=now,
            lease_for=worker.lease,
            version=self._version,
            running=tuple(worker.running),
            processed=worker.processed,
            failed=worker.failed,
            dead=worker.dead,
            stopped_at=now if stopped else None,
        )

    async def put(self, backend: Backend) -> bool:
        """Put the worker's entry; whether the store took it (a failure is logged)."""
        try:
            await backend.put_worker(self.info())
        except BackendError as exc:
            log.warning("worker %s: registering failed (retried): %s", self._worker.name, exc)
            return False
        return True

    async def goodbye(self, backend: Backend) -> None:
        """Mark the worker stopped in the registry, within ``GOODBYE_TIMEOUT`` seconds."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(GOODBYE_TIMEOUT):
            try:
                await backend.put_worker(self.info(stopped=True))
            except BackendError as exc:
                log.warning("worker %s: saying goodbye failed: %s", self._worker.name, exc)


async def keep_registered(registration: Registration, backend: Backend, every: float) -> None:
    """Put the worker's entry every ``every`` seconds, until cancelled (the worker
    put it once already, as it started)."""
    while True:
        await anyio.sleep(every)
        await registration.put(backend)


async def hear_cancels(
    pushes: PushesCancel,
    worker: str,
    every: float,
    stop: Callable[[str, StopReason], None],
) -> None:
    """Stop the jobs the store says were cancelled, as it says so, until cancelled.

    Args:
        pushes: the backend, as a store that pushes cancel notices.
        worker: the worker's name, for logs.
        every: seconds to wait before listening again after a failure.
        stop: ``stop(job_id, reason)``; ignores jobs the worker does not hold.
    """

    def heard(job_id: str) -> None:
        stop(job_id, StopReason.CANCEL)

    while True:
        try:
            await pushes.watch_cancels(heard)
        except BackendError as exc:
            log.warning("worker %s: listening for cancels failed (retried): %s", worker, exc)
        await anyio.sleep(every)
