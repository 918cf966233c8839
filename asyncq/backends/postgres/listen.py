"""The PostgreSQL backend's one LISTEN connection and the waits it serves.

A backend instance keeps a single connection (outside its pool) listening on
its schema's three channels, however many ``wait_for_work`` and
``wait_finished`` calls are pending: each call registers an event under the
queue names or the job id it waits for, and a notification sets the events
registered under its payload.

The listener also counts the work notices it hears, per queue (``mark``,
``quiet_since``), so that the backend can tell that nothing was announced in
some queues since a claim or a read, and need not read again.

The connection is made on the first wait and again after it is lost. Losing
it wakes every waiter: notifications sent while nobody listened are gone, so
each waiter re-reads the store once LISTEN is back in effect, which is why a
waiter always registers, then makes sure the listener is up, then reads.

A done notice that carries what a settlement changed on a job hands it to
the job's waiters along with the wake-up (``JobWait.finish``), so they need
not read the job again. Notices are decoded only while someone in this
process waits for a job, or expects to wait for one (``expect``).

The listener also hears the cancel notices of active jobs (``cancel_channel``)
and hands their ids to the backend's ``watch_cancels`` callbacks
(``cancels``); a watcher waits on ``reconnect_waiter`` to make the listener
connect again after it was lost, since nothing else may (a busy worker never
waits for work).

A job expected while the listener listens (``enqueue_waited``) needs
no read before its wait either: its end is announced after it was stored, so
as long as the same connection listens it is heard, and a notice heard before
the wait registers is kept for it (``take_early``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Container, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Protocol, TypeVar

import anyio
import msgspec

from ..._records import JobRecord
from .._workers import CancelWatchers
from .codec import Finish, read_done

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    Connection = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

__all__ = ["JobWait", "Listener", "ListenerClosed"]


#: Queues the listener keeps the latest notice of, at most (it forgets them
#: all past that: marks taken before then tell nothing).
_QUEUES_NOTED = 10_000
#: Jobs expected, and ends heard for waits still to come, at most (the oldest go first).
_EXPECTED_MAX = 10_000
_EARLY_MAX = 1_000


class _Settable(Protocol):
    def set(self) -> None: ...


_W = TypeVar("_W", bound=_Settable)


class ListenerClosed(Exception):
    """``ensure`` was called (or was running) after ``close``."""


class JobWait:
    """One ``wait_finished``'s registration: set when the job may have finished.

    ``finish`` is what the settlement changed on the job when the notice that
    set ``event`` carried it (and the listener trusts what notices carry);
    ``None`` after a notice of the id alone, a reconnect or ``close``, when
    the waiter must read the store.
    """

    __slots__ = ("event", "finish")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.finish: Finish | None = None

    def set(self) -> None:
        self.event.set()


class Listener:
    """The listening connection of one backend, and the events of its waiters.

    Args:
        connect: opens a connection (the caller maps its driver errors).
        release: closes or returns one; must not raise.
        work_channel: payloads are names of queues a job is ready in.
        later_channel: payloads are names of queues whose earliest due time
            may have moved.
        done_channel: payloads are JSON arrays of finished jobs' ids or
            ``Finish``es (``codec.read_done``).
        trust_finishes: hand the ``Finish``es done notices carry to the
            waiters; otherwise a notice only wakes them, to read the store.
        cancel_channel: payloads are ids of active jobs whose cancel was
            requested, for ``cancels``.
        wake_channels: any notice on these wakes every ``work_waiter``
            (the event stream's followers, who wait for any change).
    """

    def __init__(
        self,
        *,
        connect: Callable[[], Awaitable[Connection]],
        release: Callable[[Connection], Awaitable[None]],
        work_channel: str,
        later_channel: str,
        done_channel: str,
        trust_finishes: bool = True,
        cancel_channel: str = "",
        wake_channels: Sequence[str] = (),
    ) -> None:
        self._connect = connect
        self._release = release
        self._work_channel = work_channel
        self._later_channel = later_channel
        self._done_channel = done_channel
        self._trust_finishes = trust_finishes
        self._cancel_channel = cancel_channel
        self._wake_channels = frozenset(wake_channels)
        self._channels = tuple(
            c for c in (work_channel, later_channel, done_channel, cancel_channel) if c
        ) + tuple(c for c in wake_channels if c)
        #: the ``watch_cancels`` callbacks, called with the ids of cancelled active jobs
        self.cancels = CancelWatchers()
        self._reconnects: set[anyio.Event] = set()
        self._conn: Connection | None = None
        self._lock: anyio.Lock | None = None
        #: Set by ``close``; cleared by the owner when it opens again.
        self.closed = False
        self._work: dict[str, set[anyio.Event]] = {}
        self._done: dict[str, set[JobWait]] = {}
        # Work notices heard, numbered: the latest number; the number the
        # current connection started listening at (None: not listening); per
        # queue, the number of its latest notice and of its latest later one.
        self._heard = 0
        self._since: int | None = None
        self._latest: dict[str, int] = {}
        self._latest_later: dict[str, int] = {}
        # Jobs stored for a waiter to come: the mark LISTEN started at, and the
        # job as stored; and the ends heard of those before their wait began.
        self._expected: OrderedDict[str, tuple[int, JobRecord]] = OrderedDict()
        self._early: OrderedDict[str, Finish | None] = OrderedDict()

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
            self._since = None
            if stale is not None:
                await self._drop(stale)
            if self.closed:
                raise ListenerClosed
            conn = await self._connect()
            try:
                for channel in self._channels:
                    await conn.add_listener(channel, self._on_notify)
                if self.closed:  # closed while connecting: keep nothing open
                    raise ListenerClosed
            except BaseException:
                await self._drop(conn)
                raise
            conn.add_termination_listener(self._on_terminated)
            self._conn = conn
            self._restart_marks()

    def mark(self) -> int | None:
        """Where the notices heard stand now, for ``quiet_since``; ``None`` while not listening."""
        return None if self._since is None else self._heard

    def quiet_since(self, mark: int | None, queues: Sequence[str], *, later: bool = False) -> bool:
        """Whether no work notice (``later``: no later one) for ``queues`` was heard after ``mark``.

        False unless the same connection listened all along: what was
        announced meanwhile was heard. (A connection cut without a word is
        found out by ``check``; until then notices are missed, as by waits.)
        """
        if mark is None or self._since is None or mark < self._since:
            return False
        latest = self._latest_later if later else self._latest
        return all(latest.get(queue, 0) <= mark for queue in queues)

    def expect(self, job: JobRecord) -> bool:
        """``job`` is about to be stored, and waited for: keep its end if heard first.

        False when not listening (the waiter then reads as usual).
        """
        if self._since is None or not self._trust_finishes:
            return False
        self._expected[job.id] = (self._since, job)
        if len(self._expected) > _EXPECTED_MAX:
            self._expected.popitem(last=False)
        return True

    def unexpect(self, job_id: str) -> None:
        """``job_id`` was not stored after all (its key was held), or the enqueue failed."""
        self._expected.pop(job_id, None)
        self._early.pop(job_id, None)

    def take_expected(self, job_id: str) -> JobRecord | None:
        """The job as stored, if it was expected and LISTEN has been in effect since."""
        entry = self._expected.pop(job_id, None)
        if entry is None or entry[0] != self._since:
            return None
        return entry[1]

    def take_early(self, job_id: str) -> tuple[bool, Finish | None]:
        """Whether an expected job's end was heard before its wait; its ``Finish`` if carried."""
        if job_id not in self._early:
            return False, None
        return True, self._early.pop(job_id)

    def _restart_marks(self) -> None:
        """LISTEN is in effect on a new connection: earlier marks tell nothing any more."""
        self._heard += 1
        self._since = self._heard
        self._latest.clear()
        self._latest_later.clear()

    def _heard_work(self, queue: str, *, later: bool) -> None:
        if len(self._latest) >= _QUEUES_NOTED:
            self._restart_marks()  # forget, rather than grow with every queue name ever heard
        self._heard += 1
        self._latest[queue] = self._heard
        if later:
            self._latest_later[queue] = self._heard

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
        self._since = None
        self.wake_all()
        if conn is not None:
            await self._drop(conn)

    async def _drop(self, conn: Connection) -> None:
        conn.remove_termination_listener(self._on_terminated)
        with anyio.CancelScope(shield=True):
            if not conn.is_closed():
                # A pool takes back only a connection that listens no more.
                with anyio.move_on_after(5), suppress(Exception):
                    for channel in self._channels:
                        await conn.remove_listener(channel, self._on_notify)
            await self._release(conn)

    @contextmanager
    def work_waiter(self, queues: Sequence[str]) -> Iterator[anyio.Event]:
        """An event set when a job may be ready in one of ``queues`` (or on a reconnect)."""
        with self._waiter(self._work, queues, anyio.Event()) as event:
            yield event

    @contextmanager
    def job_waiter(self, job_id: str) -> Iterator[JobWait]:
        """A registration set when ``job_id`` finishes (or on a reconnect)."""
        with self._waiter(self._done, [job_id], JobWait()) as wait:
            yield wait

    @staticmethod
    @contextmanager
    def _waiter(table: dict[str, set[_W]], names: Sequence[str], waiter: _W) -> Iterator[_W]:
        for name in names:
            table.setdefault(name, set()).add(waiter)
        try:
            yield waiter
        finally:
            for name in names:
                waiters = table.get(name)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del table[name]

    @contextmanager
    def reconnect_waiter(self) -> Iterator[anyio.Event]:
        """An event set when the connection is lost (or the listener closed)."""
        event = anyio.Event()
        self._reconnects.add(event)
        try:
            yield event
        finally:
            self._reconnects.discard(event)

    def wake_all(self) -> None:
        """Set every registered event (close, reconnect)."""
        for event in self._reconnects:
            event.set()
        for events in self._work.values():
            for event in events:
                event.set()
        for waits in self._done.values():
            for wait in waits:
                wait.set()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        if not isinstance(payload, str):
            return
        if channel in self._wake_channels:
            for events in self._work.values():
                for event in events:
                    event.set()
        elif channel == self._work_channel or channel == self._later_channel:
            self._heard_work(payload, later=channel == self._later_channel)
            for event in self._work.get(payload, ()):
                event.set()
        elif channel == self._cancel_channel:
            self.cancels.notify([payload])
        elif channel == self._done_channel and (self._done or self._expected):
            try:
                finished = read_done(payload, _Either(self._done, self._expected))
            except msgspec.DecodeError:
                return  # not ours: anyone may NOTIFY on any channel
            for job_id, finish in finished:
                waits = self._done.get(job_id)
                if waits is None:
                    # An expected job, ended before its wait began.
                    self._early[job_id] = finish
                    if len(self._early) > _EARLY_MAX:
                        self._early.popitem(last=False)
                    continue
                for wait in waits:
                    if self._trust_finishes:
                        wait.finish = finish
                    wait.set()

    def _on_terminated(self, conn: object) -> None:
        if self._conn is conn:
            self._conn = None
            self._since = None
        self.wake_all()


class _Either:
    """``in`` either of two tables: the job ids a done notice is decoded for."""

    __slots__ = ("_first", "_second")

    def __init__(self, first: Container[str], second: Container[str]) -> None:
        self._first = first
        self._second = second

    def __contains__(self, item: object) -> bool:
        return item in self._first or item in self._second
