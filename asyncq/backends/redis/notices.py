"""Completion notices for ``wait_finished``: one pub/sub connection, many waiters.

Scripts publish a notice on its queue's channel when a job that someone
waits for becomes terminal; the notice carries the finished job, so a waiter
returns it without reading the job again. A backend instance holds one
subscriber connection; every waiter registers under its job id. A channel is
subscribed while a waiter needs it and ``LINGER`` seconds longer, so that a
process that waits again and again (request/response) subscribes once; the
next ``ready`` or ``wait`` after that unsubscribes it.

There is no background task: whichever waiter holds ``_pump_lock`` reads the
connection and dispatches to everybody (each waiter runs a pump task that
queues for the lock). When that waiter leaves, its pump is cancelled and the
next one takes over; redis-py's reader keeps partial reads, so that is safe.
While a channel lingers with nobody waiting, its notices (jobs that other
processes wait for) stay unread on the connection until the next waiter's
pump drops them; Redis' output buffer limit for pub/sub clients bounds them.

Nothing is missed:

- a waiter reads the job (which marks it as waited for, so that its end is
  published) only after Redis confirmed the subscription, and every
  confirmation (also the ones redis-py sends again after it reconnected)
  wakes the channel's waiters to read again;
- a job stored already marked while confirmation number N of its channel
  stood (``ready``, then ``expect``, then the enqueue) cannot end unheard
  while N stands, so its waiter skips that read; a notice that arrives
  before its waiter does is kept for it (``_early``).

A channel can also be listened to for as long as a caller likes (``listen``,
the cancel notices a worker hears): its messages go to the listener's
callback, and its pump holds the connection meanwhile, dispatching to the
waiters as well.

On a Redis Cluster (``elsewhere`` given) a node can go away for good: after
its connection fails, the subscriber does not wait for that address to answer
again but moves to a live node (the backend picks it) and subscribes every
channel in use there. A notice (a classic ``PUBLISH``) reaches every node of
the cluster, so any node will do; the new confirmations wake the waiters to
read their job again, which covers the notices published while nobody
listened.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from ..._records import TERMINAL_STATES, JobRecord

__all__ = ["Notices"]

#: A waiter re-reads its job this often even without a notice (safety net only).
SAFETY_INTERVAL = 30.0
#: Seconds a channel stays subscribed after its last waiter left.
LINGER = 10.0
#: Seconds ``ready`` waits for Redis to confirm a subscription; after that
#: the waiter reads its job as usual.
CONFIRM_WAIT = 2.0
#: Jobs expected, and notices kept for waiters yet to come, at most (the oldest go first).
EXPECT_MAX = 10_000
EARLY_MAX = 1_000


class _Waiter:
    __slots__ = ("channel", "event", "notice", "trusted")

    def __init__(self, channel: str, trusted: int | None) -> None:
        self.channel = channel
        self.event = anyio.Event()
        #: the last notice for this waiter's job, until ``_watch`` takes it
        self.notice: bytes | None = None
        #: the confirmation under which the job is known to be marked as waited for
        self.trusted = trusted

    def arm(self) -> anyio.Event:
        self.event = anyio.Event()
        return self.event


class Notices:
    """Multiplexes terminal notices from one ``PubSub`` to every ``wait`` call."""

    def __init__(
        self,
        pubsub: PubSub,
        job_of: Callable[[bytes], str],
        elsewhere: Callable[[], Awaitable[PubSub | None]] | None = None,
    ) -> None:
        """``job_of`` tells which job a notice is about; ``elsewhere`` (a cluster's)
        makes a ``PubSub`` on a live node once the one in use failed (``None``
        when no node answers, or once the backend is closed)."""
        self._pubsub = pubsub
        self._job_of = job_of
        self._elsewhere = elsewhere
        # The connection failed and the subscriber has to move (only with ``elsewhere``).
        self._lost = False
        self._by_job: dict[str, set[_Waiter]] = {}
        # Waiters (and ``ready`` calls) per subscribed channel; channels no one
        # needs, since when (see LINGER).
        self._refs: dict[str, int] = {}
        self._idle: dict[str, float] = {}
        # Confirmed channels, each with the number of its latest confirmation.
        self._confirmed: dict[str, int] = {}
        self._numbers = itertools.count(1)
        self._confirming: dict[str, anyio.Event] = {}
        self._expected: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._early: OrderedDict[str, bytes] = OrderedDict()
        self._pump_lock = anyio.Lock()
        # Serialises (un)subscribing, so nobody pumps before the first SUBSCRIBE went out.
        self._subscribe_lock = anyio.Lock()
        self._closed = False
        self._closing = anyio.Event()
        self._listeners: dict[str, set[Callable[[bytes], None]]] = {}

    @property
    def waiters(self) -> int:
        """How many ``wait`` calls are pending."""
        return sum(len(group) for group in self._by_job.values())

    async def ready(self, channel: str) -> int | None:
        """Subscribe ``channel`` unless it is; the number of its confirmed subscription.

        ``None`` when Redis has not confirmed it within ``CONFIRM_WAIT``
        seconds (or the connection is closed).
        """
        number = self.listening(channel)
        if number is not None and not self._stale():
            return number
        await self._subscribe(channel)
        try:
            if channel not in self._confirmed and not self._closed:
                event = self._confirming.setdefault(channel, anyio.Event())
                with anyio.move_on_after(CONFIRM_WAIT):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._pump)
                        await event.wait()
                        tg.cancel_scope.cancel()
            return self.listening(channel)
        finally:
            self._release(channel)

    def listening(self, channel: str) -> int | None:
        """The number of the confirmed subscription to ``channel``, if it stands."""
        return None if self._closed else self._confirmed.get(channel)

    def expect(self, job_id: str, channel: str, number: int) -> None:
        """``job_id`` is about to be stored marked as waited for, while ``number`` stands."""
        self._expected[job_id] = (channel, number)
        if len(self._expected) > EXPECT_MAX:
            self._expected.popitem(last=False)

    def unexpect(self, job_id: str) -> None:
        """``job_id`` was not stored after all (its key was held)."""
        self._expected.pop(job_id, None)

    async def wait(
        self,
        channel: str,
        job_id: str,
        read: Callable[[], Awaitable[JobRecord | None]],
        decode: Callable[[bytes], JobRecord | None],
    ) -> JobRecord | None:
        """The job once terminal: from ``read()`` (or ``None`` from it), or a notice.

        ``decode`` turns a notice into the job it carries (``None`` if it
        carries none: the waiter reads instead).
        """
        expected = self._expected.pop(job_id, None)
        waiter = _Waiter(channel, expected[1] if expected and expected[0] == channel else None)
        # Registered before anything awaits, so no notice for the job goes by unseen.
        self._by_job.setdefault(job_id, set()).add(waiter)
        waiter.notice = self._early.pop(job_id, None)
        subscribed = False
        try:
            await self._subscribe(channel)
            subscribed = True
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump)
                job = await self._watch(waiter, read, decode)
                tg.cancel_scope.cancel()
            return job
        finally:
            group = self._by_job.get(job_id)
            if group is not None:
                group.discard(waiter)
                if not group:
                    del self._by_job[job_id]
            if subscribed:
                self._release(channel)

    async def listen(
        self, channel: str, callback: Callable[[bytes], None], started: Callable[[], None]
    ) -> None:
        """Call ``callback(message)`` for every message on ``channel`` until cancelled or closed.

        ``started()`` is called once the subscription is confirmed (or
        ``CONFIRM_WAIT`` passed without it).
        """
        listeners = self._listeners.setdefault(channel, set())
        listeners.add(callback)
        try:
            await self.ready(channel)
            await self._subscribe(channel)
            try:
                started()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._pump)
                    await self._closing.wait()
                    tg.cancel_scope.cancel()
            finally:
                self._release(channel)
        finally:
            listeners.discard(callback)
            if not listeners:
                del self._listeners[channel]

    async def close(self) -> None:
        """Wake every waiter (each returns what it read last) and drop the connection."""
        self._closed = True
        self._closing.set()
        for group in self._by_job.values():
            for waiter in group:
                waiter.event.set()
        for event in self._confirming.values():
            event.set()
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(RedisError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    async def _watch(
        self,
        waiter: _Waiter,
        read: Callable[[], Awaitable[JobRecord | None]],
        decode: Callable[[bytes], JobRecord | None],
    ) -> JobRecord | None:
        job: JobRecord | None = None
        while not self._closed:
            # Armed before reading, so a notice that lands during the read is kept.
            event = waiter.arm()
            notice, waiter.notice = waiter.notice, None
            if notice is not None:
                finished = decode(notice)
                if finished is not None and finished.state in TERMINAL_STATES:
                    return finished
                # A notice that carries no finished job (a removed job's bare
                # id): what the store says decides, so read again.
                waiter.trusted = None
            number = self._confirmed.get(waiter.channel)
            # Read under every new confirmation, except the one the job was
            # stored under (or read under) already: its notice will come.
            if number is not None and number != waiter.trusted:
                job = await read()
                if job is None or job.state in TERMINAL_STATES:
                    return job
                waiter.trusted = number
            with anyio.move_on_after(SAFETY_INTERVAL) as timer:
                await event.wait()
            if timer.cancelled_caught:
                waiter.trusted = None
        # Closed before this waiter read anything: what the store says now.
        return job if job is not None else await read()

    def _stale(self) -> bool:
        """Whether a channel has lingered long enough to be unsubscribed."""
        if not self._idle:
            return False
        return anyio.current_time() - min(self._idle.values()) > LINGER

    async def _subscribe(self, channel: str) -> None:
        if (channel in self._refs or channel in self._idle) and not self._stale():
            # Subscribed already: no SUBSCRIBE to send, so no lock to take.
            self._idle.pop(channel, None)
            self._refs[channel] = self._refs.get(channel, 0) + 1
            return
        async with self._subscribe_lock:
            await self._drop_idle(keep=channel)
            if (
                channel not in self._refs
                and channel not in self._idle
                and not self._closed
                and not self._lost  # the move subscribes it
            ):
                try:
                    await self._pubsub.subscribe(channel)
                except RedisError:
                    if self._elsewhere is None:
                        raise
                    # Its node may be gone: the caller's pump moves, and
                    # subscribes this channel with the others.
                    self._lose()
            self._idle.pop(channel, None)
            self._refs[channel] = self._refs.get(channel, 0) + 1

    def _release(self, channel: str) -> None:
        """One user of ``channel`` left: it lingers once it has none."""
        self._refs[channel] -= 1
        if self._refs[channel]:
            return
        del self._refs[channel]
        if self._closed:  # the connection is gone, and must not come back
            self._confirmed.pop(channel, None)
            return
        self._idle[channel] = anyio.current_time()

    async def _drop_idle(self, keep: str) -> None:
        """Unsubscribe the channels nobody needed for ``LINGER`` seconds (under the lock)."""
        now = anyio.current_time()
        for channel, since in list(self._idle.items()):
            if channel != keep and now - since > LINGER:
                del self._idle[channel]
                self._confirmed.pop(channel, None)
                if self._closed or self._lost:
                    continue
                # On failure it stays listed by redis-py and comes back after a
                # reconnect; its notices then find no waiter. Harmless.
                with contextlib.suppress(RedisError):
                    await self._pubsub.unsubscribe(channel)

    async def _pump(self) -> None:
        async with self._pump_lock:
            backoff = 0.05
            while not self._closed:
                if not self._lost or await self._move():
                    try:
                        message = await self._pubsub.get_message(timeout=None)
                    except RedisError:
                        # redis-py reconnects and resubscribes on the next read
                        # (on a cluster the subscriber moves instead); the new
                        # confirmations wake the waiters to read again.
                        self._confirmed.clear()
                        self._lost = self._elsewhere is not None
                    else:
                        backoff = 0.05
                        if message is not None:
                            self._dispatch(message)
                        continue
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _lose(self) -> None:
        """The connection failed: no subscription stands until the subscriber moved."""
        self._confirmed.clear()
        self._lost = True

    async def _move(self) -> bool:
        """Subscribe the channels in use on a new connection (``elsewhere``'s); done?

        Only the pump moves, under ``_pump_lock``: nobody reads the old
        connection while it is closed.
        """
        assert self._elsewhere is not None
        async with self._subscribe_lock:
            if self._closed:
                return False
            with anyio.CancelScope(shield=True), contextlib.suppress(RedisError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            pubsub = await self._elsewhere()
            if pubsub is None:  # no node answers, or the backend closed meanwhile
                return False
            self._pubsub = pubsub
            channels = [*self._refs, *self._idle]
            if channels:
                try:
                    await pubsub.subscribe(*channels)
                except RedisError:
                    return False
            self._lost = False
            return True

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = _text(message["channel"])
        if kind == "message" and channel in self._listeners:
            for callback in list(self._listeners[channel]):
                callback(message["data"])
        elif kind == "message":
            data = message["data"]
            job_id = self._job_of(data)
            group = self._by_job.get(job_id)
            if group:
                for waiter in group:
                    waiter.notice = data
                    waiter.event.set()
            elif job_id in self._expected:
                self._early[job_id] = data
                if len(self._early) > EARLY_MAX:
                    self._early.popitem(last=False)
        elif kind == "subscribe":
            self._confirmed[channel] = next(self._numbers)
            event = self._confirming.pop(channel, None)
            if event is not None:
                event.set()
            for group in self._by_job.values():
                for waiter in group:
                    if waiter.channel == channel:
                        waiter.event.set()
        elif kind == "unsubscribe" and channel not in self._refs and channel not in self._idle:
            self._confirmed.pop(channel, None)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
