"""The Redis backend's operator verbs: ``stats``, ``list_jobs``, ``retry_dead``,
``purge``, ``remove``, ``set_paused``, ``prune`` and ``drop``.

None of them is on a worker's or a producer's path; ``RedisBackend`` gets them
from ``_Operations``, so they share its keys, its transport and its id cache.

Retention (``prune``), the same rule as every store's (``_common.prunable``):
a completed job with a ``result_ttl`` goes once it passed (``get`` and
``list_jobs`` hide it before that); any other finished job once it finished
longer ago than the backend's ``Retention`` keeps its state. The ``prune``
script reads the indexes ``purge`` reads too (``f:<state>``, by
``finished_at``) and ``expires``; no index is added, so settling costs what
it did. Completed jobs with and without a TTL share ``f:completed``: those
whose TTL is still to come are stepped over. A count cap (``max_dead``, ...)
deletes the oldest of ``f:<state>`` beyond it, read by ``ZCARD``: each script
call is atomic, so prunes from many workers at once never delete below the
cap, and need no lock. ``prune``, ``purge`` and ``remove`` drop the deleted
ids from the id index too; ``remove`` deletes with the same Lua function as
``purge`` (``delete_job``).

Listing by state reads a state's own index when it is small (dead or
cancelled jobs among many completed ones) and otherwise walks every job of
the queue in id order, ``_LIST_BUDGET`` jobs per script call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .._verbs import DeadQuery, JobQuery, OperatorVerbs, PurgeQuery
from ..base import CircuitState, JobRecord, JobState, LimitState, QueueStats, Retention
from .client import mapped
from .scripts import (
    Call,
    Circuits,
    Fetch,
    LimitStates,
    List,
    Prune,
    PruneLimits,
    Purge,
    Remove,
    RetryDead,
    SetPaused,
    StateIds,
    Stats,
)
from .transport import Command

__all__ = ["_Operations"]


class _Many(Protocol):
    """``Transport.many``: script calls, after plain commands, in one round trip."""

    def __call__(
        self, calls: Iterable[Call], before: Sequence[Command] = ..., /
    ) -> Awaitable[list[Any]]: ...


_PRUNE_BATCH = 500
#: ids a listing script call examines, at most (it returns a cursor to go on from)
_LIST_BUDGET = 2000
#: a state index holding more ids than this is not read whole: the listing walks ``all``
_GATHER_MAX = 5000


class _Operations(OperatorVerbs):
    """The operator verbs of ``RedisBackend``, on the state it holds.

    What the verbs use of the backend is declared here for the type checker;
    ``RedisBackend`` defines it.
    """

    _client: Any
    _ns: str
    _cluster: bool
    _closed: bool
    _owns: bool
    _queues_key: str
    _retention: Retention
    _where: OrderedDict[str, str]
    _many: _Many

    if TYPE_CHECKING:

        @property
        def url(self) -> str: ...

        def _prefix(self, queue: str) -> str: ...

        def _bucket(self, job_id: str) -> str: ...

        async def _one(self, call: Call) -> Any: ...

        async def _known_queues(self) -> list[str]: ...

        async def _prune_events(self, queues: Sequence[str]) -> None: ...

    async def _queues_of(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Queue of each known id, reading the index in one round trip for the rest."""
        found = {i: q for i in job_ids if (q := self._where.get(i)) is not None}
        missing = [i for i in dict.fromkeys(job_ids) if i not in found]
        if missing:
            pipe = self._client.pipeline()
            for job_id in missing:
                pipe.hget(self._bucket(job_id), job_id)
            for job_id, raw in zip(missing, await pipe.execute(), strict=True):
                if raw is not None:
                    found[job_id] = raw.decode()
        return found

    def _drop_from_index(self, pipe: Any, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            pipe.hdel(self._bucket(job_id), job_id)
            self._where.pop(job_id, None)

    async def _forget(self, job_ids: list[str]) -> None:
        if job_ids:
            pipe = self._client.pipeline()
            self._drop_from_index(pipe, job_ids)
            await pipe.execute()

    @mapped
    async def prune(self) -> int:
        queues = await self._known_queues()
        retention = self._retention
        keep = (retention.completed, retention.dead, retention.cancelled)
        most = (retention.max_completed, retention.max_dead, retention.max_cancelled)
        # Each queue in batches, the queues' batches pipelined, until none is full.
        going: dict[str, tuple[int, str]] = dict.fromkeys(queues, (0, ""))
        total = 0
        while going:
            calls = [
                Prune.call(self._prefix(q), _PRUNE_BATCH, keep, skip, now, most)
                for q, (skip, now) in going.items()
            ]
            pruned = [Prune.reply(reply) for reply in await self._many(calls)]
            ids = [i.decode() for page in pruned for i in page.ids]
            await self._forget(ids)
            total += len(ids)
            going = {
                q: (page.skip, page.now) for q, page in zip(going, pruned, strict=True) if page.more
            }
        await self._prune_events(queues)
        # the slots of keyed counters that expired as idle, each queue's set walked once
        cursors: dict[str, bytes | str] = dict.fromkeys(queues, "0")
        while cursors:
            calls = [PruneLimits.call(self._prefix(q), c, _PRUNE_BATCH) for q, c in cursors.items()]
            pages = [PruneLimits.reply(reply) for reply in await self._many(calls)]
            cursors = {q: c for q, c in zip(cursors, pages, strict=True) if c is not None}
        return total

    @mapped
    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts by state, from each queue's count hash.

        A job is counted by the index it is in, not by its hash's ``st`` field:
        a job whose state field holds garbage is counted where the scripts
        last put it (and taken aside as dead when a script next moves it), and
        an unknown state is never a count.
        """
        names = await self._known_queues() if queues is None else sorted(set(queues))
        if not names:
            return []
        replies = await self._many([Stats.call(self._prefix(q)) for q in names])
        return [Stats.reply(reply, q) for q, reply in zip(names, replies, strict=True)]

    @mapped
    async def circuit_states(self) -> list[CircuitState]:
        """Each queue's circuits (kept per queue, as the limits are)."""
        return await self._circuits(None, open_=False)

    @mapped
    async def set_circuit(self, name: str, *, open_: bool) -> list[CircuitState]:
        """Set the circuit of that name in every queue that has it (or every queue)."""
        return await self._circuits(name, open_=open_)

    async def _circuits(self, name: str | None, *, open_: bool) -> list[CircuitState]:
        names = await self._known_queues()
        if not names:
            return []
        replies = await self._many([Circuits.call(self._prefix(q), name, open_) for q in names])
        found = [
            state
            for q, reply in zip(names, replies, strict=True)
            for state in Circuits.reply(reply, q)
        ]
        return sorted(found, key=lambda state: (state.name, state.queue or ""))

    @mapped
    async def limit_states(self) -> list[LimitState]:
        """Each queue's limit counters (a script works on one queue's keys: see ``scripts``)."""
        names = await self._known_queues()
        if not names:
            return []
        replies = await self._many([LimitStates.call(self._prefix(q)) for q in names])
        found = [
            state
            for q, reply in zip(names, replies, strict=True)
            for state in LimitStates.reply(reply, q)
        ]
        return sorted(found, key=lambda state: (state.slot, state.queue or ""))

    @mapped
    async def _list_jobs(self, query: JobQuery) -> list[JobRecord]:
        state, queue, name, limit, after, newest, meta = query
        queues = [queue] if queue is not None else await self._known_queues()
        found: list[JobRecord] = []
        for q in queues:
            if state is not None and not meta:
                small = await self._list_small_state(q, state, name, limit, after, newest)
                if small is not None:
                    found += small
                    continue
            cursor = after or ""
            got = 0
            while got < limit:
                call = List.call(
                    self._prefix(q), state, name, cursor, limit - got, _LIST_BUDGET, newest, meta
                )
                page = List.reply(await self._one(call), q)
                found += page.jobs
                got += len(page.jobs)
                cursor = page.cursor
                if page.exhausted or not cursor:
                    break
        found.sort(key=lambda job: job.id, reverse=newest)
        return found[:limit]

    async def _list_small_state(
        self,
        queue: str,
        state: JobState,
        name: str | None,
        limit: int,
        after: str | None,
        newest: bool,
    ) -> list[JobRecord] | None:
        """``list_jobs`` of one queue from the index of ``state``, if it is small; else None.

        Dead or cancelled jobs among many completed ones are found this way
        without walking the id-ordered set of every job.
        """
        prefix = self._prefix(queue)
        ids = StateIds.reply(await self._one(StateIds.call(prefix, state, _GATHER_MAX)))
        if ids is None:
            return None
        # An id may be in two of the indexes read (a queued job's stale entry beside its live one).
        if newest:
            ceiling = after.encode() if after is not None else None
            candidates = sorted({i for i in ids if ceiling is None or i < ceiling}, reverse=True)
        else:
            floor = after.encode() if after is not None else b""
            candidates = sorted({i for i in ids if i > floor})
        found: list[JobRecord] = []
        start = 0
        while len(found) < limit and start < len(candidates):
            page = candidates[start : start + max(limit - len(found), 100)]
            start += len(page)
            found += Fetch.reply(await self._one(Fetch.call(prefix, state, name, page)), queue)
        return found[:limit]

    @mapped
    async def _retry_dead(self, query: DeadQuery) -> list[str]:
        if query.job_ids is None:
            dead = await self._list_jobs(
                JobQuery(JobState.DEAD, query.queue, query.name, query.limit, None)
            )
            ids = [job.id for job in dead]
            where = {job.id: job.queue for job in dead}
        else:
            ids = list(query.job_ids)
            where = await self._queues_of(ids)
        by_queue: dict[str, list[str]] = {}
        for job_id in dict.fromkeys(ids):
            if job_id in where:
                by_queue.setdefault(where[job_id], []).append(job_id)
        if not by_queue:
            return []
        calls = [RetryDead.call(self._prefix(q), group) for q, group in by_queue.items()]
        retried = {i.decode() for reply in await self._many(calls) for i in RetryDead.reply(reply)}
        return [job_id for job_id in dict.fromkeys(ids) if job_id in retried]

    @mapped
    async def _purge(self, query: PurgeQuery) -> int:
        wanted, older_than, queue, limit = query
        queues = [queue] if queue is not None else await self._known_queues()
        names = sorted(s.value for s in wanted)
        deleted: list[str] = []
        for q in queues:
            if len(deleted) >= limit or not names:
                break
            call = Purge.call(self._prefix(q), older_than, limit - len(deleted), names)
            deleted += (i.decode() for i in Purge.reply(await self._one(call)))
        await self._forget(deleted)
        return len(deleted)

    @mapped
    async def _remove(self, job_ids: tuple[str, ...]) -> list[JobState | None]:
        where = await self._queues_of(job_ids)
        by_queue: dict[str, list[str]] = {}
        for job_id in job_ids:
            if job_id in where:
                by_queue.setdefault(where[job_id], []).append(job_id)
        found: dict[str, JobState | None] = {}
        if by_queue:
            calls = [Remove.call(self._prefix(q), group) for q, group in by_queue.items()]
            for group, reply in zip(by_queue.values(), await self._many(calls), strict=True):
                found.update(zip(group, Remove.reply(reply), strict=True))
        # What is gone (removed now, or found missing) leaves the id index too.
        await self._forget([i for i, st in found.items() if st is not JobState.ACTIVE])
        return [found.get(job_id) for job_id in job_ids]

    @mapped
    async def set_paused(self, queue: str, paused: bool) -> None:
        await self._many(
            [SetPaused.call(self._prefix(queue), paused)],
            [("SADD", self._queues_key, queue)],
        )

    @mapped
    async def drop(self) -> None:
        """Delete every key of this namespace (tests, teardown). Scans: never on a hot path."""
        for pattern in (f"{{{self._ns}}}*", f"{{{self._ns}:*"):
            batch: list[bytes] = []
            async for key in self._client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    await self._unlink(batch)
                    batch = []
            await self._unlink(batch)
        self._where.clear()
        if self._closed and self._owns:
            # Called after close() (test teardown): let go of what it connected again.
            await self._client.aclose()

    async def _unlink(self, keys: list[bytes]) -> None:
        if not keys:
            return
        if not self._cluster:
            await self._client.unlink(*keys)
            return
        pipe = self._client.pipeline()
        for key in keys:
            pipe.execute_command("UNLINK", key)
        await pipe.execute()
