"""The Redis backend's transport: its own connections, running scripts.

``Transport`` runs script calls: over ``Direct`` connections of its own
outside a cluster, else through redis-py's pipelines; as functions of one
library (``FCALL``, see ``library``) where the server has them, else by
``EVALSHA``; it reloads what the server lost, and blocks on wake lists
(``BLPOP``) for ``wait_for_work``.
Connecting and error mapping are in ``client``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    InvalidResponse,
    MovedError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .client import _POOL_ONLY, side_client
from .codec import pack
from .library import Library, library
from .scripts import SCRIPTS, Call

__all__ = ["DIRECT_MAX", "Command", "Direct", "Transport"]


def _import_hiredis() -> Any:
    try:
        import hiredis
    except ImportError:  # pragma: no cover - redis[hiredis] brings it
        return None
    return hiredis


_hiredis = _import_hiredis()

#: a plain command, sent before a call's scripts (see ``Transport.many``)
Command = tuple[Any, ...]

#: connections of its own a transport opens for concurrent script calls, at most
DIRECT_MAX = 4
#: scripts whose arguments redis-py gets packed into one (see ``codec.pack``)
_PACKED = frozenset({"enqueue", "settle", "settle_claim"})


class Direct:
    """A connection of the backend's own for its scripts, beside the client's pool.

    A call through redis-py's client costs more in Python than the script it
    runs costs Redis: a pool checkout and release, per-call hooks, every
    argument packed in Python, a task per write to bound it in time
    (``asyncio.wait_for``) and a parser layer per reply. Here redis-py only
    opens the connection (TLS, AUTH, SELECT, client name); a call packs its
    commands with hiredis, writes them to the stream and reads the replies
    with a hiredis reader of its own, under one timeout.

    ``busy`` is true while a call is in flight: the backend then uses another
    connection, so concurrent callers are not serialised behind one. A call
    whose connection drops is sent again at once on a new one, then as the
    client's retry policy says (the scripts find replayed work done).
    """

    #: bytes gathered before they are written, so a long batch reaches the
    #: server while the caller still encodes the rest of it
    FLUSH = 32 * 1024

    def __init__(self, client: aioredis.Redis, name: str | None = None) -> None:
        """A connection like the client's; ``name`` overrides its client name."""
        pool = client.connection_pool
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if k not in _POOL_ONLY}
        if name is not None:
            kwargs["client_name"] = name
        self._timeout: float | None = kwargs.get("socket_timeout")
        self._conn: AbstractConnection = pool.connection_class(**kwargs)
        self._replies: Any = None  # a hiredis.Reader for the current connection
        self.busy = False

    @staticmethod
    def usable(client: Any) -> bool:
        """Whether ``client`` is one a ``Direct`` can stand beside."""
        if _hiredis is None or not isinstance(client, aioredis.Redis):
            return False
        pool = client.connection_pool
        cls = pool.connection_class
        # fakeredis' connections subclass Connection but have no socket.
        if not issubclass(cls, Connection) or cls.__module__.startswith("fakeredis"):
            return False
        # The streams it reads and writes once redis-py has opened the connection.
        probe = cls(**{k: v for k, v in pool.connection_kwargs.items() if k not in _POOL_ONLY})
        return hasattr(probe, "_reader") and hasattr(probe, "_writer")

    async def connect(self) -> None:
        if not self._conn.is_connected:
            await self._conn.connect()  # type: ignore[no-untyped-call, unused-ignore]
            assert _hiredis is not None
            self._replies = _hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)

    async def call(
        self, commands: Callable[[], Iterable[Sequence[Any]]], *, longer: float = 0.0
    ) -> list[Any]:
        """Send every command ``commands()`` yields, pipelined; return the replies in order.

        Error replies come back as ``ResponseError`` values (``NoScriptError``
        for a missing script or function). ``commands`` is a factory, so a
        retry sends everything again; it is iterated while earlier commands
        are already on their way. ``longer`` adds to the socket timeout: a
        blocking command's own timeout.
        """
        self.busy = True
        try:
            try:
                return await self._attempt(commands(), longer)
            except (RedisConnectionError, RedisTimeoutError):
                return list(
                    await self._conn.retry.call_with_retry(
                        lambda: self._attempt(commands(), longer), lambda _error: self._drop()
                    )
                )
        finally:
            self.busy = False

    async def _attempt(self, commands: Iterable[Sequence[Any]], longer: float) -> list[Any]:
        timeout = None if self._timeout is None else self._timeout + longer
        try:
            # asyncio's own timeout: anyio.fail_after costs a round trip's worth
            # of Python per call (a cancel scope with its timer), this a timer.
            async with asyncio.timeout(timeout):
                return await self._exchange(commands)
        except TimeoutError:
            await self._drop()
            msg = f"no answer within {timeout}s"
            raise RedisTimeoutError(msg) from None
        except OSError as exc:
            await self._drop()
            raise RedisConnectionError(f"connection lost: {exc}") from exc
        except BaseException:
            # Cancelled, or the caller's commands raised: replies may be on their way.
            await self._drop()
            raise

    async def _exchange(self, commands: Iterable[Sequence[Any]]) -> list[Any]:
        await self.connect()
        conn: Any = self._conn
        writer, stream, replies = conn._writer, conn._reader, self._replies
        pack = _hiredis.pack_command
        pending: list[bytes] = []
        size = sent = 0
        for command in commands:
            packed = pack(tuple(command))
            pending.append(packed)
            size += len(packed)
            sent += 1
            if size >= self.FLUSH:
                writer.writelines(pending)
                await writer.drain()
                pending, size = [], 0
        writer.writelines(pending)
        await writer.drain()
        out: list[Any] = []
        while len(out) < sent:
            reply = replies.gets()
            if reply is False:
                data = await stream.read(65536)
                if not data:
                    raise RedisConnectionError("the server closed the connection")
                replies.feed(data)
            elif isinstance(reply, ResponseError):
                text = str(reply)
                out.append(NoScriptError(text) if _lost(text) else reply)
            elif not isinstance(reply, _hiredis.PushNotification):
                out.append(reply)
        return out

    async def _drop(self) -> None:
        await self._conn.disconnect(nowait=True)

    async def aclose(self) -> None:
        await self._conn.disconnect()


class Transport:
    """Runs the backend's script calls, and its blocking pops, on a client.

    Outside a cluster the scripts go over connections of its own (``Direct``),
    opened as concurrent calls need them, up to ``DIRECT_MAX``; beyond, and on
    a cluster or fakeredis, through the client's pool.

    ``open`` loads the scripts as a function library (``FUNCTION LOAD``) and
    calls go by ``FCALL``; where the server refuses it (before Redis 7.0 or
    Valkey 7.2, or ``FUNCTION`` denied by an ACL), it loads them as scripts
    and calls go by ``EVALSHA``.
    """

    def __init__(self, client: Any, name: str) -> None:
        """``client`` a ``Redis`` or ``RedisCluster``; ``name`` the base of connection names."""
        self.client = client
        self._name = name
        self._cluster = isinstance(client, RedisCluster)
        self._scripts = {s: client.register_script(src) for s, src in SCRIPTS.items()}
        self._shas = {s: script.sha for s, script in self._scripts.items()}
        # ``None`` once the server refused it (or a test wants EVALSHA).
        self._library: Library | None = library()
        # A call is (verb, id of the script, numkeys, keys, args): EVALSHA and
        # the script's SHA1 until ``open`` loads the library, then FCALL and
        # the script's function.
        self._verb = "EVALSHA"
        self._ids = self._shas
        self._direct_ok = not self._cluster and Direct.usable(client)
        self._directs: list[Direct] = [Direct(client)] if self._direct_ok else []
        # Blocking pops go over a connection of their own (one wait at a time;
        # a second concurrent wait, or a cluster, uses the side clients).
        self._blocker = Direct(client, f"{name}:block") if self._direct_ok else None
        self._blockers: dict[str, aioredis.Redis] = {}

    @property
    def functions(self) -> bool:
        """Whether calls go by ``FCALL`` (else by ``EVALSHA``)."""
        return self._verb == "FCALL"

    async def open(self, scripts: set[str] | None = None) -> None:
        """Load the library, or where the server has no functions ``scripts`` (all
        when ``None``); connect the direct connection.

        A script not loaded here is loaded when a call first finds it missing
        (see ``many``), as is the library after a server restart.
        """
        if not await self._load_library(unless_there=not self._cluster):
            await self.load_scripts(scripts)
        for direct in self._directs:
            await direct.connect()

    async def _load_library(self, *, unless_there: bool = False) -> bool:
        """Load the library; false (calls then go by ``EVALSHA``) where the server refuses it.

        ``REPLACE``: a library of this name holds these very functions (its
        name is a hash of its text), so replacing it changes nothing for
        other clients. On a cluster, redis-py sends it to every primary.
        ``unless_there``: first ask whether the server has it (compiling it
        holds the server up ~1.5 ms; most opens find it loaded).
        """
        if self._library is not None:
            name, text = self._library.name, self._library.text
            try:
                if not (unless_there and await self.client.function_list(library=name)):
                    await self.client.function_load(text, replace=True)
            except ResponseError:
                # No FUNCTION command (or no FUNCTION LOAD), or an ACL denies it.
                self._library = None
            else:
                self._verb, self._ids = "FCALL", self._library.functions
                return True
        self._verb, self._ids = "EVALSHA", self._shas
        return False

    async def _reload(self, names: set[str]) -> None:
        """Load again what the server lost (restart, ``FUNCTION FLUSH``, ``SCRIPT FLUSH``,
        a new primary): the library, or the scripts ``names``."""
        if not await self._load_library():
            await self.load_scripts(names)

    async def many(
        self, calls: Iterable[Call], before: Sequence[Command] = (), *, again: bool = False
    ) -> list[Any]:
        """Run the commands ``before``, then the scripts ``calls``, pipelined; return their replies.

        ``calls`` may be a generator: on the direct connection each script is
        sent as soon as it is made, so the server runs the first while the
        caller encodes the next. ``again``: the calls found their scripts
        missing once, which were loaded since; missing again is an error.
        """
        direct = self._free_direct()
        made: list[Call] = []
        if direct is not None:
            source = iter(calls)

            def commands() -> Iterator[Sequence[Any]]:
                # A retry (after a dropped connection) sends again what was made.
                yield from before
                verb, ids = self._verb, self._ids
                for name, keys, args in _replay(made, source):
                    yield (verb, ids[name], len(keys), *keys, *args)

            results = (await direct.call(commands))[len(before) :]
        else:
            made = list(calls)
            results = await self._pipelined(made, before)
        for result in results:
            if isinstance(result, BaseException) and (
                again or not isinstance(result, NoScriptError)
            ):
                raise result
        missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            # The server lost the scripts (restart, flush, failover): load them, run those again.
            await self._reload({made[i][0] for i in missing})
            replies = await self.many([made[i] for i in missing], again=True)
            for i, reply in zip(missing, replies, strict=True):
                results[i] = reply
        return results

    def _free_direct(self) -> Direct | None:
        for direct in self._directs:
            if not direct.busy:
                return direct
        if self._direct_ok and len(self._directs) < DIRECT_MAX:
            self._directs.append(Direct(self.client))
            return self._directs[-1]
        return None

    async def _pipelined(self, calls: list[Call], before: Sequence[Command]) -> list[Any]:
        """``many`` through redis-py (a cluster, fakeredis, or the direct connection busy)."""

        def argv(name: str, args: list[Any]) -> list[Any]:
            # redis-py packs each argument in Python: long batches go as one.
            return [pack(args)] if name in _PACKED else args

        if len(calls) == 1 and not before:
            name, keys, args = calls[0]
            if self._verb == "EVALSHA":
                # AsyncScript runs EVALSHA and loads the script again on NOSCRIPT.
                return [await self._scripts[name](keys=keys, args=argv(name, args))]
            try:
                function = self._ids[name]
                return [await self.client.fcall(function, len(keys), *keys, *argv(name, args))]
            except ResponseError as error:
                if not _lost(str(error)):
                    raise
                return [NoScriptError(str(error))]  # ``many`` loads it and calls again
        if before and self._cluster:
            # A cluster pipeline runs on all nodes at once; the index must land first.
            pipe = self.client.pipeline()
            for command in before:
                pipe.execute_command(*command)
            await pipe.execute()
            before = ()
        pipe = self.client.pipeline(transaction=False)
        for command in before:
            pipe.execute_command(*command)
        verb, ids = self._verb, self._ids
        for name, keys, args in calls:
            # execute_command: redis-py refuses pipe.evalsha() on a cluster pipeline.
            pipe.execute_command(verb, ids[name], len(keys), *keys, *argv(name, args))
        results = await pipe.execute(raise_on_error=False)
        return [
            NoScriptError(str(r)) if isinstance(r, ResponseError) and _lost(str(r)) else r
            for r in results[len(before) :]
        ]

    async def load_scripts(self, names: set[str] | None = None) -> None:
        for name, script in self._scripts.items():
            if names is None or name in names:
                # On a cluster, redis-py sends SCRIPT LOAD to every primary.
                await self.client.script_load(script.script)

    async def block(self, keys: list[str], timeout: float) -> None:
        """``BLPOP`` the lists ``keys`` for at most ``timeout`` seconds."""
        timeout = max(timeout, 0.01)  # BLPOP reads 0 as "forever"
        blocker = self._blocker
        if blocker is not None and not blocker.busy:
            await blocker.call(lambda: [("BLPOP", *keys, repr(timeout))], longer=timeout)
            return
        if not self._cluster:
            if "" not in self._blockers:
                self._blockers[""] = side_client(self.client, self._name, "block")
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
        node = self.client.get_node_from_key(keys[0])
        client = self._blockers.get(node.name)
        if client is None:
            client = self._blockers[node.name] = side_client(self.client, self._name, "block", node)
        try:
            await client.blpop(keys, timeout=timeout)
        except (MovedError, AskError):
            # The slot moved: return early; the cluster client learns the new map
            # on its next command and the caller waits again.
            return

    async def aclose(self, also: Sequence[Any] = (), *, client: bool) -> None:
        """Close the side clients, then ``also``, then the client if ``client``, then the
        connections of its own."""
        clients: list[Any] = [*self._blockers.values(), *also]
        self._blockers.clear()
        if client:
            clients.append(self.client)
        clients += self._directs
        if self._blocker is not None:
            clients.append(self._blocker)
        with anyio.CancelScope(shield=True):
            for each in clients:
                with contextlib.suppress(RedisError):
                    await each.aclose()


def _lost(error: str) -> bool:
    """Whether the error reply ``error`` says the server lacks the script or function called."""
    # hiredis keeps the error's code ("ERR ..."), redis-py drops it.
    return error.startswith("NOSCRIPT") or error.removeprefix("ERR ") == "Function not found"


def _replay(made: list[Call], source: Iterator[Call]) -> Iterator[Call]:
    """What ``source`` gave before, then the rest of it, keeping each new item in ``made``."""
    yield from list(made)
    for item in source:
        made.append(item)
        yield item
