"""Lease upkeep beside a worker: renewing the leases it holds, recovering those others let lapse.

- ``renew`` is the heartbeat: every lease the worker still holds (running,
  claimed ahead, or awaiting settlement) is renewed in one call, and the jobs
  whose lease was lost or whose cancellation was requested are reported to
  the worker, which stops them;
- ``maintain`` recovers the lapsed leases of dead workers and prunes what the
  store keeps no longer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from ._execution import StopReason
from .exceptions import BackendError

if TYPE_CHECKING:
    from ._settlement import Settlement
    from .backends.base import Backend

__all__ = ["maintain", "renew"]

log = logging.getLogger("asyncq.worker")


async def renew(
    settlement: Settlement,
    every: float,
    lease_for: float,
    stop: Callable[[str, StopReason], None],
) -> None:
    """Renew the held leases every ``every`` seconds until cancelled.

    Args:
        settlement: holds the leases; a lost one is forgotten.
        every: seconds between renewals.
        lease_for: seconds each renewal extends a lease by.
        stop: ``stop(job_id, reason)`` for a job whose lease was lost or whose
            cancellation was requested.
    """
    backend = settlement.backend
    while True:
        await anyio.sleep(every)
        leases = settlement.leases()
        if not leases:
            continue
        try:
            reply = await backend.heartbeat(leases, lease_for=lease_for)
        except BackendError as exc:
            log.warning("worker %s: heartbeat failed: %s", settlement.worker, exc)
            continue
        for job_id in reply.lost:
            settlement.forget(job_id)
            stop(job_id, StopReason.LOST)
        for job_id in reply.cancel:
            stop(job_id, StopReason.CANCEL)


async def maintain(backend: Backend, worker: str, every: float, start: anyio.Event) -> None:
    """Recover lapsed leases every ``every`` seconds, and prune now and then, until cancelled.

    Args:
        backend: the opened backend.
        worker: the worker's name, for logs.
        every: seconds between recoveries.
        start: set once the worker's first claim is done. The first claim goes
            first: at start a worker has free slots to fill, and recovered jobs
            are claimable by the next claim anyway.
    """
    prune_every = max(60.0, every)
    since_prune = math.inf
    await start.wait()
    while True:
        try:
            recovered = await backend.recover()
            if recovered:
                log.warning("worker %s: recovered %d lapsed job(s)", worker, recovered)
            if since_prune >= prune_every:
                await backend.prune()
                since_prune = 0.0
        except BackendError as exc:
            log.warning("worker %s: maintenance failed: %s", worker, exc)
        await anyio.sleep(every)
        since_prune += every
