"""Settlement: a worker's finished attempts on their way to the store, in batches.

A worker hands every outcome (finished, stopped, or handed back untouched) to
its ``Settlement``, which holds the lease of every job claimed and not yet
settled, and sends the outcomes to the backend one of two ways:

- with the fetch loop's next claim, on a backend that settles on claim
  (``SettlesOnClaim``), while the fetch loop is about to claim: a busy worker
  then pays one round trip for both;
- otherwise by the settle loop (``run``), in batches: whatever finished while
  the previous batch was in flight goes in the next one, so acknowledgement
  costs at most one round trip per batch and a finished job is never held
  back until more work arrives.

A failed settlement, fused or not, keeps its outcomes ahead of newer ones for
the next try. Batches are shielded and serialised, so a batch in flight when
the worker stops is finished, not dropped, and the final flush waits for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio

from ._backoff import Backoff
from ._records import JobState, Lease, Outcome
from .backends.base import SETTLE_ON_CLAIM, SettlesOnClaim
from .exceptions import BackendError

if TYPE_CHECKING:
    from .backends.base import Backend

__all__ = ["Settlement", "fusing"]

log = logging.getLogger("asyncq.worker")


def fusing(backend: Backend) -> SettlesOnClaim | None:
    """``backend`` if it takes outcomes with its claims (``SETTLE_ON_CLAIM``), else ``None``.

    Answered by the instance: a Redis Cluster backend does not fuse, another Redis does.
    """
    return SETTLE_ON_CLAIM.of(backend)


class Settlement:
    """One worker's outcomes and unsettled leases, and the ways they reach the store.

    Args:
        backend: the opened backend.
        worker: the worker's name, in claims and logs.
        queues: the queues claims take jobs from.
        lease: seconds a claimed job's lease lasts; also bounds the final flush.

    Attributes:
        unsettled: the lease of every job claimed and not yet settled, by job id
            (running, claimed ahead, or its outcome waiting to be settled): the
            leases the worker's heartbeat renews. Only the settlement changes it.
    """

    def __init__(
        self, backend: Backend, *, worker: str, queues: Sequence[str], lease: float
    ) -> None:
        self.backend = backend
        self.worker = worker
        self.queues = queues
        self.lease = lease
        self.unsettled: dict[str, Lease] = {}
        self._fused = fusing(backend)
        self._outcomes: list[Outcome] = []
        self._outcomes_ready = anyio.Event()
        # Whether claims may carry outcomes (the fetch loop runs and the backend
        # fuses), and whether they will: that, unless the fetch loop is parked.
        # While _claiming is true the settle loop leaves the outcomes alone.
        self._carry = False
        self._claiming = False
        self._settle_lock = anyio.Lock()
        self._settled = anyio.Event()

    # -- what the worker hands over ------------------------------------------------

    def put(self, outcome: Outcome) -> None:
        """Buffer an attempt's outcome and wake the settle loop, unless a claim will take it."""
        self._outcomes.append(outcome)
        if not self._claiming:
            self._outcomes_ready.set()

    def hand_back(self, lease: Lease) -> None:
        """Return a job this worker claimed but never started to its queue, untouched."""
        self.put(Outcome(job_id=lease.job.id, token=lease.token, state=JobState.QUEUED))

    def forget(self, job_id: str) -> None:
        """Stop holding a lease this worker lost: its job's outcome will never be settled here."""
        self.unsettled.pop(job_id, None)

    def leases(self) -> list[Lease]:
        """The leases held now (see ``unsettled``)."""
        return list(self.unsettled.values())

    # -- the fetch loop's claims -------------------------------------------------------

    @contextmanager
    def claiming(self) -> Iterator[None]:
        """Around the fetch loop: its claims carry the waiting outcomes if the backend fuses.

        When it ends, the settle loop takes whatever is left.
        """
        self._carry = self._claiming = self._fused is not None
        try:
            yield
        finally:
            self._carry = self._claiming = False
            self._outcomes_ready.set()

    def park(self) -> None:
        """The fetch loop waits (for work, a slot, or a retry): the settle loop sends meanwhile.

        While it is parked no claim can carry outcomes, so the settle loop
        sends them at once: a producer waiting on a result never waits for
        more work to arrive.
        """
        if self._claiming:
            self._claiming = False
            if self._outcomes:
                self._outcomes_ready.set()

    def unpark(self) -> None:
        """The fetch loop is back: outcomes wait for its next claim again, if claims carry them."""
        self._claiming = self._carry

    async def claim(self, limit: int) -> list[Lease]:
        """Claim up to ``limit`` jobs, settling the waiting outcomes in the same call if possible.

        The outcomes ride along only when the backend settles on claim and no
        settlement is in flight (outcomes of one job are never sent twice at
        once). The caller shields the call. The claimed leases are held until
        settled.

        Raises:
            BackendError: the claim failed; outcomes it carried are kept.
        """
        fused = self._fused if self._outcomes else None
        if fused is not None:
            try:
                self._settle_lock.acquire_nowait()
            except anyio.WouldBlock:
                fused = None  # a settlement is in flight: a plain claim
        if fused is None:
            leases = await self.backend.claim(
                self.queues, limit, worker=self.worker, lease_for=self.lease
            )
        else:
            try:
                batch, self._outcomes = self._outcomes, []
                try:
                    _, leases = await fused.settle_and_claim(
                        batch, self.queues, limit, worker=self.worker, lease_for=self.lease
                    )
                except BackendError as exc:
                    self._keep(batch, exc)
                    raise
                self._settled_batch(batch)
            finally:
                self._settle_lock.release()
        unsettled = self.unsettled
        for lease in leases:
            unsettled[lease.job.id] = lease
        return leases

    async def wait_settled(self) -> None:
        """Wait until a batch is settled since the last call returned."""
        await self._settled.wait()
        self._settled = anyio.Event()

    # -- the settle loop ---------------------------------------------------------------

    async def run(self) -> None:
        """Settle the outcomes no claim takes, batch after batch, until cancelled."""
        backoff = Backoff()
        while True:
            await self._outcomes_ready.wait()
            self._outcomes_ready = anyio.Event()
            if self._claiming:
                continue  # the fetch loop's next claim takes them
            if await self._settle_batch():
                backoff.reset()
            else:
                # The kept outcomes are retried even if no other job finishes:
                # a waiting producer must not depend on more work arriving.
                await backoff.wait(f"worker {self.worker}: settling again", None)
                self._outcomes_ready.set()

    async def flush(self) -> None:
        """Settle what is buffered before the worker goes (shielded, bounded)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(max(self.lease, 5.0)):
            backoff = Backoff()
            while self._outcomes:
                if not await self._settle_batch():
                    await backoff.wait(f"worker {self.worker}: final settle failed", None)

    async def _settle_batch(self) -> bool:
        # Shielded and serialised: a batch in flight when the worker stops is
        # finished, not dropped, and the final flush waits for it.
        settled = False
        with anyio.CancelScope(shield=True):
            async with self._settle_lock:
                settled = await self._settle_locked()
        return settled

    async def _settle_locked(self) -> bool:
        batch, self._outcomes = self._outcomes, []
        if not batch:
            return True
        try:
            await self.backend.settle(batch)
        except BackendError as exc:
            self._keep(batch, exc)
            return False
        self._settled_batch(batch)
        return True

    def _keep(self, batch: list[Outcome], exc: BackendError) -> None:
        """Put back outcomes whose settlement failed, ahead of newer ones, for the next try.

        If the leases lapse meanwhile the jobs run again elsewhere
        (at-least-once), and these outcomes are refused.
        """
        self._outcomes[:0] = batch
        log.warning("worker %s: settling %d job(s) failed: %s", self.worker, len(batch), exc)

    def _settled_batch(self, batch: list[Outcome]) -> None:
        for outcome in batch:
            self.unsettled.pop(outcome.job_id, None)
        self._settled.set()
