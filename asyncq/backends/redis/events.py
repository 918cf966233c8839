"""The Redis backend's job event stream: one Redis stream per queue (``P ev``).

The scripts that change jobs write the events (``event`` in ``prelude.lua``),
one ``XADD`` each, in the queue's slot. An event's id is its stream entry's
id and its queue, ``<ms>-<seq>:<queue>``: events are ordered by the three, so
a reader of several queues merges their streams by them, as the server's
clock orders them (on a Redis Cluster, as the clocks of the nodes holding the
queues agree). Two streams may take the same entry id in one millisecond, and
an entry of a later script may take the millisecond a reader has just read:
so a read stops short of the server's current millisecond (after waiting for
the next one, if it found entries of this one), after which no stream can add
an entry that sorts before what was read. Readers block with ``XREAD BLOCK``;
``prune``
trims the streams (``prune_events.lua``) and notes each trim, so a reader
after an older id learns how many it lost (counted by trim: an upper bound
when its id falls inside one).
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from ..._events import EventKind, EventPage, JobEvent
from ..._records import ErrorInfo, LogLine
from .._retention import Retention
from .client import mapped
from .scripts import PruneEvents, quiet

if TYPE_CHECKING:
    from .scripts import Call
    from .transport import Transport

__all__ = ["EventStream"]

_ID = re.compile(r"(\d+)-(\d+):(.*)", re.DOTALL)
_ENTRY = re.compile(rb"(\d+)-(\d+)")
_PRUNE_BATCH = 1_000
#: Seconds one blocking read waits at most (then the queues are looked up again).
_BLOCK_MAX = 5.0

_error = msgspec.json.Decoder(ErrorInfo).decode
_line = msgspec.json.Decoder(LogLine).decode
_json = msgspec.json.decode


Position = tuple[int, int, str]


def _position(event_id: str) -> Position:
    """Where an event id sorts: its entry id's two numbers, then its queue."""
    found = _ID.fullmatch(event_id)
    if found is None:
        msg = (
            f"{event_id!r} is not an event id of this store:"
            " ids are <ms>-<seq>:<queue> (see read_events)"
        )
        raise ValueError(msg)
    return int(found[1]), int(found[2]), found[3]


def _entry(entry_id: bytes) -> tuple[int, int]:
    found = _ENTRY.fullmatch(entry_id)
    assert found is not None, entry_id
    return int(found[1]), int(found[2])


def _number(raw: bytes | None) -> float | None:
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:  # an attempt count no script wrote
        return None
    return value if math.isfinite(value) else None


def _text(raw: bytes | None) -> str | None:
    # A job's hash may hold bytes no script wrote (its name): shown, not fatal.
    return None if not raw else raw.decode(errors="replace")


def _decoded(raw: bytes | None, decode: Callable[[bytes], Any]) -> Any:
    if not raw:
        return None
    try:
        return decode(raw)
    except msgspec.DecodeError:
        return None


def _event(queue: str, entry_id: bytes, fields: dict[bytes, bytes]) -> JobEvent:
    """The event of one stream entry (the fields the scripts write, see ``scripts``)."""
    get = fields.get
    attempt = _number(get(b"a"))
    event = JobEvent(
        f"{entry_id.decode()}:{queue}",
        EventKind(get(b"k", b"").decode()),
        _text(get(b"j")) or "",
        _text(get(b"n")) or "",
        queue,
        float(get(b"at", b"0")),
        attempt=None if attempt is None else int(attempt),
        worker=_text(get(b"w")),
        error=_decoded(get(b"e"), _error),
        due=_number(get(b"due")),
        progress=_number(get(b"pr")),
        detail=_decoded(get(b"pd"), _json),
        duration=_number(get(b"dur")),
        by=_text(get(b"by")),
    )
    line = get(b"ln")
    if line:
        logged = _decoded(line, _line)
        if logged is None:
            return msgspec.structs.replace(event, message=_text(line))
        event = msgspec.structs.replace(
            event, at=logged.at, attempt=logged.attempt, level=logged.level, message=logged.message
        )
    return event


class EventStream:
    """``RedisBackend``'s ``HasEvents`` methods. What they use of it is declared below."""

    _client: Any
    _cluster: bool
    _retention: Retention
    _events: bool
    _transport: Transport
    _many: Callable[..., Awaitable[list[Any]]]

    if TYPE_CHECKING:

        @property
        def url(self) -> str: ...

        def _prefix(self, queue: str) -> str: ...

        async def _known_queues(self) -> list[str]: ...

        async def _queue_of(self, job_id: str) -> str | None: ...

    @property
    def events(self) -> bool:
        """Whether the scripts write job events (set before the backend is used)."""
        return self._events

    @events.setter
    def events(self, on: bool) -> None:
        self._events = on
        # Off, every script call goes to its variant that writes no event.
        self._many = self._transport.many if on else self._many_quiet

    async def _many_quiet(self, calls: Iterable[Call], before: Sequence[Any] = ()) -> list[Any]:
        return await self._transport.many((quiet(call) for call in calls), before)

    async def _streams(self, queues: Sequence[str] | None) -> list[str]:
        return list(dict.fromkeys(queues)) if queues is not None else await self._known_queues()

    async def _server_ms(self) -> int:
        seconds, micros = await self._client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    @mapped
    async def read_events(
        self, *, after: str | None, queues: Sequence[str] | None, limit: int
    ) -> EventPage:
        start = None if after is None else _position(after)
        names = await self._streams(queues)
        if not names or limit <= 0:
            return EventPage([], after)
        found, lost = await self._read(start, names, limit)
        if found and found[-1][0][0] >= (now := await self._server_ms()):
            # Entries of this millisecond: wait for the next one, then read again up to it.
            await anyio.sleep(0.002)
            found, lost = await self._read(start, names, limit)
            now = await self._server_ms()
        events = [_event(where[2], e, f) for where, e, f in found if where[0] < now]
        return EventPage(events, events[-1].id if events else after, lost)

    async def _read(
        self, start: Position | None, names: Sequence[str], limit: int
    ) -> tuple[list[tuple[Position, bytes, dict[bytes, bytes]]], int]:
        """The first ``limit`` entries after ``start`` of the queues ``names``, and the lost."""
        pipe = self._client.pipeline(transaction=False)
        for queue in names:
            if start is None:
                low = "-"
            else:  # after (ms, seq, queue): the same entry id counts in a later queue
                low = f"{start[0]}-{start[1]}" if queue > start[2] else f"({start[0]}-{start[1]}"
            pipe.xrange(self._prefix(queue) + "ev", min=low, max="+", count=limit)
            if start is not None:
                pipe.lrange(self._prefix(queue) + "evcut", 0, -1)
        replies = await pipe.execute()
        step = 1 if start is None else 2
        found: list[tuple[Position, bytes, dict[bytes, bytes]]] = []
        lost = 0
        for i, queue in enumerate(names):
            found += (((*_entry(e), queue), e, f) for e, f in replies[i * step])
            if start is not None:
                for cut in replies[i * step + 1]:
                    last, _, count = cut.partition(b" ")
                    if (*_entry(last), queue) > start:
                        lost += int(count)
        found.sort(key=lambda item: item[0])
        return found[:limit], lost

    @mapped
    async def wait_for_events(
        self, queues: Sequence[str] | None, after: str | None, timeout: float
    ) -> None:
        names = await self._streams(queues)
        wait = min(max(0.0, timeout), _BLOCK_MAX)
        if not names:
            await anyio.sleep(wait)
            return
        since = "0-0" if after is None else "{}-{}".format(*_position(after)[:2])
        block = max(1, int(wait * 1000))
        streams = [self._prefix(queue) + "ev" for queue in names]

        async def read(keys: list[str]) -> None:
            await self._client.xread(dict.fromkeys(keys, since), count=1, block=block)
            tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            # One read per stream on a cluster (their slots differ), one for all otherwise.
            groups = [[key] for key in streams] if self._cluster else [streams]
            for group in groups:
                tg.start_soon(read, group)

    @mapped
    async def job_events(self, job_id: str) -> list[JobEvent]:
        queue = await self._queue_of(job_id)
        names = [queue] if queue is not None else await self._known_queues()
        # A job's events come after its id was made: ids start with their millisecond.
        try:
            made = int(job_id[:12], 16) - 1_000
        except ValueError:
            made = 0
        low = f"{max(0, made)}-0"
        out: list[JobEvent] = []
        for name in names:
            key = self._prefix(name) + "ev"
            while True:
                page = await self._client.xrange(key, min=low, max="+", count=1_000)
                out += (_event(name, e, f) for e, f in page if f.get(b"j") == job_id.encode())
                if len(page) < 1_000:
                    break
                low = f"({page[-1][0].decode()}"
            low = f"{max(0, made)}-0"
        out.sort(key=lambda event: _position(event.id))
        return out

    @mapped
    async def latest_event_id(self, queues: Sequence[str] | None) -> str:
        # Before every entry of this millisecond on: a later one sorts after it.
        return f"{await self._server_ms()}-0:"

    async def _prune_events(self, queues: Sequence[str]) -> None:
        """Trim each queue's stream as the retention says, in bounded batches."""
        keep, most = self._retention.events, self._retention.max_events
        if keep is None and most is None:
            return
        going = list(queues)
        while going:
            calls = [PruneEvents.call(self._prefix(q), _PRUNE_BATCH, keep, most) for q in going]
            replies = await self._many(calls)
            going = [q for q, raw in zip(going, replies, strict=True) if PruneEvents.reply(raw)[1]]
