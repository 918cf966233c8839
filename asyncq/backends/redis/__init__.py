"""The Redis / Valkey backend (also Redis Cluster), on ``redis.asyncio``.

Layout
------
Every key of one queue starts with the hash tag ``{<namespace>:q:<queue>}``, so
a queue lives in one cluster slot and each state transition is one Lua script
on that slot (``scripts`` lists the keys and fields). ``now`` is Redis'
``TIME``, read inside the script. A call spanning queues runs one script per
queue, pipelined: one round trip on a single server. ``claim`` is the
exception, because its ``limit`` is shared: it runs one script over all queues
that share a slot (every queue, outside a cluster) and moves on to the next
slot only while the limit is not reached.

Ordering: each priority has its own sorted set of queued jobs scored by
``scheduled_at``; equal scores sort by member, the job id. A sorted set of the
priorities present lets ``claim`` walk them from the highest down, so the
order is exactly priority desc, ``scheduled_at`` asc, id asc, without packing
two numbers into one float score. Scheduled and failed jobs wait in a
``delayed`` set and are promoted when a claim (or ``stats``) finds them due.

Finding a job by id: ``get``, ``cancel`` and ``wait_finished`` know only the
id, so an index maps id -> queue. It is sharded over 64 hashes
(``{<namespace>:i:<crc32(id) % 64>}``), each in a slot of its own so no node
takes all of it, and written with the job (by the enqueue script itself, one
``HSET`` per hash and call, on a single server; one pipeline earlier on a
cluster, whose script cannot reach other slots). An entry whose job never
got stored (a held idempotency key, a crash in between) or is gone points to
a queue without that job: a lookup then finds nothing, as it should. Entries
go when ``prune`` and ``purge`` delete jobs. Lease tokens end with the queue
name, so ``settle`` needs no lookup. The index also keeps a caller-chosen id
unique across queues: on a single server the enqueue script reads an id's
entry and, when it names another queue holding the job, answers with that
job. A cluster's script cannot reach the index, so there an id is unique per
queue only.

Round trips: outside a cluster the scripts go over a connection of the
backend's own (``transport.Direct``), hiredis packing their arguments in
C; a call that finds it busy goes through the client's pool. An enqueue
batch runs as one script per queue and per ``_ENQUEUE_CHUNK`` jobs, pipelined
without ``MULTI``, each sent as soon as it is encoded, so the server runs one
while Python encodes the next. Each script is atomic, and so is a batch of
one queue up to that size; a longer or multi-queue batch is not: a call that
fails midway may leave its first chunks stored. Enqueue is idempotent by job
id, so retrying the same records (as the client's retry policy does after a
dropped connection) returns those as stored and stores the rest.

Waking claimers: every queue has a ``wake`` list. Scripts that make work (or
change when it is due) push one token per ready job, up to 128; an idle
``wait_for_work`` reads when the next delayed job is due, then ``BLPOP``\\ s the
lists of its queues for at most that long, on a connection of its own (a
second wait at the same time, or a cluster, uses a pool of its own).
A claim that comes up short reports that time itself (and drops the stale
tokens), so a ``wait_for_work`` on the same queues right after it blocks at
once. On a cluster, lists in different slots cannot share one ``BLPOP``: it
blocks on each slot at once and returns when the first answers.

``settle_and_claim`` is one script outside a cluster (the settle script's
work, then the claim's); on a cluster, whose queues may live on several
nodes, it is ``settle`` then ``claim``.

Completion notices: ``wait_finished`` reads the job with a script that also
marks it as waited for; the end of a marked job publishes the finished job
on the queue's channel, so the waiter returns it without reading it again,
and the end of a job nobody waits for publishes nothing. One subscriber
connection per backend multiplexes the notices to all waiters (see
``notices``). ``enqueue_waited`` (``enqueue_and_wait``) makes sure the
channel is subscribed first and stores its jobs marked already, so their
waiter skips that read: a request/response costs the enqueue, then the
notice.

Operator verbs (``stats``, ``list_jobs``, ``retry_dead``, ``purge``,
``set_paused``) and ``prune`` come from ``admin``, retention included.

Connections carry the client name ``asyncq:<namespace>`` (``:block`` and
``:sub`` for the blocking and subscriber connections), visible in ``CLIENT LIST``.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskStatus
from msgspec.structs import replace
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError

from ..._annotations import MAX_LOG_LINES
from ...exceptions import ConfigurationError, UnknownParent
from .._common import no_transactions, parse_url_options, pop_retention, text
from .._verbs import ClaimQuery, SettlesAndClaims
from ..base import (
    DROP,
    ENQUEUE_WAITED,
    EVENTS,
    PUSHES_CANCEL,
    SETTLE_ON_CLAIM,
    SIZES_POOL,
    Backend,
    Capability,
    EnqueuesWaited,
    HeartbeatReply,
    JobRecord,
    Lease,
    LogLine,
    Outcome,
    Retention,
    SettlesOnClaim,
    WorkerInfo,
    check_outcomes,
    stored_as_given,
)
from . import codec
from .admin import _Operations
from .client import (
    POOL_HEADROOM,
    connect,
    describe,
    live_side_client,
    mapped,
    mask_url,
    pool_kwargs,
    side_client,
    url_options,
)
from .events import EventStream
from .notices import Notices
from .scripts import (
    LAYOUT,
    SCRIPTS,
    Call,
    Cancel,
    Claim,
    Enqueue,
    Get,
    Heartbeat,
    Log,
    Peek,
    Progress,
    Recover,
    SetAside,
    Settle,
    SettleClaim,
    Watch,
)
from .transport import Command, Transport
from .workers import ListWorkers, PutWorker, worker_keys

__all__ = ["RedisBackend", "mask_url"]

_NAMESPACE = re.compile(r"[A-Za-z0-9_.:-]+")
_ENQUEUE_CHUNK = 500
_RECOVER_BATCH = 500
#: seconds a short claim's report stands in for a peek (see ``_note_claim``)
_SHORT_FRESH = 1.0
#: jobs whose queue is remembered, so a ``get`` or ``cancel`` by id skips the index
_CACHE_SIZE = 10_000
#: hashes the id index is sharded over (a power of two)
_BUCKETS = 64
_CAPABILITIES: frozenset[Capability[Any]] = frozenset(
    {SETTLE_ON_CLAIM, ENQUEUE_WAITED, DROP, SIZES_POOL, PUSHES_CANCEL, EVENTS}
)
_CLUSTER_CAPABILITIES: frozenset[Capability[Any]] = frozenset(
    {ENQUEUE_WAITED, DROP, PUSHES_CANCEL, EVENTS}
)


def _without_namespace(url: str) -> str:
    """``url`` without its ``namespace`` option (the backend names it apart)."""
    return parse_url_options(url, {"namespace": text}, driver=None)[1]


def _escape(queue: str) -> str:
    # A queue name must not end the hash tag early or fake another queue's prefix.
    return queue.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


class RedisBackend(EventStream, _Operations, SettlesAndClaims):
    """Jobs in Redis, Valkey or a Redis Cluster. ``redis://``, ``rediss://``, ``unix://``,
    ``valkey://`` select it.

    Args:
        client_or_url: a ``redis.asyncio.Redis`` or ``RedisCluster`` client (it stays
            the caller's to close; ``decode_responses`` must be off), or a URL as for
            ``from_url``.
        namespace: prefix of every key (default ``asyncq``, or the URL's
            ``namespace``); backends with different namespaces share nothing.
            Letters, digits and ``_.:-``.
        client_name: base of the connection names (default ``asyncq:<namespace>``).
        retention: how long ``prune`` keeps finished jobs (also as the
            ``Retention`` options, with a client too).
        events: write the job event stream (``HasEvents``; with a client too); on by
            default.
        **options: with a URL, as for ``from_url``.
    """

    def __init__(
        self,
        client_or_url: aioredis.Redis | RedisCluster | str,
        *,
        namespace: str | None = None,
        client_name: str | None = None,
        retention: Retention | None = None,
        events: bool = True,
        **options: Any,
    ) -> None:
        if isinstance(client_or_url, str):
            # Refuses an option neither asyncq nor redis-py takes, before connecting.
            options, driver_url = url_options(client_or_url, options)
        options["retention"] = retention
        self._retention = pop_retention(options)
        events = options.pop("events", events)
        in_url = options.pop("namespace", None)
        namespace = namespace or in_url or "asyncq"
        if not _NAMESPACE.fullmatch(namespace):
            msg = f"namespace {namespace!r} may hold only letters, digits and '_.:-'"
            raise ConfigurationError(msg)
        self._ns = namespace
        self._name = client_name or f"asyncq:{namespace}"
        # A pool whose size the user chose is never resized for a worker.
        self._pool_chosen = "max_connections" in options or not isinstance(client_or_url, str)
        if isinstance(client_or_url, str):
            self._url = mask_url(_without_namespace(client_or_url))
            client = connect(driver_url, self._name, self._url, options)
            self._owns = True
        else:
            if options:
                msg = f"options {sorted(options)} apply only when a URL is given, not a client"
                raise ConfigurationError(msg)
            client = client_or_url
            self._url = describe(client)
            self._owns = False
        # redis-py types its commands as ``T | Awaitable[T]`` (shared with the sync
        # client), so the client is held as Any rather than cast at every call.
        self._client: Any = client
        self._cluster = isinstance(client, RedisCluster)
        if pool_kwargs(client, None).get("decode_responses"):
            msg = "RedisBackend needs a client with decode_responses=False (payloads are bytes)"
            raise ConfigurationError(msg)
        # Script calls and blocking pops (see Transport); ``_many`` is its ``many``.
        self._transport = Transport(client, self._name)
        self._many = self._transport.many
        self.events = events
        self._queues_key = f"{{{namespace}}}:queues"
        self._cancel_channel = f"{{{namespace}}}:cancel"
        self._worker_keys = worker_keys(namespace)
        self._where: OrderedDict[str, str] = OrderedDict()
        self._short: dict[tuple[str, ...], tuple[float, float | None]] = {}
        self._subscriber: aioredis.Redis | None = None
        self._notices: Notices | None = None
        self._waits: set[anyio.CancelScope] = set()
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str | None = None,
        cluster: bool | None = None,
        client_name: str | None = None,
        **options: Any,
    ) -> RedisBackend:
        """A backend on a new client for ``url``; ``close()`` closes that client.

        ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS),
        ``unix:///path.sock?db=N``, and ``valkey://`` / ``valkeys://`` (the same as
        ``redis://`` / ``rediss://``). Options, as keywords or in the URL's query
        (keywords win):

        - ``namespace``: the key prefix (default ``asyncq``);
        - ``cluster``: connect to a Redis Cluster through the node(s) in the URL;
        - ``pool_timeout``: see below;
        - ``retention`` (a keyword) and the ``Retention`` options
          (``retention_completed``, ``retention_dead``, ``retention_cancelled``,
          and the caps ``retention_max_completed``, ``retention_max_dead``,
          ``retention_max_cancelled``, ``retention_events``,
          ``retention_max_events``);
        - ``events``: ``false`` writes no job events;
        - redis-py's own: ``socket_timeout``, ``max_connections``,
          ``ssl_ca_certs``, ... (in the query, those its ``parse_url`` reads that
          the client for this URL takes).

        The client's pool holds ``max_connections`` connections (default 100); a
        call that finds them all in use waits for one up to ``pool_timeout``
        seconds (default 10), then raises ``BackendUnavailable``. A cluster
        client's pools (one per node, redis-py's) do not wait: a call beyond
        ``max_connections`` on one node raises ``BackendUnavailable`` at once.

        Raises:
            ConfigurationError: not a Redis URL, or an unknown or malformed
                option (the message lists the known ones, the URL masked).
        """
        if cluster is not None:
            options["cluster"] = cluster
        return cls(url, namespace=namespace, client_name=client_name, **options)

    @property
    def url(self) -> str:
        return self._url

    @property
    def namespace(self) -> str:
        """The key prefix of this backend."""
        return self._ns

    # -- keys and plumbing -------------------------------------------------------

    def _prefix(self, queue: str) -> str:
        return f"{{{self._ns}:q:{_escape(queue)}}}:"

    def _bucket(self, job_id: str) -> str:
        return f"{{{self._ns}:i:{zlib.crc32(job_id.encode()) & (_BUCKETS - 1)}}}"

    async def _queue_of(self, job_id: str) -> str | None:
        queue = self._where.get(job_id)
        if queue is None:
            raw = await self._client.hget(self._bucket(job_id), job_id)
            if raw is None:
                return None
            queue = self._where[job_id] = raw.decode()
            _forget_oldest(self._where)
        return queue

    async def _one(self, call: Call) -> Any:
        (reply,) = await self._many([call])
        return reply

    async def _known_queues(self) -> list[str]:
        return sorted(q.decode() for q in await self._client.smembers(self._queues_key))

    def _slot_groups(self, queues: Sequence[str]) -> list[list[str]]:
        unique = list(dict.fromkeys(queues))
        if not self._cluster:
            return [unique]
        groups: dict[int, list[str]] = {}
        for queue in unique:
            groups.setdefault(key_slot(self._prefix(queue).encode()), []).append(queue)
        return list(groups.values())

    # -- lifecycle ---------------------------------------------------------------

    @mapped
    async def open(self) -> None:
        self._closed = False
        await self._client.ping()
        await self._check_layout()
        # Only the variants this backend calls: with events or without (see ``scripts.quiet``).
        await self._transport.open({n for n in SCRIPTS if n.endswith(":quiet") != self.events})

    async def _check_layout(self) -> None:
        """Mark the namespace with the key layout, or refuse one written with another."""
        key = f"{{{self._ns}}}:layout"
        await self._client.set(key, LAYOUT, nx=True)
        found = await self._client.get(key)
        if found is not None and int(found) != LAYOUT:
            msg = (
                f"the namespace {self._ns!r} at {self._url} holds jobs in key layout "
                f"{int(found)}; this asyncq reads layout {LAYOUT}: drain it with the "
                "asyncq that wrote it, or use another namespace"
            )
            raise ConfigurationError(msg)

    async def close(self) -> None:
        self._closed = True
        for scope in list(self._waits):
            scope.cancel()
        notices, self._notices = self._notices, None
        if notices is not None:
            await notices.close()
        subscriber, self._subscriber = self._subscriber, None
        await self._transport.aclose([subscriber] if subscriber else [], client=self._owns)

    def _get_notices(self) -> Notices:
        if self._notices is None:
            node = self._client.get_default_node() if self._cluster else None
            self._subscriber = side_client(self._client, self._name, "sub", node)
            elsewhere = self._subscriber_elsewhere if self._cluster else None
            self._notices = Notices(self._subscriber.pubsub(), codec.notice_job, elsewhere)
        return self._notices

    async def _subscriber_elsewhere(self) -> PubSub | None:
        """A subscriber on a live node of the cluster, the one in use having failed."""
        failed = self._subscriber
        found = await live_side_client(self._client, self._name, "sub", failed)
        if found is None or self._closed:  # closed meanwhile: it must not stay open
            if found is not None:
                await _close_quietly(found)
            return None
        self._subscriber = found
        if failed is not None:
            await _close_quietly(failed)
        return found.pubsub()

    # -- producers ---------------------------------------------------------------

    @mapped
    async def enqueue(
        self, jobs: Sequence[JobRecord], *, connection: object | None = None, fresh: bool = False
    ) -> list[JobRecord]:
        if connection is not None:
            raise no_transactions("Redis")
        return await self._enqueue(jobs, waited=False, fresh=fresh)

    @mapped
    async def enqueue_waited(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        # Subscribed (and confirmed) first, then marked at enqueue: the waiter
        # that follows skips its read of the job (see notices).
        notices = self._get_notices()
        channels = {q: self._prefix(q) + "done" for q in dict.fromkeys(j.queue for j in jobs)}
        numbers = {q: await notices.ready(channel) for q, channel in channels.items()}
        for job in jobs:
            number = numbers[job.queue]
            if number is not None:
                notices.expect(job.id, channels[job.queue], number)
        try:
            stored = await self._enqueue(jobs, waited=True)
        except BaseException:
            for job in jobs:
                notices.unexpect(job.id)
            raise
        for job, kept in zip(jobs, stored, strict=True):
            if not stored_as_given(job, kept):  # its key or its id was taken
                notices.unexpect(job.id)
        return stored

    async def _enqueue(
        self, jobs: Sequence[JobRecord], *, waited: bool, fresh: bool = False
    ) -> list[JobRecord]:
        if not jobs:
            return []
        by_queue: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_queue.setdefault(job.queue, []).append(i)
        # Jobs with parents go in one script per queue: a flow is stored whole or not at all.
        size = len(jobs) if any(job.parents for job in jobs) else _ENQUEUE_CHUNK
        chunks = [
            indexes[start : start + size]
            for indexes in by_queue.values()
            for start in range(0, len(indexes), size)
        ]
        # Outside a cluster the script writes the id index and the queue
        # registry itself (one round trip, no pipeline); in a cluster those
        # keys live in other slots, so a pipeline writes them first.
        inline = not self._cluster

        bucket = self._bucket if inline else None
        registry = self._queues_key

        def calls() -> Iterator[Call]:
            # A generator: each chunk is on its way while the next is encoded.
            for chunk in chunks:
                prefix = self._prefix(jobs[chunk[0]].queue)
                yield Enqueue.call(prefix, jobs, chunk, waited, fresh, bucket, registry)

        before: list[Command] = []
        if not inline:
            buckets: dict[str, list[str]] = {}
            for job in jobs:
                buckets.setdefault(self._bucket(job.id), []).extend((job.id, job.queue))
            before = [("HSET", bucket, *pairs) for bucket, pairs in buckets.items()]
            before.append(("SADD", self._queues_key, *by_queue))
        replies = await self._many(calls(), before)
        stored: list[JobRecord] = list(jobs)
        where = self._where
        for chunk, reply in zip(chunks, replies, strict=True):
            try:
                items = Enqueue.reply(reply)
            except UnknownParent as exc:
                queue = jobs[chunk[0]].queue
                raise UnknownParent(exc.parent_id, exc.job_id, queue) from None
            for i, item in zip(chunk, items, strict=True):
                job = jobs[i]
                if isinstance(item, list):
                    stored[i] = codec.readable(item[1:], item[0].decode(), job.queue)
                    continue
                state = codec.STORED[item]
                if job.state is not state or job.debounce is not None:
                    stored[i] = replace(job, state=state, debounce=None)
                where[job.id] = job.queue
        _forget_oldest(where)
        return stored

    async def _get(self, queue: str, job_id: str) -> JobRecord | None:
        return Get.reply(await self._one(Get.call(self._prefix(queue), job_id)), job_id, queue)

    @mapped
    async def get(self, job_id: str) -> JobRecord | None:
        queue = await self._queue_of(job_id)
        return None if queue is None else await self._get(queue, job_id)

    @mapped
    async def cancel(self, job_id: str, *, by: str = "api") -> JobRecord | None:
        queue = await self._queue_of(job_id)
        if queue is None:
            return None
        call = Cancel.call(self._prefix(queue), job_id, self._cancel_channel, by)
        reply = await self._one(call)
        return Cancel.reply(reply, job_id, queue)

    @mapped
    async def wait_finished(self, job_id: str) -> JobRecord | None:
        queue = await self._queue_of(job_id)
        if queue is None:
            return None
        if self._closed:
            return await self._get(queue, job_id)
        channel = self._prefix(queue) + "done"
        return await self._get_notices().wait(
            channel, job_id, lambda: self._watch(queue, job_id), codec.noticed
        )

    async def _watch(self, queue: str, job_id: str) -> JobRecord | None:
        """The job as ``get`` reads it, marked as waited for if it is not finished."""
        return Watch.reply(await self._one(Watch.call(self._prefix(queue), job_id)), job_id, queue)

    # -- workers -----------------------------------------------------------------

    @mapped
    async def claim(
        self, queues: Sequence[str], limit: int, *, worker: str, lease_for: float
    ) -> list[Lease]:
        leases: list[Lease] = []
        earliest: float | None = None
        # Jobs claimed but taken aside count towards the limit (the script
        # did not come up short for them), though no lease is handed out.
        taken = 0
        for group in self._slot_groups(queues) if limit > 0 else []:
            base = uuid.uuid4().hex
            prefixes = [self._prefix(q) for q in group]
            call = Claim.call(prefixes, limit - taken, worker, lease_for, base)
            claimed = Claim.reply(await self._one(call), worker, base)
            if claimed.spoilt:
                await self._set_aside(group, claimed.spoilt)
                taken += len(claimed.spoilt)
            self._remember_leases(claimed.leases)
            leases += claimed.leases
            taken += len(claimed.leases)
            if taken >= limit:
                break
            soonest = claimed.earliest
            if soonest is not None:
                earliest = soonest if earliest is None else min(earliest, soonest)
        self._note_claim(queues, limit, taken, earliest)
        return leases

    async def _set_aside(self, queues: Sequence[str], spoilt: Sequence[codec.Spoilt]) -> None:
        """Take aside claimed jobs whose record does not decode (see ``_poison``).

        The reply does not say which of the claim's queues a job is in (its
        record names it, and does not decode): each queue's script takes aside
        those its lease tokens hold there, the others find nothing.
        """
        await self._many([SetAside.call(self._prefix(q), spoilt) for q in queues])

    def _remember_leases(self, leases: list[Lease]) -> None:
        """Note where each claimed job lives, for a ``get`` or ``cancel`` of it by id."""
        where = self._where
        for lease in leases:
            job = lease.job
            where[job.id] = job.queue
            where.move_to_end(job.id)
        _forget_oldest(where)

    def _note_claim(
        self, queues: Sequence[str], limit: int, taken: int, earliest: float | None
    ) -> None:
        """Remember a claim that came up short, for the ``wait_for_work`` that follows it.

        Such a claim found nothing more ready, dropped the stale wake tokens
        and reported the earliest delayed job (a monotonic time here), which
        is all a ``peek`` would tell: the wait may block at once.
        """
        key = tuple(dict.fromkeys(queues))
        if taken < limit:
            self._short[key] = (time.monotonic(), earliest)
        else:
            self._short.pop(key, None)

    @mapped
    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        queues = list(dict.fromkeys(queues))
        if self._closed or not queues:
            return
        with anyio.CancelScope() as scope:  # close() cancels it
            self._waits.add(scope)
            try:
                wait = timeout
                short = self._short.pop(tuple(queues), None)
                if short is not None and time.monotonic() - short[0] < _SHORT_FRESH:
                    # Right after a claim that came up short: it told all a peek would.
                    if short[1] is not None:
                        wait = min(wait, short[1] - time.monotonic())
                else:
                    peeks = await self._many([Peek.call(self._prefix(q)) for q in queues])
                    for peek in map(Peek.reply, peeks):
                        if peek.ready:
                            return
                        if peek.earliest is not None:
                            wait = min(wait, peek.earliest - peek.now)
                if wait > 0:
                    await self._transport.block([self._prefix(q) + "wake" for q in queues], wait)
            finally:
                self._waits.discard(scope)

    @mapped
    async def heartbeat(self, leases: Sequence[Lease], *, lease_for: float) -> HeartbeatReply:
        by_queue: dict[str, list[Lease]] = {}
        for lease in leases:
            by_queue.setdefault(lease.job.queue, []).append(lease)
        calls = [Heartbeat.call(self._prefix(q), lease_for, group) for q, group in by_queue.items()]
        lost: set[str] = set()
        cancel: set[str] = set()
        for beat in map(Heartbeat.reply, await self._many(calls) if calls else []):
            lost.update(i.decode() for i in beat.lost)
            cancel.update(i.decode() for i in beat.cancel)
        return HeartbeatReply(lost=frozenset(lost), cancel=frozenset(cancel))

    @mapped
    async def progress(self, lease: Lease, value: float, detail: bytes | None = None) -> bool:
        call = Progress.call(self._prefix(lease.job.queue), lease, value, detail)
        return Progress.reply(await self._one(call))

    @mapped
    async def log(self, lease: Lease, lines: Sequence[LogLine]) -> bool:
        call = Log.call(self._prefix(lease.job.queue), lease, lines, MAX_LOG_LINES)
        return Log.reply(await self._one(call))

    @mapped
    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        check_outcomes(outcomes)
        by_queue = codec.by_token_queue(outcomes)
        calls = [
            Settle.call(self._prefix(queue), outcomes, indexes)
            for queue, indexes in by_queue.items()
        ]
        applied = [False] * len(outcomes)
        for indexes, reply in zip(
            by_queue.values(), await self._many(calls) if calls else [], strict=True
        ):
            for i, ok in zip(indexes, Settle.reply(reply), strict=True):
                applied[i] = bool(ok)
        return applied

    @mapped
    async def _settle_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimQuery
    ) -> tuple[list[bool], list[Lease]]:
        queues, limit, worker, lease_for = claim
        if self._cluster:
            # The queues of one call may live on several nodes: two round trips.
            applied = await self.settle(outcomes)
            return applied, await self.claim(queues, limit, worker=worker, lease_for=lease_for)
        by_queue = codec.by_token_queue(outcomes)
        claimed = list(dict.fromkeys(queues)) if limit > 0 else []
        base = uuid.uuid4().hex
        call = SettleClaim.call(
            [self._prefix(q) for q in (*by_queue, *claimed)],
            outcomes,
            by_queue.values(),
            limit=limit,
            worker=worker,
            lease_for=lease_for,
            base=base,
        )
        settled = SettleClaim.reply(await self._one(call), worker, base)
        applied = [False] * len(outcomes)
        positions = (i for ix in by_queue.values() for i in ix)
        for i, ok in zip(positions, settled.applied, strict=True):
            applied[i] = bool(ok)
        leases = settled.claimed.leases
        spoilt = settled.claimed.spoilt
        if spoilt:
            await self._set_aside(claimed, spoilt)
        self._remember_leases(leases)
        self._note_claim(queues, limit, len(leases) + len(spoilt), settled.claimed.earliest)
        return applied, leases

    @mapped
    async def recover(self) -> int:
        queues = await self._known_queues()
        total = 0
        while queues:
            replies = await self._many(
                [Recover.call(self._prefix(q), _RECOVER_BATCH) for q in queues]
            )
            counts = list(map(Recover.reply, replies))
            total += sum(counts)
            queues = [q for q, n in zip(queues, counts, strict=True) if n >= _RECOVER_BATCH]
        return total

    def fit_concurrency(self, concurrency: int) -> None:
        # A cluster keeps one pool per node, sized by redis-py; a single
        # server's blocking pool reads max_connections on every wait.
        if self._pool_chosen or self._cluster:
            return
        pool = self._client.connection_pool
        pool.max_connections = max(pool.max_connections, concurrency + POOL_HEADROOM)

    # -- the worker registry and cancel notices ----------------------------------

    @mapped
    async def put_worker(self, info: WorkerInfo) -> None:
        await self._one(PutWorker.call(self._worker_keys, info))

    @mapped
    async def workers(self) -> list[WorkerInfo]:
        return ListWorkers.reply(await self._one(ListWorkers.call(self._worker_keys)))

    @mapped
    async def watch_cancels(
        self,
        callback: Callable[[str], None],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._closed:
            return
        await self._get_notices().listen(
            self._cancel_channel, lambda data: callback(data.decode()), task_status.started
        )

    @property
    def capabilities(self) -> frozenset[Capability[Any]]:
        # A cluster's settle_and_claim takes two round trips (its queues span nodes).
        return _CLUSTER_CAPABILITIES if self._cluster else _CAPABILITIES


def _forget_oldest(where: OrderedDict[str, str]) -> None:
    """Keep the ``_CACHE_SIZE`` jobs whose queue was noted last (once per batch noted)."""
    while len(where) > _CACHE_SIZE:
        where.popitem(last=False)


async def _close_quietly(client: aioredis.Redis) -> None:
    with anyio.CancelScope(shield=True), contextlib.suppress(RedisError):
        await client.aclose()


if TYPE_CHECKING:
    _check: type[Backend] = RedisBackend
    _fused: type[SettlesOnClaim] = RedisBackend
    _waited: type[EnqueuesWaited] = RedisBackend
