"""The Redis / Valkey backend (also Redis Cluster), on ``redis.asyncio``.

Layout
------
Every key of one queue starts with the hash tag ``{<namespace>:q:<queue>}``, so
a queue lives in one cluster slot and each state transition is one Lua script
on that slot (``_redis_lua`` lists the keys and fields). ``now`` is Redis'
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
name, so ``settle`` needs no lookup.

Round trips: outside a cluster the scripts go over a connection of the
backend's own (``_redis_client.Direct``), hiredis packing their arguments in
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
``_redis_notices``). ``enqueue_waited`` (``enqueue_and_wait``) makes sure the
channel is subscribed first and stores its jobs marked already, so their
waiter skips that read: a request/response costs the enqueue, then the
notice.

Retention: completed jobs with a ``result_ttl`` are deleted by ``prune`` once
it passed (``get`` and ``list_jobs`` hide them before that); dead and
cancelled jobs stay until ``purge``.

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
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import msgspec
import redis.asyncio as aioredis
from msgspec.structs import replace
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    MovedError,
    NoScriptError,
    RedisError,
)

from ..exceptions import ConfigurationError
from ._redis_client import Direct, connect, describe, mapped, mask_url, pool_kwargs, side_client
from ._redis_lua import LAYOUT, PRELUDE, SCRIPTS
from ._redis_notices import Notices
from .base import (
    DROP,
    ENQUEUE_WAITED,
    SETTLE_ON_CLAIM,
    Backend,
    Capability,
    EnqueuesWaited,
    ErrorInfo,
    HeartbeatReply,
    JobRecord,
    JobState,
    Lease,
    Outcome,
    QueueStats,
    SettlesOnClaim,
    check_outcomes,
    purgeable,
)

__all__ = ["RedisBackend", "mask_url"]

_NAMESPACE = re.compile(r"[A-Za-z0-9_.:-]+")
_ENQUEUE_CHUNK = 500
_RECOVER_BATCH = 500
_PRUNE_BATCH = 500
_LIST_BUDGET = 2000
_GATHER_MAX = 5000
#: connections of its own a backend opens for concurrent script calls, at most
_DIRECT_MAX = 4
#: seconds a short claim's report stands in for a peek (see ``_note_claim``)
_SHORT_FRESH = 1.0
_CACHE_SIZE = 10_000
#: hashes the id index is sharded over (a power of two)
_BUCKETS = 64

#: scripts whose arguments redis-py gets packed into one (see ``_pack``)
_PACKED = frozenset({"enqueue", "settle", "settle_claim"})

_Call = tuple[str, list[str], list[Any]]
_Command = tuple[Any, ...]

#: what the enqueue script answers for a job it stored
_STORED = {b"queued": JobState.QUEUED, b"scheduled": JobState.SCHEDULED}

_encode = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(JobRecord).decode
_encode_json = msgspec.json.Encoder().encode
_decode_errors = msgspec.json.Decoder(tuple[ErrorInfo, ...]).decode


def _pack(args: Sequence[str | bytes | int]) -> bytes:
    """Many script arguments as one (the scripts' ``batch_args`` reads it back)."""
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b",".join(str(len(p)).encode() for p in parts) + b";" + b"".join(parts)


def _unpack(packed: bytes) -> list[bytes]:
    """The strings ``_pack`` (or the scripts' ``notify``) packed into one."""
    head, _, body = packed.partition(b";")
    out, pos = [], 0
    for size in map(int, head.split(b",")):
        out.append(body[pos : pos + size])
        pos += size
    return out


def _notice_job(notice: bytes) -> str:
    """The id of the job a notice is about: the first packed string."""
    head, sep, body = notice.partition(b";")
    first = head.partition(b",")[0]
    if not sep or not first.isdigit():
        return notice.decode(errors="replace")  # a bare id
    return body[: int(first)].decode(errors="replace")


def _replay(made: list[_Call], source: Iterator[_Call]) -> Iterator[_Call]:
    """What ``source`` gave before, then the rest of it, keeping each new item in ``made``."""
    yield from list(made)
    for item in source:
        made.append(item)
        yield item


def _float(raw: bytes | None) -> float | None:
    return None if raw is None else float(raw)


def _escape(queue: str) -> str:
    # A queue name must not end the hash tag early or fake another queue's prefix.
    return queue.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


class RedisBackend:
    """Jobs in Redis, Valkey or a Redis Cluster. ``redis://``, ``rediss://``, ``unix://``,
    ``valkey://`` select it.

    Args:
        client_or_url: a ``redis.asyncio.Redis`` or ``RedisCluster`` client (it stays
            the caller's to close; ``decode_responses`` must be off), or a URL as for
            ``from_url``.
        namespace: prefix of every key; backends with different namespaces share
            nothing. Letters, digits and ``_.:-``.
        client_name: base of the connection names (default ``asyncq:<namespace>``).
        **options: with a URL, as for ``from_url``.
    """

    def __init__(
        self,
        client_or_url: aioredis.Redis | RedisCluster | str,
        *,
        namespace: str = "asyncq",
        client_name: str | None = None,
        **options: Any,
    ) -> None:
        if not _NAMESPACE.fullmatch(namespace):
            msg = f"namespace {namespace!r} may hold only letters, digits and '_.:-'"
            raise ConfigurationError(msg)
        self._ns = namespace
        self._name = client_name or f"asyncq:{namespace}"
        if isinstance(client_or_url, str):
            self._url = mask_url(client_or_url)
            client = connect(client_or_url, self._name, self._url, options)
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
        self._scripts = {
            name: client.register_script(PRELUDE + body) for name, body in SCRIPTS.items()
        }
        self._shas = {name: script.sha for name, script in self._scripts.items()}
        # Connections of the backend's own for its scripts (see Direct), opened as
        # concurrent calls need them, up to _DIRECT_MAX; beyond, the client's pool.
        self._direct_ok = not self._cluster and Direct.usable(client)
        self._directs: list[Direct] = [Direct(client)] if self._direct_ok else []
        self._queues_key = f"{{{namespace}}}:queues"
        self._where: OrderedDict[str, str] = OrderedDict()
        self._short: dict[tuple[str, ...], tuple[float, float | None]] = {}
        # Blocking pops go over a connection of their own (one wait at a time;
        # a second concurrent wait, or a cluster, uses the side clients).
        self._blocker = Direct(client, f"{self._name}:block") if self._direct_ok else None
        self._blockers: dict[str, aioredis.Redis] = {}
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
        ``redis://`` / ``rediss://``). ``cluster=True`` or ``?cluster=true`` connects
        to a Redis Cluster through the node(s) in the URL. Other ``options`` (and
        query parameters) go to redis-py: ``socket_timeout``, ``max_connections``,
        ``ssl_ca_certs``, ... The key prefix is ``namespace=``, else ``?namespace=``
        in the URL, else ``asyncq``.
        """
        if cluster is not None:
            options["cluster"] = cluster
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        in_url = [v for k, v in query if k == "namespace"]
        if in_url:
            url = urlunsplit(
                parts._replace(query=urlencode([q for q in query if q[0] != "namespace"]))
            )
        namespace = namespace or (in_url[-1] if in_url else "asyncq")
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

    def _remember(self, job_id: str, queue: str) -> None:
        self._where[job_id] = queue
        self._where.move_to_end(job_id)
        if len(self._where) > _CACHE_SIZE:
            self._where.popitem(last=False)

    async def _queue_of(self, job_id: str) -> str | None:
        queue = self._where.get(job_id)
        if queue is None:
            raw = await self._client.hget(self._bucket(job_id), job_id)
            if raw is None:
                return None
            queue = raw.decode()
            self._remember(job_id, queue)
        return queue

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

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        (reply,) = await self._many([(name, keys, args)])
        return reply

    async def _many(self, calls: Iterable[_Call], before: Sequence[_Command] = ()) -> list[Any]:
        """Run the commands ``before``, then the scripts ``calls``, pipelined; return their replies.

        ``calls`` may be a generator: on the direct connection each script is
        sent as soon as it is made, so the server runs the first while the
        caller encodes the next.
        """
        direct = self._free_direct()
        made: list[_Call] = []
        if direct is not None:
            source = iter(calls)

            def commands() -> Iterator[Sequence[Any]]:
                # A retry (after a dropped connection) sends again what was made.
                yield from before
                for name, keys, args in _replay(made, source):
                    yield ("EVALSHA", self._shas[name], len(keys), *keys, *args)

            results = (await direct.call(commands))[len(before) :]
        else:
            made = list(calls)
            results = await self._pipelined(made, before)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, NoScriptError):
                raise result
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            # The server lost its scripts (restart, SCRIPT FLUSH): load them, run those again.
            await self._load_scripts({made[i][0] for i in missing})
            again = await self._many([made[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                results[i] = reply
        return results

    def _free_direct(self) -> Direct | None:
        for direct in self._directs:
            if not direct.busy:
                return direct
        if self._direct_ok and len(self._directs) < _DIRECT_MAX:
            self._directs.append(Direct(self._client))
            return self._directs[-1]
        return None

    async def _pipelined(self, calls: list[_Call], before: Sequence[_Command]) -> list[Any]:
        """``_many`` through redis-py (a cluster, fakeredis, or the direct connection busy)."""

        def argv(name: str, args: list[Any]) -> list[Any]:
            # redis-py packs each argument in Python: long batches go as one.
            return [_pack(args)] if name in _PACKED else args

        if len(calls) == 1 and not before:
            name, keys, args = calls[0]
            # AsyncScript runs EVALSHA and loads the script again on NOSCRIPT.
            return [await self._scripts[name](keys=keys, args=argv(name, args))]
        if before and self._cluster:
            # A cluster pipeline runs on all nodes at once; the index must land first.
            pipe = self._client.pipeline()
            for command in before:
                pipe.execute_command(*command)
            await pipe.execute()
            before = ()
        pipe = self._client.pipeline(transaction=False)
        for command in before:
            pipe.execute_command(*command)
        for name, keys, args in calls:
            # execute_command: redis-py refuses pipe.evalsha() on a cluster pipeline.
            sha = self._shas[name]
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *argv(name, args))
        results = await pipe.execute(raise_on_error=False)
        return list(results[len(before) :])

    async def _load_scripts(self, names: set[str] | None = None) -> None:
        for name, script in self._scripts.items():
            if names is None or name in names:
                # On a cluster, redis-py sends SCRIPT LOAD to every primary.
                await self._client.script_load(script.script)

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

    @staticmethod
    def _fields(flat: list[bytes]) -> dict[bytes, bytes]:
        it = iter(flat)
        return dict(zip(it, it, strict=True))

    def _record(self, flat: list[bytes] | dict[bytes, bytes]) -> JobRecord:
        f = flat if isinstance(flat, dict) else self._fields(flat)
        errors = _decode_errors(b"[" + f[b"e"] + b"]") if b"e" in f else ()
        state = JobState(f[b"st"].decode())
        # An attempt that ends leaves its lease fields behind (see _redis_lua).
        leased = state is JobState.ACTIVE
        worker = f.get(b"w") if leased else None
        return replace(
            _decode_record(f[b"d"]),
            state=state,
            attempts=int(f[b"att"]),
            scheduled_at=float(f[b"sa"]),
            started_at=_float(f.get(b"sta")),
            finished_at=_float(f.get(b"fin")),
            lease_expires_at=_float(f.get(b"lx")) if leased else None,
            worker=None if worker is None else worker.decode(),
            result=f.get(b"r"),
            errors=errors,
            progress=_float(f.get(b"pr")),
            cancel_requested=f.get(b"c") == b"1",
        )

    def _drop_from_index(self, pipe: Any, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            pipe.hdel(self._bucket(job_id), job_id)
            self._where.pop(job_id, None)

    async def _forget(self, job_ids: list[str]) -> None:
        if job_ids:
            pipe = self._client.pipeline()
            self._drop_from_index(pipe, job_ids)
            await pipe.execute()

    # -- lifecycle ---------------------------------------------------------------

    @mapped
    async def open(self) -> None:
        self._closed = False
        await self._client.ping()
        await self._check_layout()
        await self._load_scripts()
        for direct in self._directs:
            await direct.connect()

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
        side = [*self._blockers.values(), *([self._subscriber] if self._subscriber else [])]
        self._blockers.clear()
        self._subscriber = None
        clients: list[Any] = [*side, self._client] if self._owns else side
        clients += self._directs
        if self._blocker is not None:
            clients.append(self._blocker)
        with anyio.CancelScope(shield=True):
            for client in clients:
                with contextlib.suppress(RedisError):
                    await client.aclose()

    @mapped
    async def drop_namespace(self) -> None:
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

    def _get_notices(self) -> Notices:
        if self._notices is None:
            node = self._client.get_default_node() if self._cluster else None
            self._subscriber = side_client(self._client, self._name, "sub", node)
            self._notices = Notices(self._subscriber.pubsub(), _notice_job)
        return self._notices

    # -- producers ---------------------------------------------------------------

    @mapped
    async def enqueue(
        self, jobs: Sequence[JobRecord], *, connection: object | None = None
    ) -> list[JobRecord]:
        if connection is not None:
            msg = "the Redis backend has no transactions: enqueue(connection=...) needs PostgreSQL"
            raise ConfigurationError(msg)
        return await self._enqueue(jobs, waited=False)

    @mapped
    async def enqueue_waited(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        # Subscribed (and confirmed) first, then marked at enqueue: the waiter
        # that follows skips its read of the job (see _redis_notices).
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
            if kept.id != job.id:
                notices.unexpect(job.id)
        return stored

    async def _enqueue(self, jobs: Sequence[JobRecord], *, waited: bool) -> list[JobRecord]:
        if not jobs:
            return []
        by_queue: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_queue.setdefault(job.queue, []).append(i)
        chunks = [
            indexes[start : start + _ENQUEUE_CHUNK]
            for indexes in by_queue.values()
            for start in range(0, len(indexes), _ENQUEUE_CHUNK)
        ]
        # Outside a cluster the script writes the id index and the queue
        # registry itself (one round trip, no pipeline); in a cluster those
        # keys live in other slots, so a pipeline writes them first.
        inline = not self._cluster

        def calls() -> Iterator[_Call]:
            # A generator: each chunk is on its way while the next is encoded.
            for chunk in chunks:
                queue = jobs[chunk[0]].queue
                keys = [self._prefix(queue)]
                where: dict[str, int] = {}
                args: list[Any] = [len(chunk), queue, "1" if waited else ""]
                for i in chunk:
                    job = jobs[i]
                    position = 0
                    if inline:
                        bucket = self._bucket(job.id)
                        position = where.get(bucket, 0)
                        if not position:
                            keys.append(bucket)
                            position = where[bucket] = len(keys)
                    ttl = job.result_ttl
                    args += (
                        job.id,
                        job.key if job.key is not None else "",
                        job.priority,
                        # '~': asked for now (see the enqueue script)
                        f"~{float(job.scheduled_at)!r}"
                        if job.scheduled_at <= job.enqueued_at
                        else repr(float(job.scheduled_at)),
                        _encode(job),
                        job.max_attempts,
                        "" if ttl is None else repr(float(ttl)),
                        job.name,
                        position,
                    )
                if inline:
                    keys.append(self._queues_key)
                yield ("enqueue", keys, args)

        before: list[_Command] = []
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
            for i, item in zip(chunk, reply, strict=True):
                job = jobs[i]
                if isinstance(item, list):
                    stored[i] = self._record(item)
                    continue
                state = _STORED[item]
                if job.state is not state:
                    stored[i] = replace(job, state=state)
                where[job.id] = job.queue
        while len(where) > _CACHE_SIZE:
            where.popitem(last=False)
        return stored

    async def _get(self, queue: str, job_id: str) -> JobRecord | None:
        reply = await self._script("get", [self._prefix(queue)], [job_id])
        return None if reply is None else self._record(reply)

    @mapped
    async def get(self, job_id: str) -> JobRecord | None:
        queue = await self._queue_of(job_id)
        return None if queue is None else await self._get(queue, job_id)

    @mapped
    async def cancel(self, job_id: str) -> JobRecord | None:
        queue = await self._queue_of(job_id)
        if queue is None:
            return None
        reply = await self._script("cancel", [self._prefix(queue)], [job_id])
        return None if reply is None else self._record(reply)

    @mapped
    async def wait_finished(self, job_id: str) -> JobRecord | None:
        queue = await self._queue_of(job_id)
        if queue is None:
            return None
        if self._closed:
            return await self._get(queue, job_id)
        channel = self._prefix(queue) + "done"
        return await self._get_notices().wait(
            channel, job_id, lambda: self._watch(queue, job_id), self._noticed
        )

    async def _watch(self, queue: str, job_id: str) -> JobRecord | None:
        """The job as ``get`` reads it, marked as waited for if it is not finished."""
        reply = await self._script("watch", [self._prefix(queue)], [job_id])
        return None if reply is None else self._record(reply)

    def _noticed(self, notice: bytes) -> JobRecord | None:
        """The job a notice carries (see ``notify`` in ``_redis_lua``); ``None`` if none."""
        if b";" not in notice:
            return None
        fields = _unpack(notice)
        return self._record(fields[1:]) if len(fields) > 1 else None

    # -- workers -----------------------------------------------------------------

    @mapped
    async def claim(
        self, queues: Sequence[str], limit: int, *, worker: str, lease_for: float
    ) -> list[Lease]:
        leases: list[Lease] = []
        earliest: float | None = None
        for group in self._slot_groups(queues) if limit > 0 else []:
            base = uuid.uuid4().hex
            args = [limit - len(leases), worker, repr(float(lease_for)), base]
            reply = await self._script("claim", [self._prefix(q) for q in group], args)
            found, soonest = self._leases(reply, worker, base)
            leases += found
            if len(leases) >= limit:
                break
            if soonest is not None:
                earliest = soonest if earliest is None else min(earliest, soonest)
        self._note_claim(queues, limit, leases, earliest)
        return leases

    def _leases(self, reply: list[Any], worker: str, base: str) -> tuple[list[Lease], float | None]:
        """The leases a claim script handed out, and the earliest delayed job it reported."""
        now, expires = float(reply[0]), float(reply[1])
        # Local time of the server's "now": turns its scheduled_at into a wait.
        offset = time.monotonic() - now
        leases = []
        for n, i in enumerate(range(3, len(reply), 5), 1):
            record, attempts, scheduled_at, errors, progress = reply[i : i + 5]
            job = replace(
                _decode_record(record),
                state=JobState.ACTIVE,
                attempts=int(attempts),
                scheduled_at=float(scheduled_at),
                started_at=now,
                lease_expires_at=expires,
                worker=worker,
                errors=() if errors is None else _decode_errors(b"[" + errors + b"]"),
                progress=_float(progress),
            )
            # Each token ends with its queue, so settle() can route without a lookup.
            token = f"{base}.{n}:{job.queue}"
            self._remember(job.id, job.queue)
            leases.append(Lease(job=job, token=token, expires_at=expires))
        return leases, float(reply[2]) + offset if reply[2] else None

    def _note_claim(
        self, queues: Sequence[str], limit: int, leases: list[Lease], earliest: float | None
    ) -> None:
        """Remember a claim that came up short, for the ``wait_for_work`` that follows it.

        Such a claim found nothing more ready, dropped the stale wake tokens
        and reported the earliest delayed job (a monotonic time here), which
        is all a ``peek`` would tell: the wait may block at once.
        """
        key = tuple(dict.fromkeys(queues))
        if len(leases) < limit:
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
                    peeks = await self._many([("peek", [self._prefix(q)], []) for q in queues])
                    for ready, earliest, now in peeks:
                        if int(ready):
                            return
                        if earliest:
                            wait = min(wait, float(earliest) - float(now))
                if wait > 0:
                    await self._block([self._prefix(q) + "wake" for q in queues], wait)
            finally:
                self._waits.discard(scope)

    async def _block(self, keys: list[str], timeout: float) -> None:
        timeout = max(timeout, 0.01)  # BLPOP reads 0 as "forever"
        blocker = self._blocker
        if blocker is not None and not blocker.busy:
            await blocker.call(lambda: [("BLPOP", *keys, repr(timeout))], longer=timeout)
            return
        if not self._cluster:
            if "" not in self._blockers:
                self._blockers[""] = side_client(self._client, self._name, "block")
            await self._blockers[""].blpop(keys, timeout=timeout)
            return
        groups: dict[int, list[str]] = {}
        for key in keys:
            groups.setdefault(key_slot(key.encode()), []).append(key)
        if len(groups) == 1:
            await self._block_on_node(keys, timeout)
            return
        # One BLPOP may not span slots: block on each slot, return on the first answer.
        async with anyio.create_task_group() as tg:

            async def block_one(group: list[str]) -> None:
                await self._block_on_node(group, timeout)
                tg.cancel_scope.cancel()

            for group in groups.values():
                tg.start_soon(block_one, group)

    async def _block_on_node(self, keys: list[str], timeout: float) -> None:
        node = self._client.get_node_from_key(keys[0])
        client = self._blockers.get(node.name)
        if client is None:
            client = self._blockers[node.name] = side_client(
                self._client, self._name, "block", node
            )
        try:
            await client.blpop(keys, timeout=timeout)
        except (MovedError, AskError):
            # The slot moved: return early; the cluster client learns the new map
            # on its next command and the caller waits again.
            return

    @mapped
    async def heartbeat(self, leases: Sequence[Lease], *, lease_for: float) -> HeartbeatReply:
        by_queue: dict[str, list[Any]] = {}
        for lease in leases:
            by_queue.setdefault(lease.job.queue, []).extend((lease.job.id, _token(lease.token)))
        calls = [
            ("heartbeat", [self._prefix(q)], [repr(float(lease_for)), *args])
            for q, args in by_queue.items()
        ]
        lost: set[str] = set()
        cancel: set[str] = set()
        for gone, asked in await self._many(calls) if calls else []:
            lost.update(i.decode() for i in gone)
            cancel.update(i.decode() for i in asked)
        return HeartbeatReply(lost=frozenset(lost), cancel=frozenset(cancel))

    @mapped
    async def progress(self, lease: Lease, value: float) -> bool:
        args = [lease.job.id, _token(lease.token), repr(float(value))]
        return bool(await self._script("progress", [self._prefix(lease.job.queue)], args))

    @mapped
    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        check_outcomes(outcomes)
        by_queue = _by_token_queue(outcomes)
        calls: list[_Call] = [
            ("settle", [self._prefix(queue)], _settle_args(outcomes, indexes))
            for queue, indexes in by_queue.items()
        ]
        applied = [False] * len(outcomes)
        for indexes, reply in zip(
            by_queue.values(), await self._many(calls) if calls else [], strict=True
        ):
            for i, ok in zip(indexes, reply, strict=True):
                applied[i] = bool(ok)
        return applied

    @mapped
    async def settle_and_claim(
        self,
        outcomes: Sequence[Outcome],
        queues: Sequence[str],
        limit: int,
        *,
        worker: str,
        lease_for: float,
    ) -> tuple[list[bool], list[Lease]]:
        check_outcomes(outcomes)
        if self._cluster:
            # The queues of one call may live on several nodes: two round trips.
            applied = await self.settle(outcomes)
            return applied, await self.claim(queues, limit, worker=worker, lease_for=lease_for)
        by_queue = _by_token_queue(outcomes)
        claimed = list(dict.fromkeys(queues)) if limit > 0 else []
        base = uuid.uuid4().hex
        args: list[Any] = [max(limit, 0), worker, repr(float(lease_for)), base, len(by_queue)]
        for indexes in by_queue.values():
            args.append(len(indexes))
            args += _settle_args(outcomes, indexes)
        keys = [self._prefix(q) for q in (*by_queue, *claimed)]
        flags, reply = await self._script("settle_claim", keys, args)
        applied = [False] * len(outcomes)
        for i, ok in zip((i for ix in by_queue.values() for i in ix), flags, strict=True):
            applied[i] = bool(ok)
        leases, earliest = self._leases(reply, worker, base)
        self._note_claim(queues, limit, leases, earliest)
        return applied, leases

    @mapped
    async def recover(self) -> int:
        queues = await self._known_queues()
        total = 0
        while queues:
            counts = await self._many(
                [("recover", [self._prefix(q)], [_RECOVER_BATCH]) for q in queues]
            )
            total += sum(counts)
            queues = [q for q, n in zip(queues, counts, strict=True) if n >= _RECOVER_BATCH]
        return total

    @mapped
    async def prune(self) -> int:
        queues = await self._known_queues()
        if not queues:
            return 0
        replies = await self._many([("prune", [self._prefix(q)], [_PRUNE_BATCH]) for q in queues])
        ids = [i.decode() for reply in replies for i in reply]
        await self._forget(ids)
        return len(ids)

    # -- operations --------------------------------------------------------------

    @mapped
    async def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        names = await self._known_queues() if queues is None else sorted(set(queues))
        if not names:
            return []
        states = [s.value for s in JobState]
        replies = await self._many([("stats", [self._prefix(q)], states) for q in names])
        out = []
        for queue, reply in zip(names, replies, strict=True):
            counts = {JobState(s): int(n) for s, n in zip(states, reply, strict=False)}
            oldest = reply[len(states) + 1]
            out.append(
                QueueStats(
                    queue=queue,
                    counts=counts,
                    paused=bool(reply[len(states)]),
                    oldest_ready_at=float(oldest) if oldest else None,
                )
            )
        return out

    @mapped
    async def list_jobs(
        self,
        *,
        state: JobState | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[JobRecord]:
        if limit <= 0:
            return []
        queues = [queue] if queue is not None else await self._known_queues()
        found: list[JobRecord] = []
        for q in queues:
            if state is not None:
                small = await self._list_small_state(q, state, name, limit, after)
                if small is not None:
                    found += small
                    continue
            cursor = after or ""
            got = 0
            while got < limit:
                args = [state.value if state else "", name or "", cursor, limit - got, _LIST_BUDGET]
                jobs, cursor_raw, exhausted = await self._script("list", [self._prefix(q)], args)
                found += (self._record(flat) for flat in jobs)
                got += len(jobs)
                cursor = cursor_raw.decode()
                if int(exhausted) or not cursor:
                    break
        found.sort(key=lambda job: job.id)
        return found[:limit]

    async def _list_small_state(
        self, queue: str, state: JobState, name: str | None, limit: int, after: str | None
    ) -> list[JobRecord] | None:
        """``list_jobs`` of one queue from the index of ``state``, if it is small; else None.

        Dead or cancelled jobs among many completed ones are found this way
        without walking the id-ordered set of every job.
        """
        prefix = [self._prefix(queue)]
        ids = await self._script("state_ids", prefix, [state.value, _GATHER_MAX])
        if ids is None:
            return None
        floor = after.encode() if after is not None else b""
        candidates = sorted(i for i in ids if i > floor)
        found: list[JobRecord] = []
        start = 0
        while len(found) < limit and start < len(candidates):
            page = candidates[start : start + max(limit - len(found), 100)]
            start += len(page)
            jobs = await self._script("fetch", prefix, [state.value, name or "", *page])
            found += (self._record(flat) for flat in jobs)
        return found[:limit]

    @mapped
    async def retry_dead(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 1000,
    ) -> list[str]:
        if job_ids is None:
            dead = await self.list_jobs(state=JobState.DEAD, queue=queue, name=name, limit=limit)
            ids = [job.id for job in dead]
            where = {job.id: job.queue for job in dead}
        else:
            ids = list(job_ids)
            where = await self._queues_of(ids)
        by_queue: dict[str, list[str]] = {}
        for job_id in dict.fromkeys(ids):
            if job_id in where:
                by_queue.setdefault(where[job_id], []).append(job_id)
        if not by_queue:
            return []
        calls = [("retry_dead", [self._prefix(q)], list(group)) for q, group in by_queue.items()]
        retried = {i.decode() for reply in await self._many(calls) for i in reply}
        return [job_id for job_id in dict.fromkeys(ids) if job_id in retried]

    @mapped
    async def purge(
        self,
        *,
        states: Sequence[JobState],
        older_than: float,
        queue: str | None = None,
        limit: int = 10_000,
    ) -> int:
        wanted = purgeable(states)
        queues = [queue] if queue is not None else await self._known_queues()
        names = sorted(s.value for s in wanted)
        deleted: list[str] = []
        for q in queues:
            if len(deleted) >= limit or not names:
                break
            args = [repr(float(older_than)), limit - len(deleted), *names]
            deleted += (i.decode() for i in await self._script("purge", [self._prefix(q)], args))
        await self._forget(deleted)
        return len(deleted)

    @mapped
    async def set_paused(self, queue: str, paused: bool) -> None:
        await self._many(
            [("set_paused", [self._prefix(queue)], ["1" if paused else "0"])],
            [("SADD", self._queues_key, queue)],
        )

    @property
    def capabilities(self) -> frozenset[Capability[Any]]:
        # A cluster's settle_and_claim takes two round trips (its queues span nodes).
        fused = () if self._cluster else (SETTLE_ON_CLAIM,)
        return frozenset({*fused, ENQUEUE_WAITED, DROP})

    async def drop(self) -> None:
        """``drop_namespace``: delete every key of this namespace."""
        await self.drop_namespace()


def _by_token_queue(outcomes: Sequence[Outcome]) -> dict[str, list[int]]:
    """Positions of the outcomes by the queue their token names (forged tokens: none)."""
    by_queue: dict[str, list[int]] = {}
    for i, outcome in enumerate(outcomes):
        queue = _token_queue(outcome.token)
        if queue is not None:
            by_queue.setdefault(queue, []).append(i)
    return by_queue


def _settle_args(outcomes: Sequence[Outcome], indexes: list[int]) -> list[Any]:
    """The settle scripts' 7 arguments per outcome."""
    args: list[Any] = []
    for i in indexes:
        o = outcomes[i]
        args += (
            o.job_id,
            _token(o.token),
            o.state.value,
            "0" if o.result is None else "1",
            o.result or b"",
            b"" if o.error is None else _encode_json(o.error),
            "" if o.retry_at is None else repr(float(o.retry_at)),
        )
    return args


def _token(token: str) -> str:
    """The part of a lease token the scripts store (without the queue suffix)."""
    return token.partition(":")[0]


def _token_queue(token: str) -> str | None:
    head, sep, queue = token.partition(":")
    return queue if sep and head else None


if TYPE_CHECKING:
    _check: type[Backend] = RedisBackend
    _fused: type[SettlesOnClaim] = RedisBackend
    _waited: type[EnqueuesWaited] = RedisBackend
