"""Settlement: outcomes buffered, carried by claims on a store that fuses, settled in batches.

A small fake store records what it is asked; its settles can be held at a
gate or made to fail, so every ordering is driven by events, not by time.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from asyncq import JobState
from asyncq._records import JobRecord, Lease, Outcome
from asyncq._settlement import Settlement, fusing
from asyncq.backends._verbs import ClaimQuery, SettlesAndClaims
from asyncq.backends.base import SETTLE_ON_CLAIM, Capability
from asyncq.exceptions import BackendError, BackendUnavailable

pytestmark = pytest.mark.anyio

_ids = itertools.count(1)


def lease() -> Lease:
    job_id = f"job-{next(_ids)}"
    record = JobRecord(id=job_id, name="item", queue="default", payload=b"", state=JobState.ACTIVE)
    return Lease(job=record, token=f"token-{job_id}", expires_at=0.0)


def done(held: Lease) -> Outcome:
    return Outcome(job_id=held.job.id, token=held.token, state=JobState.COMPLETED)


class Store:
    """Answers claims from ``ready`` and records every settle, plain or fused, by job ids."""

    capabilities: frozenset[Capability[Any]] = frozenset()

    def __init__(self) -> None:
        self.ready: list[Lease] = []
        self.claims: list[int] = []
        self.settled: list[list[str]] = []
        self.fused: list[list[str]] = []
        #: outcomes the plain settles applied
        self.applied = 0
        #: settles (plain or fused, with outcomes) that fail before they apply anything
        self.fail = 0
        #: when set, a settle waits here after it is recorded
        self.gate: anyio.Event | None = None
        self._changed = anyio.Event()

    async def claim(
        self, queues: Sequence[str], limit: int, *, worker: str, lease_for: float
    ) -> list[Lease]:
        self.claims.append(limit)
        self._saw()
        leases, self.ready = self.ready[:limit], self.ready[limit:]
        return leases

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        self.settled.append([outcome.job_id for outcome in outcomes])
        await self._apply()
        self.applied += len(outcomes)
        return [True] * len(outcomes)

    async def until(self, check: Callable[[], bool]) -> None:
        """Wait until ``check()`` holds, looking again after each call the store gets."""
        while not check():
            await self._changed.wait()

    async def _apply(self) -> None:
        self._saw()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            msg = "the store went away"
            raise BackendUnavailable(msg)

    def _saw(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()


class FusingStore(Store, SettlesAndClaims):
    """A store that settles with its claims (``SettlesOnClaim``)."""

    capabilities: frozenset[Capability[Any]] = frozenset({SETTLE_ON_CLAIM})

    async def _settle_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimQuery
    ) -> tuple[list[bool], list[Lease]]:
        self.fused.append([outcome.job_id for outcome in outcomes])
        await self._apply()
        leases, self.ready = self.ready[: claim.limit], self.ready[claim.limit :]
        return [True] * len(outcomes), leases


def settlement_for(store: Store) -> Settlement:
    backend: Any = store
    return Settlement(backend, worker="w1", queues=["default"], lease=30.0)


@asynccontextmanager
async def settling(store: Store) -> AsyncIterator[Settlement]:
    """A settlement on ``store`` whose settle loop runs in the background of the block (bounded)."""
    settlement = settlement_for(store)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(settlement.run)
            yield settlement
            tg.cancel_scope.cancel()


async def claimed(settlement: Settlement, store: Store, count: int) -> list[Lease]:
    store.ready = [lease() for _ in range(count)]
    expected = list(store.ready)
    leases = await settlement.claim(count)
    assert leases == expected
    return leases


def test_fusing_is_told_by_the_capability() -> None:
    fused: Any = FusingStore()
    plain: Any = Store()
    assert fusing(fused) is fused
    assert fusing(plain) is None
    # An instance that could fuse but says it does not (a Redis Cluster) is not fused.
    fused.capabilities = frozenset()
    assert fusing(fused) is None


async def test_a_claim_holds_its_leases_until_their_outcomes_are_settled() -> None:
    store = Store()
    async with settling(store) as settlement:
        first, second = await claimed(settlement, store, 2)
        assert store.claims == [2]
        assert settlement.unsettled == {first.job.id: first, second.job.id: second}
        assert settlement.leases() == [first, second]
        settlement.put(done(first))
        await settlement.wait_settled()
        assert store.settled == [[first.job.id]]
        assert settlement.unsettled == {second.job.id: second}
        settlement.forget(second.job.id)  # its lease was lost: nothing to settle
        assert settlement.leases() == []


async def test_without_fusion_outcomes_are_settled_while_the_fetch_loop_claims() -> None:
    store = Store()
    async with settling(store) as settlement:
        with settlement.claiming():
            [held] = await claimed(settlement, store, 1)
            settlement.put(done(held))
            await store.until(lambda: bool(store.settled))
            assert store.settled == [[held.job.id]]
            # A claim with outcomes waiting does not carry them on such a store.
            [other] = await claimed(settlement, store, 1)
            settlement.put(done(other))
            await store.until(lambda: len(store.settled) == 2)
            assert store.claims == [1, 1]


async def test_outcomes_ride_along_with_the_next_claim() -> None:
    store = FusingStore()
    async with settling(store) as settlement:
        with settlement.claiming():
            first, second = await claimed(settlement, store, 2)
            assert store.claims == [2], "no outcome waited: a plain claim"
            settlement.put(done(first))
            settlement.put(done(second))
            await anyio.wait_all_tasks_blocked()
            assert store.settled == [], "the settle loop leaves them to the claim"
            store.ready = [lease()]
            [third] = await settlement.claim(5)
            assert store.fused == [[first.job.id, second.job.id]]
            assert store.settled == []
            assert settlement.unsettled == {third.job.id: third}


async def test_a_parked_fetch_loop_leaves_the_outcomes_to_the_settle_loop() -> None:
    store = FusingStore()
    async with settling(store) as settlement:
        with settlement.claiming():
            first, second = await claimed(settlement, store, 2)
            settlement.put(done(first))
            settlement.park()  # what waited goes now
            await store.until(lambda: bool(store.settled))
            settlement.put(done(second))  # and what finishes while parked, too
            await store.until(lambda: len(store.settled) == 2)
            settlement.unpark()
            [third] = await claimed(settlement, store, 1)
            settlement.put(done(third))
            await anyio.wait_all_tasks_blocked()
            assert store.settled == [[first.job.id], [second.job.id]]
            assert store.fused == []
        # The fetch loop ended: the settle loop takes what it left.
        await store.until(lambda: len(store.settled) == 3)
        assert store.settled[-1] == [third.job.id]
        assert store.fused == []


async def test_outcomes_ride_along_only_when_no_settlement_is_in_flight() -> None:
    store = FusingStore()
    async with settling(store) as settlement:
        first, second = await claimed(settlement, store, 2)
        store.gate = anyio.Event()
        settlement.put(done(first))
        await store.until(lambda: bool(store.settled))  # held at the gate
        with settlement.claiming():
            settlement.put(done(second))
            store.ready = [lease()]
            await settlement.claim(1)
            assert store.fused == [], "outcomes of one job are never sent twice at once"
            assert store.claims == [2, 1]
        store.gate.set()
        await store.until(lambda: len(store.settled) == 2)
    assert store.settled == [[first.job.id], [second.job.id]]


async def test_a_failed_settle_keeps_its_outcomes_ahead_and_retries_on_its_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "asyncq.worker")
    store = Store()
    async with settling(store) as settlement:
        first, second = await claimed(settlement, store, 2)
        store.gate, store.fail = anyio.Event(), 1
        settlement.put(done(first))
        await store.until(lambda: bool(store.settled))
        settlement.put(done(second))  # finishes while the failing batch is in flight
        store.gate.set()
        # No other job finishes, yet the kept outcomes go again, oldest first.
        await store.until(lambda: len(store.settled) == 2)
        await settlement.wait_settled()
    assert store.settled == [[first.job.id], [first.job.id, second.job.id]]
    assert settlement.unsettled == {}
    assert any("settling 1 job(s) failed: the store went away" in r.message for r in caplog.records)


async def test_a_failed_settle_is_retried_though_no_other_job_finishes() -> None:
    store = Store()
    async with settling(store) as settlement:
        [held] = await claimed(settlement, store, 1)
        store.fail = 1
        settlement.put(done(held))
        await settlement.wait_settled()
    assert store.settled == [[held.job.id]] * 2
    assert settlement.unsettled == {}


async def test_a_batch_in_flight_is_finished_when_the_settle_loop_is_cancelled() -> None:
    store = Store()
    settlement = settlement_for(store)
    [held] = await claimed(settlement, store, 1)
    store.gate = anyio.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(settlement.run)
            settlement.put(done(held))
            await store.until(lambda: bool(store.settled))
            tg.cancel_scope.cancel()
            store.gate.set()
    assert store.applied == 1
    assert settlement.unsettled == {}


async def test_a_failed_fused_claim_keeps_its_outcomes_for_the_next_claim() -> None:
    store = FusingStore()
    settlement = settlement_for(store)
    with settlement.claiming():
        first, second = await claimed(settlement, store, 2)
        settlement.put(done(first))
        store.fail = 1
        with pytest.raises(BackendError, match="the store went away"):
            await settlement.claim(1)
        settlement.put(done(second))
        await settlement.claim(1)
    assert store.fused == [[first.job.id], [first.job.id, second.job.id]]
    assert settlement.unsettled == {}


async def test_the_final_flush_settles_what_is_left_even_after_a_failure() -> None:
    store = Store()
    settlement = settlement_for(store)
    held = await claimed(settlement, store, 3)
    for one in held:
        settlement.put(done(one))
    handed = lease()
    settlement.hand_back(handed)
    store.fail = 1
    with anyio.fail_after(10):
        await settlement.flush()
    ids = [one.job.id for one in held]
    assert store.settled == [[*ids, handed.job.id]] * 2, "the failed batch went again"
    assert settlement.unsettled == {}


async def test_a_job_handed_back_is_settled_queued_with_its_token() -> None:
    store = Store()
    settlement = settlement_for(store)
    [held] = await claimed(settlement, store, 1)
    sent: list[Outcome] = []

    async def settle(outcomes: Sequence[Outcome]) -> list[bool]:
        sent.extend(outcomes)
        return [True] * len(outcomes)

    store.settle = settle  # type: ignore[method-assign]
    settlement.hand_back(held)
    with anyio.fail_after(10):
        await settlement.flush()
    assert sent == [Outcome(job_id=held.job.id, token=held.token, state=JobState.QUEUED)]
    assert settlement.unsettled == {}
