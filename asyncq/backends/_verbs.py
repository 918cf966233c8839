"""Verb signatures and argument rules, written once for every store.

``list_jobs``, ``retry_dead``, ``purge`` and ``remove`` take the same
keywords on every store, with the same defaults and the same checks (a limit
of zero or less finds nothing, ``purge`` removes only finished states, ids are
taken once each). ``OperatorVerbs`` owns that part; a store that inherits it writes only
how it finds, retries and deletes jobs, from one typed query each. The
semantics stay specified once, on the ``Backend`` protocol (``base.py``).

None of these verbs is on a worker's hot path. ``SettlesAndClaims`` gives
``settle_and_claim`` (which is) its signature and its check the same way,
without a coroutine of its own: it returns the store's.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any, NamedTuple

from .._records import JobRecord, JobState, Lease, Outcome
from .base import Retention, check_outcomes, purgeable

__all__ = ["ClaimQuery", "DeadQuery", "JobQuery", "OperatorVerbs", "PurgeQuery", "SettlesAndClaims"]


class JobQuery(NamedTuple):
    """What ``list_jobs`` was asked for; ``limit`` is at least 1.

    ``newest``: by id descending, ``after`` then meaning "smaller than".
    """

    state: JobState | None
    queue: str | None
    name: str | None
    limit: int
    after: str | None
    newest: bool = False


class DeadQuery(NamedTuple):
    """Which dead jobs ``retry_dead`` puts back.

    ``job_ids``: those jobs (each once, in the order given, at least one),
    whatever ``queue``/``name``/``limit`` say; ``None``: up to ``limit``
    (at least 1) dead jobs matching ``queue`` and ``name``, oldest first.
    """

    job_ids: tuple[str, ...] | None
    queue: str | None
    name: str | None
    limit: int


class PurgeQuery(NamedTuple):
    """What ``purge`` deletes: finished jobs in ``states`` that finished before ``older_than``."""

    states: frozenset[JobState]
    older_than: float
    queue: str | None
    limit: int


class ClaimQuery(NamedTuple):
    """The claim half of ``settle_and_claim``: ``claim``'s arguments."""

    queues: Sequence[str]
    limit: int
    worker: str
    lease_for: float


class OperatorVerbs:
    """``list_jobs``, ``retry_dead``, ``purge`` and ``remove`` with the protocol's signatures.

    A store inherits this class and implements ``_list_jobs``,
    ``_retry_dead``, ``_purge`` and ``_remove``; each receives a query
    already checked (``_remove``: ids, each once, at least one).
    It also answers ``retention``, which the store sets as ``_retention``.
    """

    __slots__ = ()

    _retention: Retention

    @property
    def retention(self) -> Retention:
        """How long ``prune`` keeps finished jobs."""
        return self._retention

    async def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 100,
        after: str | None = None,
        newest: bool = False,
    ) -> list[JobRecord]:
        """See ``Backend.list_jobs``."""
        if limit <= 0:
            return []
        return await self._list_jobs(JobQuery(state, queue, name, limit, after, newest))

    async def retry_dead(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 1000,
    ) -> list[str]:
        """See ``Backend.retry_dead``."""
        ids = None if job_ids is None else tuple(dict.fromkeys(job_ids))
        if ids == () or (ids is None and limit <= 0):
            return []
        return await self._retry_dead(DeadQuery(ids, queue, name, limit))

    async def purge(
        self,
        *,
        states: Sequence[JobState],
        older_than: float,
        queue: str | None = None,
        limit: int = 10_000,
    ) -> int:
        """See ``Backend.purge``.

        Raises:
            ValueError: a state in ``states`` is not a finished one.
        """
        wanted = purgeable(states)
        if not wanted or limit <= 0:
            return 0
        return await self._purge(PurgeQuery(wanted, older_than, queue, limit))

    async def remove(self, job_ids: Sequence[str]) -> list[JobState | None]:
        """See ``Backend.remove``."""
        ids = tuple(dict.fromkeys(job_ids))
        if not ids:
            return []
        found = dict(zip(ids, await self._remove(ids), strict=True))
        return [found[job_id] for job_id in job_ids]

    async def _list_jobs(self, query: JobQuery) -> list[JobRecord]:
        raise NotImplementedError

    async def _remove(self, job_ids: tuple[str, ...]) -> list[JobState | None]:
        raise NotImplementedError

    async def _retry_dead(self, query: DeadQuery) -> list[str]:
        raise NotImplementedError

    async def _purge(self, query: PurgeQuery) -> int:
        raise NotImplementedError


class SettlesAndClaims:
    """``settle_and_claim`` (``SettlesOnClaim``) with the protocol's signature and check.

    A store that fuses settling and claiming inherits this class and
    implements ``_settle_and_claim``, which receives outcomes already checked
    (``check_outcomes``). No coroutine is added on the hot path: the method
    returns the store's own.
    """

    __slots__ = ()

    def settle_and_claim(
        self,
        outcomes: Sequence[Outcome],
        queues: Sequence[str],
        limit: int,
        *,
        worker: str,
        lease_for: float,
    ) -> Coroutine[Any, Any, tuple[list[bool], list[Lease]]]:
        """See ``SettlesOnClaim.settle_and_claim``.

        Raises:
            ValueError: an outcome has no meaning (before anything is applied).
        """
        check_outcomes(outcomes)
        return self._settle_and_claim(outcomes, ClaimQuery(queues, limit, worker, lease_for))

    async def _settle_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimQuery
    ) -> tuple[list[bool], list[Lease]]:
        raise NotImplementedError
