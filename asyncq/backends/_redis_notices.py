"""Completion notices for ``wait_finished``: one pub/sub connection, many waiters.

Scripts publish a notice on its queue's channel when a job that someone
waits for becomes terminal; the notice carries the finished job, so a waiter
returns it without reading the job again. A backend instance holds one
subscriber connection; every waiter registers under its job id, and the
channel of its queue is subscribed while at least one waiter needs it.

There is no background task: whichever waiter holds ``_pump_lock`` reads the
connection and dispatches to everybody (each waiter runs a pump task that
queues for the lock). When that waiter leaves, its pump is cancelled and the
next one takes over; redis-py's reader keeps partial reads, so that is safe.

Nothing is missed: a waiter reads the job (which marks it as waited for, so
that its end is published) only after Redis confirmed the subscription, and
every confirmation (also the ones redis-py sends again after it reconnected)
wakes the channel's waiters to read again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from .._records import TERMINAL_STATES, JobRecord

__all__ = ["Notices"]

#: A waiter re-reads its job this often even without a notice (safety net only).
SAFETY_INTERVAL = 30.0


class _Waiter:
    __slots__ = ("channel", "event", "notice")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.event = anyio.Event()
        #: the last notice for this waiter's job, until ``_watch`` takes it
        self.notice: bytes | None = None

    def arm(self) -> anyio.Event:
        self.event = anyio.Event()
        return self.event


class Notices:
    """Multiplexes terminal notices from one ``PubSub`` to every ``wait`` call."""

    def __init__(self, pubsub: PubSub, job_of: Callable[[bytes], str]) -> None:
        """``job_of`` tells which job a notice is about."""
        self._pubsub = pubsub
        self._job_of = job_of
        self._by_job: dict[str, set[_Waiter]] = {}
        self._refs: dict[str, int] = {}
        self._confirmed: set[str] = set()
        self._pump_lock = anyio.Lock()
        # Serialises (un)subscribing, so nobody pumps before the first SUBSCRIBE went out.
        self._subscribe_lock = anyio.Lock()
        self._closed = False

    @property
    def waiters(self) -> int:
        """How many ``wait`` calls are pending."""
        return sum(len(group) for group in self._by_job.values())

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
        waiter = _Waiter(channel)
        await self._subscribe(channel)
        self._by_job.setdefault(job_id, set()).add(waiter)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump)
                job = await self._watch(waiter, read, decode)
                tg.cancel_scope.cancel()
            return job
        finally:
            with anyio.CancelScope(shield=True):
                group = self._by_job.get(job_id)
                if group is not None:
                    group.discard(waiter)
                    if not group:
                        del self._by_job[job_id]
                await self._unsubscribe(channel)

    async def close(self) -> None:
        """Wake every waiter (each returns what it read last) and drop the connection."""
        self._closed = True
        for group in self._by_job.values():
            for waiter in group:
                waiter.event.set()
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
            if waiter.channel in self._confirmed:
                job = await read()
                if job is None or job.state in TERMINAL_STATES:
                    return job
            with anyio.move_on_after(SAFETY_INTERVAL):
                await event.wait()
        return job

    async def _subscribe(self, channel: str) -> None:
        async with self._subscribe_lock:
            if channel not in self._refs and not self._closed:
                await self._pubsub.subscribe(channel)
            self._refs[channel] = self._refs.get(channel, 0) + 1

    async def _unsubscribe(self, channel: str) -> None:
        async with self._subscribe_lock:
            self._refs[channel] -= 1
            if self._refs[channel]:
                return
            del self._refs[channel]
            self._confirmed.discard(channel)
            if self._closed:  # the connection is gone, and must not come back
                return
            # On failure it stays listed by redis-py and comes back after a
            # reconnect; its notices then find no waiter. Harmless.
            with contextlib.suppress(RedisError):
                await self._pubsub.unsubscribe(channel)

    async def _pump(self) -> None:
        async with self._pump_lock:
            backoff = 0.05
            while not self._closed:
                try:
                    message = await self._pubsub.get_message(timeout=None)
                except RedisError:
                    # redis-py reconnects and resubscribes on the next read;
                    # the new confirmations wake the waiters to read again.
                    self._confirmed.clear()
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.05
                if message is not None:
                    self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = _text(message["channel"])
        if kind == "message":
            data = message["data"]
            for waiter in self._by_job.get(self._job_of(data), ()):
                waiter.notice = data
                waiter.event.set()
        elif kind == "subscribe":
            self._confirmed.add(channel)
            for group in self._by_job.values():
                for waiter in group:
                    if waiter.channel == channel:
                        waiter.event.set()
        elif kind == "unsubscribe" and channel not in self._refs:
            self._confirmed.discard(channel)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
