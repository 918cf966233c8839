"""The PostgreSQL backend's one LISTEN connection and the waits it serves.

A backend instance keeps a single connection (outside its pool) listening on
its schema's two channels, however many ``wait_for_work`` and
``wait_finished`` calls are pending: each call registers an event under the
queue names or the job id it waits for, and a notification sets the events
registered under its payload.

The connection is made on the first wait and again after it is lost. Losing
it wakes every waiter: notifications sent while nobody listened are gone, so
each waiter re-reads the store once LISTEN is back in effect, which is why a
waiter always registers, then makes sure the listener is up, then reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

import anyio
import msgspec

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    Connection = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

__all__ = ["Listener", "ListenerClosed"]

_ids = msgspec.json.Decoder(list[str])


class ListenerClosed(Exception):
    """``ensure`` was called (or was running) after ``close``."""


class Listener:
    """The listening connection of one backend, and the events of its waiters.

    Args:
        connect: opens a connection (the caller maps its driver errors).
        release: closes or returns one; must not raise.
        work_channel: payloads are queue names.
        done_channel: payloads are JSON arrays of finished job ids.
    """

    def __init__(
        self,
        *,
        connect: Callable[[], Awaitable[Connection]],
        release: Callable[[Connection], Awaitable[None]],
        work_channel: str,
        done_channel: str,
    ) -> None:
        self._connect = connect
        self._release = release
        self._work_channel = work_channel
        self._done_channel = done_channel
        self._conn: Connection | None = None
        self._lock: anyio.Lock | None = None
        #: Set by ``close``; cleared by the owner when it opens again.
        self.closed = False
        self._work: dict[str, set[anyio.Event]] = {}
        self._done: dict[str, set[anyio.Event]] = {}

    @property
    def connection(self) -> Connection | None:
        """The listening connection, while there is one."""
        return self._conn

    async def ensure(self) -> None:
        """Connect and LISTEN unless already listening; returns once LISTEN is in effect."""
        if self._conn is not None and not self._conn.is_closed():
            return
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            stale = self._conn
            if stale is not None and not stale.is_closed():
                return
            self._conn = None
            if stale is not None:
                await self._drop(stale)
            if self.closed:
                raise ListenerClosed
            conn = await self._connect()
            try:
                await conn.add_listener(self._work_channel, self._on_notify)
                await conn.add_listener(self._done_channel, self._on_notify)
                if self.closed:  # closed while connecting: keep nothing open
                    raise ListenerClosed
            except BaseException:
                await self._drop(conn)
                raise
            conn.add_termination_listener(self._on_terminated)
            self._conn = conn

    async def check(self) -> None:
        """Make sure the listener still answers; drop it if not.

        A connection cut without a FIN never reports its end, so after a quiet
        safety-net interval the waiters ping it; a failed ping drops it, which
        wakes every waiter to reconnect and re-read.
        """
        conn = self._conn
        if conn is None or self._lock is None:
            return
        async with self._lock:
            if conn is not self._conn:
                return
            try:
                with anyio.fail_after(5):
                    await conn.execute("SELECT 1")
            except Exception:  # noqa: BLE001 - any failure means the connection is unusable
                conn.terminate()

    async def close(self) -> None:
        """Stop listening and wake every waiter; ``ensure`` raises until reopened."""
        self.closed = True
        conn, self._conn = self._conn, None
        self.wake_all()
        if conn is not None:
            await self._drop(conn)

    async def _drop(self, conn: Connection) -> None:
        conn.remove_termination_listener(self._on_terminated)
        with anyio.CancelScope(shield=True):
            if not conn.is_closed():
                # A pool takes back only a connection that listens no more.
                with anyio.move_on_after(5), suppress(Exception):
                    await conn.remove_listener(self._work_channel, self._on_notify)
                    await conn.remove_listener(self._done_channel, self._on_notify)
            await self._release(conn)

    @contextmanager
    def work_waiter(self, queues: Sequence[str]) -> Iterator[anyio.Event]:
        """An event set when a job may be ready in one of ``queues`` (or on a reconnect)."""
        with self._waiter(self._work, queues) as event:
            yield event

    @contextmanager
    def job_waiter(self, job_id: str) -> Iterator[anyio.Event]:
        """An event set when ``job_id`` finishes (or on a reconnect)."""
        with self._waiter(self._done, [job_id]) as event:
            yield event

    @staticmethod
    @contextmanager
    def _waiter(table: dict[str, set[anyio.Event]], names: Sequence[str]) -> Iterator[anyio.Event]:
        event = anyio.Event()
        for name in names:
            table.setdefault(name, set()).add(event)
        try:
            yield event
        finally:
            for name in names:
                waiters = table.get(name)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del table[name]

    def wake_all(self) -> None:
        """Set every registered event (close, reconnect)."""
        for waiters in (*self._work.values(), *self._done.values()):
            for event in waiters:
                event.set()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        if not isinstance(payload, str):
            return
        if channel == self._work_channel:
            names = [payload]
            table = self._work
        elif channel == self._done_channel:
            try:
                names = _ids.decode(payload)
            except msgspec.DecodeError:
                return  # not ours: anyone may NOTIFY on any channel
            table = self._done
        else:
            return
        for name in names:
            for event in table.get(name, ()):
                event.set()

    def _on_terminated(self, conn: object) -> None:
        if self._conn is conn:
            self._conn = None
        self.wake_all()
