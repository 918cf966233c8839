"""The operator verbs' argument rules, written once (``asyncq.backends._verbs``)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from asyncq._records import JobRecord, JobState, Lease, Outcome
from asyncq.backends._verbs import (
    ClaimQuery,
    DeadQuery,
    JobQuery,
    OperatorVerbs,
    PurgeQuery,
    SettlesAndClaims,
)

pytestmark = pytest.mark.anyio


class Recorder(OperatorVerbs):
    """A store that records the queries it is given."""

    def __init__(self) -> None:
        self.queries: list[object] = []

    async def _list_jobs(self, query: JobQuery) -> list[JobRecord]:
        self.queries.append(query)
        return []

    async def _retry_dead(self, query: DeadQuery) -> list[str]:
        self.queries.append(query)
        return []

    async def _purge(self, query: PurgeQuery) -> int:
        self.queries.append(query)
        return 0


async def test_list_jobs_passes_its_filters_and_asks_nothing_for_no_rows() -> None:
    store = Recorder()
    await store.list_jobs(state=JobState.DEAD, queue="q", name="n", limit=5, after="a")
    assert await store.list_jobs(limit=0) == []
    assert await store.list_jobs(limit=-3) == []
    assert store.queries == [JobQuery(JobState.DEAD, "q", "n", 5, "a")]


async def test_retry_dead_takes_each_id_once_in_order() -> None:
    store = Recorder()
    await store.retry_dead(["b", "a", "b"])
    await store.retry_dead(queue="q", name="n", limit=7)
    assert await store.retry_dead([]) == []
    assert await store.retry_dead(limit=0) == []
    assert store.queries == [
        DeadQuery(("b", "a"), None, None, 1000),
        DeadQuery(None, "q", "n", 7),
    ]


async def test_purge_takes_only_finished_states() -> None:
    store = Recorder()
    await store.purge(states=[JobState.DEAD, JobState.DEAD], older_than=5.0, queue="q", limit=3)
    assert await store.purge(states=[], older_than=5.0) == 0
    assert await store.purge(states=[JobState.DEAD], older_than=5.0, limit=0) == 0
    with pytest.raises(ValueError, match="only removes finished jobs"):
        await store.purge(states=[JobState.ACTIVE], older_than=5.0)
    assert store.queries == [PurgeQuery(frozenset({JobState.DEAD}), 5.0, "q", 3)]


class Fusing(SettlesAndClaims):
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    async def _settle_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimQuery
    ) -> tuple[list[bool], list[Lease]]:
        self.calls.append((list(outcomes), *claim))
        return [True] * len(outcomes), []


async def test_settle_and_claim_checks_outcomes_before_the_store_sees_them() -> None:
    store = Fusing()
    done = Outcome(job_id="j", token="t", state=JobState.COMPLETED)
    assert await store.settle_and_claim([done], ["q"], 3, worker="w", lease_for=5.0) == (
        [True],
        [],
    )
    with pytest.raises(ValueError, match="not an outcome"):
        await store.settle_and_claim(
            [Outcome(job_id="j", token="t", state=JobState.ACTIVE)],
            ["q"],
            3,
            worker="w",
            lease_for=5.0,
        )
    assert store.calls == [([done], ["q"], 3, "w", 5.0)]
